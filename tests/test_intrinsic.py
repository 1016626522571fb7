"""Intrinsic-reward transforms (rlkit.intrinsic): the RDD spec's tests (3.6) and the agents'
intrinsic options."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rlkit import intrinsic
from rlkit.errors import RlkitError
from rlkit.ops import generalized_advantage_estimation


def exact_mean_transform(kind: str, num_states: int, k: int, sigma: float):
    """A transform whose predictor is a zero-initialised linear map of one-hot states trained
    by SGD with step k / (2 t) on its t-th single-row update: since the loss is
    (1/k) ||f - c||^2, the gradient is (2/k)(f - c), so W[s] becomes the running mean of the
    targets (the tabular least-squares fit after t draws)."""
    config = intrinsic.Config(kind=kind, output_dim=k, sigma=sigma, update_proportion=1.0)
    predictor = nn.Dense(k, use_bias=False, kernel_init=nn.initializers.zeros)
    optimizer = optax.sgd(lambda count: k / (2.0 * (count + 1)))
    return intrinsic.make_transform(config, (num_states,), normalise_obs=False,
                                    predictor=predictor, optimizer=optimizer)


def mean_bonus_after_visits(kind: str, visits: tuple[int, ...], sigma: float = 1.5, k: int = 8,
                            seeds: int = 2000) -> np.ndarray:
    """The mean bonus over `seeds` of one state after each count in `visits` ([len(visits)])."""
    transform = exact_mean_transform(kind, num_states=3, k=k, sigma=sigma)
    obs = jax.nn.one_hot(jnp.array([1]), 3)  # [1, S], state 1 only

    def one_seed(key):
        init_key, key = jax.random.split(key)
        state = transform.init(init_key, 1)

        def step(state, update_key):
            state = transform.update(state, obs, update_key)[0]
            return state, transform.bonus(state, obs, update_key)[0]

        _, bonuses = jax.lax.scan(step, state, jax.random.split(key, max(visits)))
        return bonuses[jnp.array(visits) - 1]

    return np.asarray(jax.vmap(one_seed)(jax.random.split(jax.random.key(0), seeds)).mean(0))


def test_rdd_tabular_bonus_is_sigma_squared_over_visits():
    """Spec 3.6.1 / the paper's Lemma 4.1: after n exact least-squares fits to fresh draws,
    E (1/k) ||f - mu||^2 = sigma^2 / n (2000 seeds, within 5%) for n in {1, 4, 16}; plain RND
    fits its fixed target exactly after one update, so its bonus is 0 and it fails."""
    sigma, visits = 1.5, (1, 4, 16)
    rdd = mean_bonus_after_visits("rdd", visits, sigma=sigma)
    np.testing.assert_allclose(rdd, sigma**2 / np.array(visits), rtol=0.05)
    rnd = mean_bonus_after_visits("rnd", visits, sigma=sigma, seeds=16)
    assert (rnd < 1e-6).all()


@pytest.mark.parametrize("kind", ["rdd", "rnd"])
def test_unseen_state_bonus_exceeds_every_trained_state(kind):
    """Spec 3.6.2: after 500 Adam steps on states 0..9 (with observation normalisation), state
    10's bonus is above the largest bonus of the trained states."""
    config = intrinsic.Config(kind=kind, update_proportion=1.0, learning_rate=1e-3)
    transform = intrinsic.make_transform(config, (11,))
    seen = jax.nn.one_hot(jnp.arange(10), 11)  # [10, 11]
    state = transform.init(jax.random.key(0), 1)
    state = transform.observe(state, seen)

    def step(state, key):
        return transform.update(state, seen, key)[0], None

    state, _ = jax.lax.scan(step, state, jax.random.split(jax.random.key(1), 500))
    bonus = transform.bonus(state, jax.nn.one_hot(jnp.arange(11), 11), jax.random.key(2))
    assert bonus[10] > bonus[:10].max(), (kind, bonus)


