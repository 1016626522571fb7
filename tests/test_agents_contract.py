"""One contract test over every registered agent (STYLE.md rules 5 and 6)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlkit import registry
from rlkit.errors import RlkitError
from rlkit.types import EnvSpec, OfflineFeed, OnPolicyFeed, ReplayFeed, RoundFeed, Transition

SPECS = {
    "vector": EnvSpec("vector", (4,), "float32", 3, 50),
    "pixels": EnvSpec("pixels", (24, 24, 3), "uint8", 15, 50),
}


def _small_config(name):
    module = registry.agent_module(name)
    config = module.Config()
    fields = {f.name for f in dataclasses.fields(config)}
    if "version" in fields:  # GLOW / HyGLOW: the neural version runs on any spec
        overrides = dict(version="neural", batch_size=8, hidden_sizes=(16,))
    elif "rollout_length" in fields:
        # The Nature torso: PPO's default IMPALA torso takes minutes to compile on 2 cores and
        # adds nothing to the contract (tests/test_dqn.py builds both torsos).
        overrides = dict(num_envs=2, rollout_length=8, num_minibatches=2, total_steps=64,
                         cnn="nature")
    elif "buffer_size" in fields:
        overrides = dict(num_envs=2, batch_size=8, learning_starts=8, buffer_size=64)
    elif "context_length" in fields:  # DT: a one-block transformer over 3-step windows
        overrides = dict(batch_size=8, context_length=3, embed_dim=16, num_layers=1,
                         hidden_sizes=(16,))
    else:  # offline agents
        overrides = dict(batch_size=8)
    return module, dataclasses.replace(config, **overrides)


def _batch(agent, spec, key):
    """A batch shaped as the agent's feed delivers it, with the extras `act` returns."""
    feed = agent.feed
    lead = ((feed.rollout_length, feed.num_envs) if isinstance(feed, OnPolicyFeed)
            else (feed.batch_size,))
    windows = isinstance(feed, OfflineFeed) and feed.context_length > 0
    if windows:  # context windows of sequence agents (rlkit.data.sequences)
        lead = (feed.batch_size, feed.context_length)
    obs_key, action_key, reward_key = jax.random.split(key, 3)
    obs = jax.random.uniform(obs_key, (*lead, *spec.obs_shape), maxval=255).astype(spec.obs_dtype)
    if windows:  # left-padded windows: the first step of each is padding
        extras = {"return_to_go": jax.random.normal(reward_key, lead),
                  "timestep": jnp.broadcast_to(jnp.arange(lead[1], dtype=jnp.int32), lead),
                  "mask": jnp.ones(lead, bool).at[:, 0].set(False),
                  "max_return": jnp.full(lead[:1], 3.0)}
    else:  # act's extras (for windows, act would run op by op at new shapes for nothing)
        state = agent.init(jax.random.key(0))
        flat_obs = obs.reshape((-1, *spec.obs_shape))
        _, extras = agent.act(state, flat_obs, action_key, jnp.int32(0))
        extras = jax.tree.map(lambda x: x.reshape(lead), extras)
        if isinstance(feed, RoundFeed):  # the round driver marks episode starts
            extras = dict(extras, first=jnp.zeros(lead, bool).at[0].set(True))
    return Transition(
        obs=obs, action=jax.random.randint(action_key, lead, 0, spec.num_actions, jnp.int32),
        reward=jax.random.normal(reward_key, lead), terminated=jnp.zeros(lead, bool).at[..., 0]
        .set(True), truncated=jnp.zeros(lead, bool), next_obs=obs, extras=extras)


# HyGLOW is GLOW's module with other defaults: glow's pixel case covers its CNNs.
CASES = [(agent, spec) for agent in sorted(registry.agent_names()) for spec in sorted(SPECS)
         if (agent, spec) != ("hyglow", "pixels")]


def _contract_by_shapes(agent, spec):
    """The contract on shapes and dtypes only (`jax.eval_shape`: traced, never compiled)."""
    state = jax.eval_shape(agent.init, jax.random.key(1))
    obs = jax.ShapeDtypeStruct((5, *spec.obs_shape), spec.obs_dtype)
    action, extras = jax.eval_shape(agent.act, state, obs, jax.random.key(2), jnp.int32(0))
    assert action.shape == (5,) and action.dtype == jnp.int32
    for value in jax.tree.leaves(extras):
        assert value.shape[0] == 5
    probs = jax.eval_shape(agent.policy, state, obs)
    assert probs.shape == (5, spec.num_actions) and probs.dtype == jnp.float32
    batch = jax.eval_shape(lambda key: _batch(agent, spec, key), jax.random.key(3))
    new_state, metrics = jax.eval_shape(agent.update, state, batch, jax.random.key(10))
    assert jax.tree.map(lambda x: (x.shape, x.dtype), new_state) == jax.tree.map(
        lambda x: (x.shape, x.dtype), state)
    for name, value in metrics.items():
        assert value.shape == (), name


