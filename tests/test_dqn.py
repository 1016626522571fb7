"""DQN (agents/dqn.py): config checks, state typing, the double-DQN target by hand, the epsilon
schedule, target updates, and learning the exact optimal policy of a tiny MDP."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents import dqn
from rlkit.data import make_uniform_buffer
from rlkit.errors import RlkitError
from rlkit.loops.common import make_replay_sampling, replay_learn
from rlkit.nets import make_torso
from rlkit.types import PRIORITIES, Agent, EnvSpec, ReplayFeed, Transition

SPEC = EnvSpec("tiny", (2,), "float32", 2, 10)
SMALL = dict(buffer_size=64, batch_size=4, learning_starts=4, hidden_sizes=(2,))


def _leaves_meta(tree):
    return jax.tree.map(lambda x: (x.shape, x.dtype), tree)


def _batch(size: int = 4) -> Transition:
    eye = jnp.eye(2)
    index = jnp.arange(size) % 2
    return Transition(
        obs=eye[index],
        action=(jnp.arange(size) // 2 % 2).astype(jnp.int32),
        reward=jnp.linspace(-1.0, 1.0, size),
        terminated=jnp.arange(size) == 2,
        truncated=jnp.arange(size) == 1,
        next_obs=eye[1 - index],
    )


# ------------------------------------------------------------------------------------------
# Config
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, overrides",
    [
        ("learning_rate", dict(learning_rate=-1e-3)),
        ("gamma", dict(gamma=1.5)),
        ("num_envs", dict(num_envs=0)),
        ("batch_size", dict(batch_size=512, buffer_size=256, learning_starts=256)),
        ("learning_starts", dict(batch_size=128, learning_starts=64)),
        ("learning_starts", dict(buffer_size=500, learning_starts=1000)),
        ("train_every", dict(train_every=0)),
        ("target_update_every", dict(target_update_every=0)),
        ("tau", dict(tau=0.0)),
        ("epsilon_end", dict(epsilon_end=-0.1)),
        ("epsilon_decay_steps", dict(epsilon_decay_steps=-1)),
        ("max_grad_norm", dict(max_grad_norm=0.0)),
        ("loss", dict(loss="l1")),
        ("hidden_sizes", dict(hidden_sizes=())),
        ("cnn", dict(cnn="resnet")),
    ],
)
def test_config_rejects_impossible_values_naming_the_field(field, overrides):
    with pytest.raises(RlkitError, match=f"^{field}:"):
        dqn.Config(**overrides)


def test_default_config_is_valid_and_feed_mirrors_it():
    config = dqn.Config()
    agent = dqn.make_agent(config, SPEC)
    assert agent.feed == ReplayFeed(
        num_envs=config.num_envs,
        buffer_size=config.buffer_size,
        batch_size=config.batch_size,
        learning_starts=config.learning_starts,
        train_every=config.train_every,
        priority_beta_steps=config.total_steps,
    )
    assert not agent.feed.prioritised and not agent.feed.uses_dataset


# ------------------------------------------------------------------------------------------
# State, update, target network
# ------------------------------------------------------------------------------------------


def test_init_target_params_are_copies_not_aliases():
    state = dqn.make_agent(dqn.Config(**SMALL), SPEC).init(jax.random.key(0))
    params, targets = jax.tree.leaves(state.params), jax.tree.leaves(state.target_params)
    assert len(params) == len(targets) > 0
    for param, target in zip(params, targets, strict=True):
        np.testing.assert_array_equal(param, target)
        assert param is not target
        assert param.unsafe_buffer_pointer() != target.unsafe_buffer_pointer()
    assert state.update_step.dtype == jnp.int32 and state.update_step.shape == ()


def test_update_traces_once_keeps_state_types_and_updates_target_periodically():
    config = dqn.Config(**SMALL, num_envs=3, train_every=2, target_update_every=3)
    agent = dqn.make_agent(config, SPEC)
    state = agent.init(jax.random.key(0))
    meta = _leaves_meta(state)
    initial_target = jax.tree.map(np.asarray, state.target_params)
    traces = []

    def update(state, batch, key):
        traces.append(1)  # runs only while tracing
        return agent.update(state, batch, key)

    # Donation, as the drivers do: fails if target params alias params.
    update = jax.jit(update, donate_argnums=0)
    for step in range(1, 5):
        state, metrics = update(state, _batch(), jax.random.key(step))
        assert _leaves_meta(state) == meta
        params = jax.tree.map(np.asarray, state.params)
        target = jax.tree.map(np.asarray, state.target_params)
        if step < 3:  # tau = 1: the target is the initial copy until update 3, then a hard copy.
            jax.tree.map(np.testing.assert_array_equal, target, initial_target)
        elif step == 3:
            jax.tree.map(np.testing.assert_array_equal, target, params)
            # Equal values, separate buffers: the next donated call would fail otherwise.
            pairs = zip(
                jax.tree.leaves(state.params), jax.tree.leaves(state.target_params), strict=True
            )
            for param, copy in pairs:
                assert param.unsafe_buffer_pointer() != copy.unsafe_buffer_pointer()
        else:
            assert not all(jax.tree.leaves(jax.tree.map(np.array_equal, target, params)))
    assert len(traces) == 1
    assert int(state.update_step) == 4
    assert set(metrics) == {"loss", "td_loss", "q_mean", "target_mean", "td_abs_mean",
                            "grad_norm"}
    for value in metrics.values():
        assert value.shape == () and value.dtype == jnp.float32 and np.isfinite(value)


def test_polyak_target_update_mixes_with_tau():
    agent = dqn.make_agent(dqn.Config(**SMALL, tau=0.25, target_update_every=1), SPEC)
    state = agent.init(jax.random.key(0))
    old_target = jax.tree.map(np.asarray, state.target_params)
    state, _ = jax.jit(agent.update)(state, _batch(), jax.random.key(1))
    expected = jax.tree.map(lambda p, t: 0.25 * np.asarray(p) + 0.75 * t, state.params, old_target)
    jax.tree.map(
        lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6), state.target_params, expected
    )


def _tabular_params(table: np.ndarray) -> dict:
    """Params of QNetwork(MLP((2,), relu)) with Q(onehot(s), .) = table[s]: identity torso."""
    return {
        "params": {
            "torso": {"Dense_0": {"kernel": jnp.eye(2), "bias": jnp.zeros(2)}},
            "Dense_0": {"kernel": jnp.asarray(table, jnp.float32), "bias": jnp.zeros(2)},
        }
    }


def _hand_batch(weight=None) -> Transition:
    """The batch of the by-hand cases: (s, a, r, s', end) rows of the comment below."""
    eye = jnp.eye(2)
    extras = {} if weight is None else {"weight": jnp.asarray(weight, jnp.float32)}
    return Transition(
        obs=eye[jnp.array([0, 1, 1, 0])],
        action=jnp.array([1, 0, 1, 0], jnp.int32),
        reward=jnp.array([1.0, 0.0, 2.0, -1.0]),
        terminated=jnp.array([False, False, True, False]),
        truncated=jnp.array([False, True, False, False]),
        next_obs=eye[jnp.array([1, 0, 0, 1])],
        extras=extras,
    )


@pytest.mark.parametrize(
    "loss, double, expected",
    [
        # By hand: gamma .5, online Q = [[1, 2], [3, .5]], target Q = [[.5, 4], [2, 6]].
        # (s, a, r, s', end): (0, 1, 1, 1, -)     y = 1 + .5 * Qt[1, argmax Qo[1] = 0] = 2.0
        #                     (1, 0, 0, 0, trunc) y = 0 + .5 * Qt[0, argmax Qo[0] = 1] = 2.0
        #                     (1, 1, 2, 0, term)  y = 2                                   = 2.0
        #                     (0, 0, -1, 1, -)    y = -1 + .5 * Qt[1, 0]                  = 0.0
        # Q(s, a) = 2, 3, .5, 1, so TD errors 0, 1, -1.5, 1.
        (
            "mse",
            True,
            dict(
                loss=0.5 * (0 + 1 + 2.25 + 1) / 4, target_mean=1.5, q_mean=1.625, td_abs_mean=0.875
            ),
        ),
        ("huber", True, dict(loss=(0 + 0.5 + 1.0 + 0.5) / 4, target_mean=1.5)),
        # Nature target max_a Qt(s', a): y = 1 + 3, 0 + 2, 2, -1 + 3.
        ("mse", False, dict(target_mean=2.5, td_abs_mean=(2 + 1 + 1.5 + 1) / 4)),
    ],
)
def test_double_dqn_target_and_loss_by_hand(loss, double, expected):
    config = dqn.Config(**SMALL, gamma=0.5, loss=loss, double=double)
    agent = dqn.make_agent(config, SPEC)
    state = agent.init(jax.random.key(0))
    assert jax.tree.structure(state.params) == jax.tree.structure(_tabular_params(np.eye(2)))
    state = state.replace(
        params=_tabular_params(np.array([[1.0, 2.0], [3.0, 0.5]])),
        target_params=_tabular_params(np.array([[0.5, 4.0], [2.0, 6.0]])),
    )
    _, metrics = jax.jit(agent.update)(state, _hand_batch(), jax.random.key(1))
    for name, value in expected.items():
        np.testing.assert_allclose(metrics[name], value, rtol=1e-6, err_msg=name)


# ------------------------------------------------------------------------------------------
# Prioritised replay
# ------------------------------------------------------------------------------------------


def test_prioritised_update_weights_the_loss_and_returns_abs_td_errors():
    config = dqn.Config(**SMALL, gamma=0.5, prioritised=True)
    agent = dqn.make_agent(config, SPEC)
    assert agent.feed.prioritised and agent.feed.priority_beta_steps == config.total_steps
    state = agent.init(jax.random.key(0)).replace(
        params=_tabular_params(np.array([[1.0, 2.0], [3.0, 0.5]])),
        target_params=_tabular_params(np.array([[0.5, 4.0], [2.0, 6.0]])),
    )
    # The by-hand batch above: TD errors 0, 1, -1.5, 1 (test_double_dqn_target_and_loss_by_hand).
    weight = np.array([1.0, 0.5, 0.25, 1.0])
    _, metrics = jax.jit(agent.update)(state, _hand_batch(weight), jax.random.key(1))
    np.testing.assert_allclose(metrics[PRIORITIES], [0.0, 1.0, 1.5, 1.0], rtol=1e-6)
    loss = 0.5 * (1.0 * 0 + 0.5 * 1 + 0.25 * 2.25 + 1.0 * 1) / 4
    np.testing.assert_allclose(metrics["loss"], loss, rtol=1e-6)
    np.testing.assert_allclose(metrics["td_loss"], loss, rtol=1e-6)


def test_replay_learn_passes_hand_computed_importance_weights_and_stores_priorities():
    alpha, beta0, epsilon = 0.5, 0.5, 1e-6
    feed = ReplayFeed(num_envs=4, buffer_size=8, batch_size=64, learning_starts=8,
                      prioritised=True, priority_alpha=alpha, priority_beta=beta0,
                      priority_epsilon=epsilon, priority_beta_steps=100)

    def update(state, batch, key):
        # Weights as metrics to read them back; new priority of a row = its id + 1.
        return state + 1, {"weights": batch.extras["weight"], "ids": batch.reward,
                           PRIORITIES: batch.reward + 1.0}

    agent = Agent(init=None, act=None, update=update, policy=None, feed=feed)
    buffer, sampler = make_replay_sampling(feed)
    assert sampler is None

    def items(ids):
        ids = jnp.asarray(ids, jnp.float32)
        return Transition(obs=ids[:, None], action=jnp.zeros(4, jnp.int32), reward=ids,
                          terminated=jnp.zeros(4, bool), truncated=jnp.zeros(4, bool),
                          next_obs=ids[:, None])

    state = buffer.init(jax.tree.map(lambda x: x[0], items(np.zeros(4))))
    state = buffer.add(state, items([0, 1, 2, 3]))
    state = buffer.set_priorities(state, jnp.arange(4), jnp.array([1.0, 2.0, 3.0, 5.0]))
    # Iteration 10 of 4 envs: 40 env steps of 100, beta = 0.5 + 0.5 * 0.4 = 0.7. The four new
    # items (ids 4..7) get the largest priority so far, 5 + epsilon.
    learn = jax.jit(lambda s, b, t: replay_learn(agent, buffer, s, b, t, jnp.int32(10),
                                                 jax.random.key(3)))
    agent_state, new_state, metrics = learn(jnp.int32(0), state, items([4, 5, 6, 7]))
    assert int(agent_state) == 1 and PRIORITIES not in metrics
    np.testing.assert_allclose(metrics["priority_beta"], 0.7, rtol=1e-6)
    raw = np.array([1.0, 2.0, 3.0, 5.0, 5.0, 5.0, 5.0, 5.0]) + epsilon
    probability = raw**alpha / (raw**alpha).sum()
    weights = (8 * probability) ** -0.7
    ids = np.asarray(metrics["ids"]).astype(int)
    assert len(set(ids.tolist())) == 8  # 64 draws reach every slot
    np.testing.assert_allclose(metrics["weights"], weights[ids] / weights.max(), rtol=1e-5)
    # Slot i holds id i; each sampled slot now has priority (id + 1 + epsilon)^alpha.
    np.testing.assert_allclose(np.asarray(new_state.priorities),
                               (np.arange(8) + 1.0 + epsilon) ** alpha, rtol=1e-6)
    np.testing.assert_allclose(float(new_state.max_priority), 8.0 + epsilon, rtol=1e-6)
    # Before learning_starts (4 of 8 stored) the update is skipped and no priority is written:
    # the new items keep the initial max priority 1.
    empty = buffer.init(jax.tree.map(lambda x: x[0], items(np.zeros(4))))
    skipped_state, unchanged, metrics = learn(jnp.int32(0), empty, items([4, 5, 6, 7]))
    assert int(skipped_state) == 0 and np.all(np.isnan(np.asarray(metrics["weights"])))
    np.testing.assert_allclose(np.asarray(unchanged.priorities), [1, 1, 1, 1, 0, 0, 0, 0])


def test_prioritised_does_not_combine_with_a_dataset():
    with pytest.raises(RlkitError, match="^prioritised:"):
        dqn.HybridConfig(prioritised=True)


# ------------------------------------------------------------------------------------------
# Acting
# ------------------------------------------------------------------------------------------


def test_epsilon_schedule_is_constant_in_warm_up_then_linear_over_env_steps():
    config = dqn.Config(epsilon_start=0.8, epsilon_end=0.1, epsilon_decay_steps=1000,
                        learning_starts=200)
    epsilon = dqn.epsilon_schedule(config)
    # Warm-up (step < learning_starts) keeps epsilon_start; then 0.7 / 1000 per env step.
    for steps, value in [(0, 0.8), (199, 0.8), (200, 0.8), (700, 0.45), (1200, 0.1),
                         (2**31 - 1, 0.1)]:
        result = epsilon(jnp.asarray(steps, jnp.int32))
        assert result.dtype == jnp.float32
        np.testing.assert_allclose(result, value, rtol=1e-6)
    constant = dqn.epsilon_schedule(dqn.Config(epsilon_end=0.2, epsilon_decay_steps=0))
    np.testing.assert_allclose(constant(jnp.asarray(0, jnp.int32)), 0.2, rtol=1e-6)


def test_act_explores_at_epsilon_start_and_is_greedy_at_epsilon_end():
    config = dqn.Config(**SMALL, epsilon_start=1.0, epsilon_end=0.0, epsilon_decay_steps=100)
    agent = dqn.make_agent(config, SPEC)
    state = agent.init(jax.random.key(0))
    obs = jnp.tile(jnp.eye(2), (1000, 1))  # [2000, 2]
    probs = agent.policy(state, obs)
    assert probs.shape == (2000, 2) and probs.dtype == jnp.float32
    np.testing.assert_array_equal(probs.sum(-1), 1.0)
    greedy = np.asarray(probs.argmax(-1))

    # Step 4 is still warm-up (learning_starts = 4): epsilon_start.
    action, extras = agent.act(state, obs, jax.random.key(1), jnp.int32(4))
    assert action.shape == (2000,) and action.dtype == jnp.int32 and extras == {}
    # epsilon = 1: uniform over both actions, whatever the greedy one (binomial sd ~ 0.011).
    assert abs(float(np.mean(np.asarray(action) == greedy)) - 0.5) < 0.05
    # Halfway through the decay, epsilon = 0.5: greedy with probability 0.75.
    action = agent.act(state, obs, jax.random.key(3), jnp.int32(4 + 50))[0]
    assert abs(float(np.mean(np.asarray(action) == greedy)) - 0.75) < 0.05
    # After the decay (env steps 4 + 100), epsilon_end = 0: greedy, from the same state.
    np.testing.assert_array_equal(agent.act(state, obs, jax.random.key(2), jnp.int32(104))[0],
                                  greedy)


def test_image_observations_use_the_cnn_torsos():
    spec = EnvSpec("image", (10, 10, 3), "uint8", 4, 10)
    obs = jax.ShapeDtypeStruct((2, 10, 10, 3), jnp.uint8)
    key = jax.random.key(0)
    for cnn, layer in (("nature", "NatureCNN"), ("impala", "ImpalaCNN"),
                       ("impala-small", "ImpalaCNN")):
        agent = dqn.make_agent(dqn.Config(**SMALL, cnn=cnn), spec)
        # Shapes only: running conv stacks op by op on a busy CPU costs tens of seconds.
        state = jax.eval_shape(agent.init, key)
        action, _ = jax.eval_shape(agent.act, state, obs, key, jnp.int32(0))
        assert action.shape == (2,) and action.dtype == jnp.int32
        assert jax.eval_shape(agent.policy, state, obs).shape == (2, 4)
        paths = [
            jax.tree_util.keystr(path)
            for path, _ in jax.tree_util.tree_leaves_with_path(state.params)
        ]
        assert any("Conv" in path for path in paths), paths
        assert layer == type(make_torso(spec, cnn, (2,), "relu")).__name__
    assert make_torso(spec, "impala-small", (2,), "relu").channels == (8, 16, 16)
    assert make_torso(spec, "impala", (2,), "relu").channels == (16, 32, 32)


# ------------------------------------------------------------------------------------------
# Learning on a tiny deterministic MDP with an exact answer
# ------------------------------------------------------------------------------------------

# A 5-state chain: left (0) / right (1). Right from state 3 enters the terminal state 4 with
# reward 1; left in state 0 stays there with reward 0.1. With gamma 0.9 the optimal policy is
# mixed (left, left, right, right): looping at 0 is worth 0.1 / (1 - 0.9) = 1 and beats walking
# right from states 0 and 1. Episodes are truncated after 20 steps, so an agent that does not
# bootstrap truncated steps undervalues the loop and walks right from state 0.
NUM_STATES, GAMMA, HORIZON = 5, 0.9, 20
NEXT = np.array([[max(s - 1, 0), min(s + 1, NUM_STATES - 1)] for s in range(NUM_STATES)])
REWARD = np.zeros((NUM_STATES, 2), np.float32)
REWARD[3, 1], REWARD[0, 0] = 1.0, 0.1
TERMINAL = np.arange(NUM_STATES) == NUM_STATES - 1


def _optimal_q() -> np.ndarray:
    q = np.zeros((NUM_STATES, 2))
    for _ in range(300):
        q = REWARD + GAMMA * (~TERMINAL[NEXT]) * q.max(1)[NEXT]
    return q


def _train(agent, buffer, num_iterations: int, num_seeds: int, key):
    """Collect with `act`, add to the buffer, update every iteration once it holds enough."""
    num_envs, feed = agent.feed.num_envs, agent.feed
    next_table, reward_table, terminal = map(jnp.asarray, (NEXT, REWARD, TERMINAL))
    onehot = lambda s: jax.nn.one_hot(s, NUM_STATES)

    def reset(key, done, state):
        # Uniform non-terminal starts, so every state keeps being visited. (floor of a uniform:
        # randint would inline three threefry hashes, and compilation is most of this test.)
        start = jnp.floor(jax.random.uniform(key, state.shape) * (NUM_STATES - 1))
        return jnp.where(done, start.astype(jnp.int32), state)

    def iteration(carry, inputs):
        agent_state, buffer_state, env_state, env_time = carry
        (act_key, reset_key, sample_key, update_key), index = inputs
        # The env steps taken before this iteration, as the drivers count them.
        action, extras = agent.act(agent_state, onehot(env_state), act_key, index * num_envs)
        next_state = next_table[env_state, action]
        terminated = terminal[next_state]
        truncated = (env_time + 1 >= HORIZON) & ~terminated
        transition = Transition(
            onehot(env_state),
            action,
            reward_table[env_state, action],
            terminated,
            truncated,
            onehot(next_state),
            extras,
        )
        buffer_state = buffer.add(buffer_state, transition)
        done = terminated | truncated
        env_state = reset(reset_key, done, next_state)
        env_time = jnp.where(done, 0, env_time + 1)

        def learn(agent_state):
            batch = buffer.sample(buffer_state, sample_key, feed.batch_size)
            return agent.update(agent_state, batch, update_key)[0]

        agent_state = jax.lax.cond(
            buffer.can_sample(buffer_state, feed.learning_starts), learn, lambda s: s, agent_state
        )
        return (agent_state, buffer_state, env_state, env_time), None

    def run(agent_state, key):
        reset_key, loop_key = jax.random.split(key)
        example = Transition(
            jnp.zeros(NUM_STATES),
            jnp.zeros((), jnp.int32),
            jnp.zeros(()),
            jnp.zeros((), bool),
            jnp.zeros((), bool),
            jnp.zeros(NUM_STATES),
            {},
        )
        env_state = reset(reset_key, jnp.ones(num_envs, bool), jnp.zeros(num_envs, jnp.int32))
        carry = (agent_state, buffer.init(example), env_state, jnp.zeros(num_envs, jnp.int32))
        # Keys for all iterations up front: one threefry in the program instead of one per step.
        keys = jax.random.split(loop_key, (num_iterations, 4))
        carry, _ = jax.lax.scan(iteration, carry, (keys, jnp.arange(num_iterations)))
        return carry[0]

    # Init outside the vmap: batched orthogonal initialisers (QR) triple the compile time.
    init_key, run_key = jax.random.split(key)
    init = jax.jit(agent.init)
    agent_states = [init(init_key) for init_key in jax.random.split(init_key, num_seeds)]
    agent_states = jax.tree.map(lambda *leaves: jnp.stack(leaves), *agent_states)
    return jax.jit(jax.vmap(run))(agent_states, jax.random.split(run_key, num_seeds))


def test_dqn_learns_the_optimal_policy_of_a_tiny_chain():
    config = dqn.Config(
        learning_rate=5e-3,
        gamma=GAMMA,
        num_envs=8,
        buffer_size=2_000,
        batch_size=64,
        learning_starts=256,
        target_update_every=20,
        epsilon_end=0.1,
        epsilon_decay_steps=2_000,
        hidden_sizes=(32,),
    )
    spec = EnvSpec("chain5", (NUM_STATES,), "float32", 2, HORIZON)
    agent = dqn.make_agent(config, spec)
    num_seeds = 3
    states = _train(
        agent, make_uniform_buffer(config.buffer_size), 500, num_seeds, jax.random.key(0)
    )

    q_star = _optimal_q()
    optimal = q_star[:-1].argmax(1)
    np.testing.assert_array_equal(optimal, [0, 0, 1, 1])  # the mixed policy described above
    obs = jnp.eye(NUM_STATES)[:-1]
    network = dqn.QNetwork(make_torso(spec, config.cnn, config.hidden_sizes, config.activation), 2)
    # One compiled evaluation for all seeds (eager per-seed calls compile op by op).
    probs, q = jax.jit(jax.vmap(lambda s: (agent.policy(s, obs), network.apply(s.params, obs))))(
        states
    )
    # The buffer holds learning_starts = 256 transitions after iteration 32, so 469 updates ran.
    np.testing.assert_array_equal(states.update_step, 469)
    for seed in range(num_seeds):
        greedy = np.asarray(probs[seed]).argmax(-1)
        np.testing.assert_array_equal(greedy, optimal, err_msg=f"seed {seed}, Q =\n{q[seed]}")
        # The values themselves, not just their order, approach Q* (a wrong gamma or a
        # bootstrapped terminal step would shift them).
        np.testing.assert_allclose(q[seed], q_star[:-1], atol=0.1, err_msg=f"seed {seed}")