def test_target_parameters_are_bit_identical_after_an_update():
    """Spec 3.6.3: the frozen networks (mean and, when on, sigma) get no update; the predictor
    does."""
    config = intrinsic.Config(sigma_network=True, update_proportion=1.0)
    transform = intrinsic.make_transform(config, (5,))
    state = transform.init(jax.random.key(0), 2)
    obs = jax.random.normal(jax.random.key(1), (32, 5))
    state = transform.observe(state, obs)
    new_state, metrics = transform.update(state, obs, jax.random.key(2))
    before, after = jax.tree.leaves(state.target_params), jax.tree.leaves(new_state.target_params)
    assert len(before) == 2 * 6  # mean and sigma nets: 3 dense layers each
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    changed = jax.tree.leaves(jax.tree.map(lambda a, b: bool((a != b).any()),
                                           state.predictor_params, new_state.predictor_params))
    assert all(changed)
    assert float(metrics["predictor_loss"]) > 0


def test_intrinsic_gae_ignores_episode_ends():
    """Spec 3.6.3: hand-computed non-episodic GAE (gamma 0.5, lambda 1), which the episodic
    GAE with a termination at t = 1 does not give."""
    reward = jnp.array([[1.0], [0.0], [2.0]])
    value = jnp.zeros((3, 1))
    last_value = jnp.array([4.0])
    advantage, target = intrinsic.non_episodic_gae(reward, value, last_value, 0.5, 1.0)
    # A_2 = 2 + 0.5 * 4 = 4; A_1 = 0 + 0.5 * A_2 = 2; A_0 = 1 + 0.5 * A_1 = 2.
    np.testing.assert_allclose(advantage[:, 0], [2.0, 2.0, 4.0])
    np.testing.assert_allclose(target, advantage)
    terminated = jnp.array([[False], [True], [False]])
    episodic, _ = generalized_advantage_estimation(
        reward, value, jnp.concatenate([value[1:], last_value[None]]), terminated,
        jnp.zeros_like(terminated), 0.5, 1.0)
    np.testing.assert_allclose(episodic[:, 0], [1.0, 0.0, 4.0])


def test_reward_normaliser_gives_unit_variance_discounted_return():
    """Spec 3.6.4: on a stationary stream (i.i.d. N(0, 2^2) rewards, 32 streams), dividing by the
    running std of the discounted return (gamma 0.99) gives a discounted return of unit
    variance; the divisor tends to 2 / sqrt(1 - 0.99^2)."""
    gamma, streams = 0.99, 32
    config = intrinsic.Config(return_gamma=gamma)
    transform = intrinsic.make_transform(config, (1,))
    state = transform.init(jax.random.key(0), streams)

    def chunk(state, key):
        raw = 2.0 * jax.random.normal(key, (100, streams))
        state, normalised = transform.normalise_reward(state, raw)
        return state, (raw, normalised)

    state, (raw, normalised) = jax.lax.scan(chunk, state,
                                            jax.random.split(jax.random.key(1), 200))
    divisor = float(jnp.sqrt(state.return_moments.var))
    assert divisor == pytest.approx(2.0 / np.sqrt(1 - gamma**2), rel=0.05)
    # The return of the normalised stream, with the final divisor, after a burn-in of 1000 steps.
    raw = np.asarray(raw).reshape(-1, streams)
    returns = np.zeros(streams)
    values = []
    for t, r in enumerate(raw / divisor):
        returns = gamma * returns + r
        if t >= 1000:
            values.append(returns.copy())
    assert np.var(values) == pytest.approx(1.0, rel=0.05)
    # Late chunks are divided by (almost) that same divisor.
    np.testing.assert_allclose(np.asarray(normalised[-1]) * divisor, raw[-100:], rtol=1e-3)


def test_running_moments_match_numpy():
    x = jax.random.normal(jax.random.key(0), (30, 3)) * 3 + 1
    moments = intrinsic.init_moments((3,))
    for part in (x[:7], x[7:20], x[20:]):
        moments = intrinsic.update_moments(moments, part)
    np.testing.assert_allclose(moments.mean, np.mean(x, 0), rtol=1e-5)
    np.testing.assert_allclose(moments.var, np.var(x, 0), rtol=1e-5)
    assert float(moments.count) == 30