@pytest.mark.parametrize("agent_name, spec_name", CASES)
def test_agent_contract(agent_name, spec_name):
    spec = SPECS[spec_name]
    module, config = _small_config(agent_name)
    agent = module.make_agent(config, spec)
    assert isinstance(agent.feed, OnPolicyFeed | ReplayFeed | OfflineFeed | RoundFeed)
    if spec_name == "pixels":
        # Image observations by shape only: compiling each agent's CNN update took 15 s to 2
        # min per agent on 2 cores, the largest share of the default suite. The same update's
        # numbers are checked on vector observations below; the torsos run in the procgen
        # suite (PPO's IMPALA torso on procgen) and tests/test_dqn.py builds both.
        _contract_by_shapes(agent, spec)
        return

    state = agent.init(jax.random.key(1))
    # Typed state from init on: every leaf an array, no Python scalars.
    for leaf in jax.tree.leaves(state):
        assert isinstance(leaf, jax.Array), type(leaf)

    obs = jnp.zeros((5, *spec.obs_shape), spec.obs_dtype)
    action, extras = agent.act(state, obs, jax.random.key(2), jnp.int32(0))
    assert action.shape == (5,) and action.dtype == jnp.int32
    assert np.all((np.asarray(action) >= 0) & (np.asarray(action) < spec.num_actions))
    for value in jax.tree.leaves(extras):
        assert value.shape[0] == 5
    probs = np.asarray(agent.policy(state, obs))
    assert probs.shape == (5, spec.num_actions)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)

    # update traces once and keeps every leaf's shape and dtype.
    traces = []

    def counted_update(state, batch, key):
        traces.append(1)
        return agent.update(state, batch, key)

    update = jax.jit(counted_update)
    batch = _batch(agent, spec, jax.random.key(3))
    before = jax.tree.map(lambda x: (x.shape, x.dtype), state)
    for i in range(3):
        state, metrics = update(state, batch, jax.random.key(10 + i))
    assert len(traces) == 1
    assert jax.tree.map(lambda x: (x.shape, x.dtype), state) == before
    for name, value in metrics.items():
        assert value.shape == (), name
        assert np.isfinite(np.asarray(value)), name


# Every numeric field of every agent's config, refused when out of range or not finite.
BAD_NUMBERS = [float("nan"), float("inf"), float("-inf"), -1, -1.5]


def _numeric_fields(config_class):
    for field in dataclasses.fields(config_class):
        default = field.default
        if isinstance(default, bool) or not isinstance(default, int | float):
            continue
        yield field.name


CONFIG_CASES = [(name, field, bad) for name in sorted(registry.agent_names())
                for field in _numeric_fields(registry.agent_module(name).Config)
                for bad in BAD_NUMBERS]


@pytest.mark.parametrize("agent_name, field, bad", CONFIG_CASES)
def test_config_refuses_non_finite_and_negative_numbers_naming_the_field(agent_name, field,
                                                                         bad):
    config_class = registry.agent_module(agent_name).Config
    with pytest.raises(RlkitError, match=f"^{field}:"):
        config_class(**{field: bad})


@pytest.mark.parametrize("agent_name", sorted(registry.agent_names()))
@pytest.mark.parametrize("hidden_sizes", [(0,), (64, 0), (), (-3,), (1.5,)])
def test_config_refuses_empty_or_zero_width_layers(agent_name, hidden_sizes):
    config_class = registry.agent_module(agent_name).Config
    with pytest.raises(RlkitError, match="^hidden_sizes:"):
        config_class(hidden_sizes=hidden_sizes)


def test_every_agent_has_numeric_fields_under_the_sweep():
    """The sweep above covers the fields that matter (it cannot silently test nothing)."""
    fields = {name: set(_numeric_fields(registry.agent_module(name).Config))
              for name in registry.agent_names()}
    for name, names in fields.items():
        assert "learning_rate" in names, name
    assert {"gamma", "clip_eps", "ent_coef", "vf_coef", "num_envs"} <= fields["ppo"]
    assert {"tau", "priority_alpha", "priority_beta", "epsilon_decay_steps"} <= fields["dqn"]
    assert {"cql_alpha", "max_grad_norm"} <= fields["cql"]
    assert {"expectile", "temperature", "max_weight", "tau_target"} <= fields["iql"]
    assert {"bcq_threshold", "logit_penalty", "eval_epsilon", "tau"} <= fields["bcq"]
    assert {"beta", "kappa", "gamma_0", "weight_learning_rate"} <= fields["glow"]
    assert {"context_length", "target_return_scale", "return_scale", "weight_decay",
            "max_grad_norm", "embed_dim", "num_heads"} <= fields["dt"]


def test_drivers_pass_act_the_env_steps_taken_before_the_call():
    """The `step` of `Agent.act`: iteration * num_envs * T + t * num_envs (on-policy feed)."""
    import envs
    from envs.toy import ChainConfig
    from rlkit.loops.on_device import make_on_device_trainer
    from rlkit.types import Agent

    num_envs, length, iterations = 3, 4, 2
    env = envs.make_env("chain", ChainConfig(length=4, horizon=5))

    def act(state, obs, key, step):
        return jnp.zeros(obs.shape[0], jnp.int32), {"step": jnp.full(obs.shape[0], step)}

    def update(state, batch, key):
        return state, {"steps": batch.extras["step"]}  # [T, N]

    agent = Agent(init=lambda key: jnp.zeros(()), act=act, update=update,
                  policy=lambda state, obs: jnp.ones((obs.shape[0], 2)) / 2,
                  feed=OnPolicyFeed(num_envs=num_envs, rollout_length=length))
    trainer = make_on_device_trainer(agent, env, env.default_params, iterations)
    _, metrics = trainer.run(trainer.init(jax.random.split(jax.random.key(0), 1)))
    steps = np.asarray(metrics["steps"])[0]  # [iterations, T, N]
    expected = (np.arange(iterations)[:, None, None] * num_envs * length
                + np.arange(length)[None, :, None] * num_envs) * np.ones((1, 1, num_envs))
    np.testing.assert_array_equal(steps, expected)


def test_require_one_of_lists_the_choices_and_the_value():
    from rlkit.errors import require_one_of

    require_one_of("mse", "loss", ("huber", "mse"))  # accepted: no error
    with pytest.raises(RlkitError) as error:
        require_one_of("l1", "loss", ("huber", "mse"))
    assert str(error.value) == "loss: must be 'huber' or 'mse', got 'l1'."
    with pytest.raises(RlkitError) as error:
        require_one_of("x", "mode", ("a", "b", "c"))
    assert str(error.value) == "mode: must be 'a', 'b' or 'c', got 'x'."


@pytest.mark.parametrize("agent_name", ["bc", "bcq", "cql", "dqn", "iql"])
def test_optimiser_fields_are_checked_with_one_message_each(agent_name):
    """`check_optimiser_fields`: the shared fields of the gradient-trained agents' configs."""
    config_class = registry.agent_module(agent_name).Config
    hint = {"dqn": "try 2.5e-4.", "bcq": "try 5e-4."}.get(agent_name, "try 3e-4.")
    cases = [
        (dict(learning_rate=0.0), f"learning_rate: must be a finite number in (0, inf), got 0.0; "
                                  f"{hint}"),
        (dict(batch_size=0), "batch_size: must be an int >= 1, got 0."),
        (dict(total_steps=2.5), "total_steps: must be an int >= 1, got 2.5."),
        (dict(max_grad_norm=0.0), "max_grad_norm: must be a finite number in (0, inf), got 0.0; "
                                  "None disables clipping."),
        (dict(activation="gelu"), "activation: must be 'relu' or 'tanh', got 'gelu'."),
        (dict(cnn="resnet"),
         "cnn: must be 'nature', 'impala' or 'impala-small', got 'resnet'."),
    ]
    for overrides, message in cases:
        with pytest.raises(RlkitError) as error:
            config_class(**overrides)
        assert str(error.value) == message, overrides
    config_class(max_grad_norm=None)  # None disables clipping: accepted


def _dot_operand_shapes(jaxpr) -> list[tuple[int, ...]]:
    """Shapes of every `dot_general` operand in a jaxpr and the jaxprs nested in it (scan and
    cond bodies, pjit, custom derivatives)."""
    shapes = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            shapes += [tuple(v.aval.shape) for v in eqn.invars]
        for param in eqn.params.values():
            for sub in param if isinstance(param, tuple | list) else (param,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    shapes += _dot_operand_shapes(inner)
    return shapes


TD_AGENTS = [name for name in sorted(registry.agent_names())
             if name in {"dqn", "hyq", "cql", "iql", "bcq"}]


@pytest.mark.parametrize("agent_name", TD_AGENTS)
def test_td_updates_back_propagate_over_the_batch_rows_only(agent_name):
    """The value at s' is a constant of the TD target: no matmul of the update runs over obs and
    next_obs together (2B rows). One forward pass over both, sliced afterwards, made XLA
    back-propagate zeros through all 2B rows: DQN ran at 0.76x a reference DQN on the CPU."""
    assert set(TD_AGENTS) >= {"dqn", "cql", "iql", "bcq"}
    spec = SPECS["vector"]
    module, config = _small_config(agent_name)
    config = dataclasses.replace(config, batch_size=5)  # 2B = 10: no layer is 10 wide
    agent = module.make_agent(config, spec)
    state = agent.init(jax.random.key(1))
    batch = _batch(agent, spec, jax.random.key(3))
    assert batch.obs.shape[0] == 5
    shapes = _dot_operand_shapes(
        jax.make_jaxpr(agent.update)(state, batch, jax.random.key(4)).jaxpr)
    assert any(shape[:1] == (5,) for shape in shapes)  # the walk sees the batch's matmuls
    assert not [shape for shape in shapes if shape[:1] == (10,)], shapes