def test_mean_scale_sets_an_unseen_states_bonus():
    """The "mean" reading: mu(s) has RMS mean_scale, so with a zero predictor the bonus is
    mean_scale^2 exactly; the "sample" readout adds sigma^2 in expectation."""
    for scale in (0.5, 2.0):
        config = intrinsic.Config(mean_scale=scale, output_dim=16)
        zero = nn.Dense(16, kernel_init=nn.initializers.zeros)
        transform = intrinsic.make_transform(config, (4,), normalise_obs=False, predictor=zero)
        state = transform.init(jax.random.key(0), 1)
        bonus = transform.bonus(state, jnp.eye(4), jax.random.key(1))
        np.testing.assert_allclose(bonus, scale**2, rtol=1e-5)
    config = intrinsic.Config(readout="sample", sigma=2.0, output_dim=16)
    transform = intrinsic.make_transform(config, (4,), normalise_obs=False, predictor=zero)
    state = transform.init(jax.random.key(0), 1)
    obs = jnp.tile(jnp.eye(4), (500, 1))
    bonus = transform.bonus(state, obs, jax.random.key(1))
    assert float(bonus.mean()) == pytest.approx(1.0 + 4.0, rel=0.05)


def test_visit_counts_count_trained_rows_of_one_hot_states():
    config = intrinsic.Config(update_proportion=1.0, count_states=True)
    transform = intrinsic.make_transform(config, (2, 2))
    state = transform.init(jax.random.key(0), 1)
    obs = jnp.eye(5)[jnp.array([0, 3, 3, 4])][:, :4].reshape(4, 2, 2)  # last row all zeros
    state, _ = transform.update(state, obs, jax.random.key(1))
    np.testing.assert_array_equal(state.visit_count, [1, 0, 0, 2])
    bonus, count = intrinsic.per_state(transform, state, jnp.eye(4).reshape(4, 2, 2))
    np.testing.assert_array_equal(count, [1, 0, 0, 2])
    assert bonus.shape == (4,)


@pytest.mark.parametrize("proportion, batch, kept", [(0.25, 8, 2), (0.3, 10, 3), (0.01, 8, 1)])
def test_subset_rows_train_exactly_round_p_times_b_rows(proportion, batch, kept):
    """update_rows "subset": exactly max(1, round(p * B)) distinct rows train, every update."""
    config = intrinsic.Config(update_proportion=proportion, update_rows="subset",
                              count_states=True)
    transform = intrinsic.make_transform(config, (batch,))
    state = transform.init(jax.random.key(0), 1)
    obs = jnp.eye(batch)  # one row per state: the counts say which rows trained
    for step in range(5):
        state, _ = transform.update(state, obs, jax.random.key(step))
        count = np.asarray(state.visit_count)
        assert count.sum() == kept * (step + 1)
    assert count.max() <= 5  # no row twice in one update
    assert (count > 0).sum() > kept  # different rows from update to update


def test_subset_and_mask_agree_when_every_row_trains():
    """With update_proportion 1 both readings train on the whole batch: RND (no target noise)
    takes the same step either way (the subset only reorders the rows)."""
    obs = jax.random.normal(jax.random.key(3), (16, 6))
    updated = {}
    for rows in intrinsic.UPDATE_ROWS:
        config = intrinsic.Config(kind="rnd", update_proportion=1.0, update_rows=rows)
        transform = intrinsic.make_transform(config, (6,))
        state = transform.observe(transform.init(jax.random.key(0), 1), obs)
        updated[rows], _ = transform.update(state, obs, jax.random.key(1))
    before = jax.tree.leaves(state.predictor_params)
    for a, b, c in zip(jax.tree.leaves(updated["mask"].predictor_params),
                       jax.tree.leaves(updated["subset"].predictor_params), before, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
        assert not np.array_equal(a, c)


def test_subset_rows_give_the_masks_bonus_decay_on_average():
    """The two readings are the same estimator in expectation: trained on the same stream of
    batches, the mean bonus over the batch's states ends within 10% of each other."""
    obs = jnp.tile(jnp.eye(8), (8, 1))  # 64 rows, 8 states
    bonus = {}
    for rows in intrinsic.UPDATE_ROWS:
        config = intrinsic.Config(update_proportion=0.25, update_rows=rows,
                                  learning_rate=1e-3)
        transform = intrinsic.make_transform(config, (8,), normalise_obs=False)
        state = transform.init(jax.random.key(0), 1)
        start = float(transform.bonus(state, jnp.eye(8), jax.random.key(0)).mean())

        def step(state, key, transform=transform):
            return transform.update(state, obs, key)[0], None

        state, _ = jax.lax.scan(step, state, jax.random.split(jax.random.key(1), 300))
        bonus[rows] = float(transform.bonus(state, jnp.eye(8), jax.random.key(0)).mean())
        assert bonus[rows] < 0.5 * start, rows
    assert bonus["subset"] == pytest.approx(bonus["mask"], rel=0.1)


@pytest.mark.parametrize("field, value, message", [
    ("kind", "icm", "kind: must be 'rnd' or 'rdd'"),
    ("sigma", 0.0, "sigma: must be a finite number in (0, inf)"),
    ("update_proportion", 0.0, "update_proportion"),
    ("readout", "median", "readout: must be 'mean' or 'sample'"),
    ("update_rows", "all", "update_rows: must be 'mask' or 'subset'"),
])
def test_bad_transform_config_names_the_field(field, value, message):
    with pytest.raises(RlkitError, match=message.replace("(", r"\(").replace(")", r"\)")):
        intrinsic.Config(**{field: value})


# --------------------------------------------------------------------------------------------
# The agents' intrinsic option
# --------------------------------------------------------------------------------------------


def _deepsea(size: int = 4):
    from envs.toy import DeepSeaConfig, make_deepsea

    return make_deepsea(DeepSeaConfig(size=size))


def _agents(spec, kind: str):
    from agents import dqn, ppo

    return {
        "ppo": ppo.make_agent(ppo.Config(num_envs=2, rollout_length=8, total_steps=64,
                                         num_minibatches=2, update_epochs=1, intrinsic=kind,
                                         intrinsic_count_states=True), spec),
        "dqn": dqn.make_agent(dqn.Config(num_envs=2, batch_size=8, learning_starts=8,
                                         buffer_size=32, intrinsic=kind,
                                         intrinsic_count_states=True), spec),
    }


@pytest.mark.slow  # compiles two training programs: minutes on a loaded 2-core machine
def test_ppo_and_dqn_with_rdd_train_vmapped_on_device():
    """Both agents carry the transform in their state through the on-device driver (2 seeds):
    the bonus is reported, the predictor and visit counts move, the target does not."""
    from rlkit.loops.on_device import make_on_device_trainer

    env = _deepsea()
    for name, agent in _agents(env.spec, "rdd").items():
        trainer = make_on_device_trainer(agent, env, env.default_params, iterations_per_chunk=8)
        carry = trainer.init(jax.random.split(jax.random.key(0), 2))
        before = jax.tree.map(np.asarray, carry.agent_state.intrinsic)
        carry, metrics = trainer.run(carry)
        after = carry.agent_state.intrinsic
        bonus = np.asarray(metrics["intrinsic_bonus_mean"])  # [seeds, iterations]
        assert bonus.shape == (2, 8), name
        assert np.all(np.isfinite(bonus[:, -1])) and np.all(bonus[:, -1] > 0), name
        assert float(np.asarray(after.visit_count).sum()) > 0, name
        for a, b in zip(jax.tree.leaves(before.target_params),
                        jax.tree.leaves(after.target_params), strict=True):
            np.testing.assert_array_equal(a, b)
        assert not np.array_equal(jax.tree.leaves(before.predictor_params)[0],
                                  jax.tree.leaves(after.predictor_params)[0]), name


@pytest.mark.slow
def test_ppo_and_dqn_with_rnd_train_on_the_host_driver():
    import envs
    from rlkit.loops.host import make_host_trainer

    def make_env(num_envs, seed):
        return envs.make_host_env("gym:CartPole-v1", None, num_envs, seed)

    for name, agent in _agents(make_env(1, 0).spec, "rnd").items():
        trainer = make_host_trainer(agent, make_env, num_seeds=1, seed=0,
                                    iterations_per_chunk=8, num_eval_episodes=1)
        carry = trainer.init(jax.random.split(jax.random.key(0), 1))
        carry, metrics = trainer.run(carry)
        trainer.close()
        assert np.isfinite(np.asarray(metrics["predictor_loss"])[:, -1]).all(), name
        assert int(carry.agent_state.intrinsic.update_step[0]) > 0, name


def test_intrinsic_state_survives_a_checkpoint_bit_for_bit(tmp_path):
    """The transform's state (predictor, frozen target, Adam, running statistics, counts) is
    part of each agent's state, so the run's checkpoint stores and restores it exactly."""
    from rlkit.checkpoint import Checkpointer

    env = _deepsea()
    for name, agent in _agents(env.spec, "rdd").items():
        state = agent.init(jax.random.key(0))
        transform_state = state.intrinsic
        assert isinstance(transform_state, intrinsic.State), name
        # Move the running statistics off their initial values first.
        transform_state = transform_state.replace(
            obs_moments=intrinsic.update_moments(transform_state.obs_moments,
                                                 jax.random.normal(jax.random.key(1), (5, 4, 4))))
        state = state.replace(intrinsic=transform_state)
        checkpointer = Checkpointer(tmp_path / name)
        checkpointer.save(1, {"agent_state": state})
        checkpointer.close()
        restored = Checkpointer(tmp_path / name).restore(1, {"agent_state": state})
        leaves = jax.tree.leaves(state.intrinsic)
        restored_leaves = jax.tree.leaves(restored["agent_state"].intrinsic)
        assert len(leaves) == len(restored_leaves) > 10
        for a, b in zip(leaves, restored_leaves, strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.slow  # six CLI runs
def test_intrinsic_state_is_checkpointed_and_resumes_exactly(tmp_path):
    """PPO+RDD and DQN+RDD interrupted after one chunk and resumed: the same metrics.csv as
    uninterrupted runs (the transform's state, with its running statistics, is in the
    checkpoint)."""
    from rlkit.train import main

    for agent, extra in (("ppo", ["--agent.num-envs", "4", "--agent.rollout-length", "16"]),
                         ("dqn", ["--agent.learning-starts", "128", "--agent.num-envs", "4"])):
        def train(name, *more, agent=agent, extra=extra):
            run_dir = tmp_path / f"{agent}-{name}"
            assert main([agent, "--env", "deepsea", "--env-config.size", "4", "--total-steps",
                         "512", "--seeds", "2", "--num-logs", "2", "--no-progress",
                         "--run-dir", str(run_dir), "--agent.intrinsic", "rdd", *extra,
                         *more]) == 0
            return run_dir

        full = train("full")
        interrupted = train("cut", "--stop-after-chunks", "1")
        assert main([agent, "--resume", str(interrupted), "--no-progress"]) == 0
        text = (full / "metrics.csv").read_text()
        assert "intrinsic_bonus_mean" in text.splitlines()[0]
        final = json.loads((full / "summary.json").read_text())["final_metrics"]
        last = [row.split(",") for row in text.splitlines()[-2:]]  # the last chunk, 2 seeds
        column = text.splitlines()[0].split(",").index("intrinsic_bonus_mean")
        assert final["intrinsic_bonus_mean"] == pytest.approx(
            np.mean([float(row[column]) for row in last]))
        assert (interrupted / "metrics.csv").read_text() == text, agent


@pytest.mark.parametrize("agent, args, needle", [
    ("ppo", ["--agent.intrinsic", "icm"], "--agent.intrinsic: must be 'none', 'rnd' or 'rdd'"),
    ("dqn", ["--agent.intrinsic", "rdd", "--agent.intrinsic-sigma", "0"],
     "--agent.intrinsic-sigma: must be a finite number in (0, inf), got 0"),
    ("ppo", ["--agent.intrinsic-coef", "-1"], "--agent.intrinsic-coef: must be a finite number"),
    ("ppo", ["--agent.extrinsic-coef", "-0.5"], "--agent.extrinsic-coef"),
    ("dqn", ["--agent.intrinsic-coef", "-1"], "--agent.intrinsic-coef"),
    ("dqn", ["--agent.intrinsic-coef", "0.5"],
     "--agent.intrinsic-coef: has no effect with intrinsic none"),
    ("ppo", ["--agent.intrinsic-sigma", "2"],
     "--agent.intrinsic-sigma: has no effect with intrinsic none"),
    ("dqn", ["--agent.intrinsic", "rnd", "--agent.intrinsic-update-rows", "some"],
     "--agent.intrinsic-update-rows: must be 'mask' or 'subset'"),
    ("ppo", ["--agent.intrinsic", "rnd", "--agent.intrinsic-sigma", "0.5"],
     "--agent.intrinsic-sigma: applies to RDD only and has no effect with intrinsic rnd"),
    ("dqn", ["--agent.intrinsic", "rnd", "--agent.intrinsic-readout", "sample"],
     "--agent.intrinsic-readout: applies to RDD only and has no effect with intrinsic rnd"),
    ("ppo", ["--agent.intrinsic", "rdd", "--agent.intrinsic-coef", "0",
             "--agent.extrinsic-coef", "0"],
     "--agent.intrinsic-coef: is 0, and so is --agent.extrinsic-coef: every advantage"),
    ("ppo", ["--agent.intrinsic", "rnd", "--agent.intrinsic-sigma-network"],
     "--agent.intrinsic-sigma-network: applies to RDD only and has no effect with intrinsic rnd"),
])
def test_bad_intrinsic_flags_give_one_line_naming_the_flag(agent, args, needle, capsys):
    from rlkit.train import main

    assert main([agent, "--env", "chain", *args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], lines


@pytest.mark.parametrize("obs_shape, obs_dtype", [((4, 4), "float32"), ((10, 10, 4), "uint8")])
def test_intrinsic_agents_keep_state_shapes_and_dtypes(obs_shape, obs_dtype):
    """`update` with RDD keeps every state leaf's shape and dtype, and every metric is a scalar
    (traced by `jax.eval_shape`, never compiled)."""
    from rlkit.types import EnvSpec, Transition

    spec = EnvSpec("test", obs_shape, obs_dtype, 3, 10)
    for name, agent in _agents(spec, "rdd").items():
        state = jax.eval_shape(agent.init, jax.random.key(0))
        feed = agent.feed
        lead = (feed.rollout_length, feed.num_envs) if name == "ppo" else (feed.batch_size,)
        obs = jax.ShapeDtypeStruct((*lead, *obs_shape), obs_dtype)
        flat = jax.ShapeDtypeStruct((int(np.prod(lead)), *obs_shape), obs_dtype)
        _, extras = jax.eval_shape(agent.act, state, flat, jax.random.key(1), jnp.int32(0))
        extras = {k: jax.ShapeDtypeStruct(lead, v.dtype) for k, v in extras.items()}
        batch = Transition(obs=obs, action=jax.ShapeDtypeStruct(lead, jnp.int32),
                           reward=jax.ShapeDtypeStruct(lead, jnp.float32),
                           terminated=jax.ShapeDtypeStruct(lead, bool),
                           truncated=jax.ShapeDtypeStruct(lead, bool), next_obs=obs,
                           extras=extras)
        new_state, metrics = jax.eval_shape(agent.update, state, batch, jax.random.key(2))
        assert jax.tree.map(lambda x: (x.shape, x.dtype), new_state) == jax.tree.map(
            lambda x: (x.shape, x.dtype), state), name
        assert {"intrinsic_reward_mean", "intrinsic_bonus_mean", "predictor_loss"} <= set(metrics)
        for metric, value in metrics.items():
            assert value.shape == () and value.dtype == jnp.float32, (name, metric)
