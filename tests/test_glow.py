"""GLOW, HyGLOW and H2O (../shared/specs/glow_hyglow.md section 1.7).

The properties hold for every reasonable reading of the paper: the weighted residual vanishes at
Q* and is unbiased against `rlkit.planning`'s exact occupancies, clipping and the closed-form
adversary are right, optimism picks the highest feasible value, exact GLOW opens a lock within
H * A + 1 episodes, HyGLOW with optimal data needs no more online episodes than GLOW, and the
neural HyGLOW and any offline agent run inside H2O learn on small MDPs.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents import cql, dqn, glow
from envs import toy
from envs.tabular import model_from_numpy
from rlkit import density_ratio as dr
from rlkit import planning
from rlkit.errors import RlkitError
from rlkit.h2o import make_h2o_agent
from rlkit.loops.rounds import make_rounds_trainer, with_episode_starts
from rlkit.types import Transition

# --------------------------------------------------------------------------------------------
# A small layered MDP with exact expectations
# --------------------------------------------------------------------------------------------

WIDTH, LAYERS, ACTIONS = 3, 3, 2


def _layered_model(seed: int = 0):
    """3 layers of 3 states, 2 actions, random transitions to the next layer, random rewards;
    state 9 is terminal (entered after the last layer)."""
    rng = np.random.default_rng(seed)
    num_states = WIDTH * LAYERS + 1
    transitions = np.zeros((num_states, ACTIONS, num_states))
    for layer in range(LAYERS):
        for s in range(layer * WIDTH, (layer + 1) * WIDTH):
            if layer == LAYERS - 1:
                transitions[s, :, -1] = 1.0
            else:
                nxt = slice((layer + 1) * WIDTH, (layer + 2) * WIDTH)
                transitions[s, :, nxt] = rng.dirichlet(np.ones(WIDTH), size=ACTIONS)
    transitions[-1, :, -1] = 1.0
    rewards = rng.uniform(0, 0.3, (num_states, ACTIONS))
    rewards[-1] = 0
    terminal = np.arange(num_states) == num_states - 1
    return model_from_numpy(transitions, rewards, terminal, np.eye(num_states)[0], LAYERS)


def _population_statistics(model, mu: np.ndarray) -> dr.TabularStatistics:
    """The statistics of infinitely many samples with (x, a) ~ mu (exact expectations)."""
    transitions = np.asarray(model.transitions)
    terminal = np.asarray(model.terminal)
    next_counts = mu[..., None] * transitions
    ended = next_counts[..., terminal].sum(-1, keepdims=True)
    next_counts = np.concatenate([np.where(terminal, 0.0, next_counts), ended], axis=-1)
    return dr.TabularStatistics(
        counts=jnp.asarray(mu), reward_sums=jnp.asarray(mu * np.asarray(model.rewards)),
        next_counts=jnp.asarray(next_counts), starts=jnp.zeros(mu.shape[0]))


def _uniform_occupancy(model) -> np.ndarray:
    occ = planning.occupancy(model, planning.uniform_policy(model)).state_action.sum(0)
    return np.asarray(occ / occ.sum())


def _bellman(model, q: np.ndarray) -> np.ndarray:
    """(T f)(x, a) = R + E[max_a' f(x', a')], with f = 0 at the terminal state."""
    values = np.where(np.asarray(model.terminal), 0.0, q.max(-1))
    return np.asarray(model.rewards) + np.asarray(model.transitions) @ values


@pytest.mark.parametrize("kappa", [0.0, 0.5])
@pytest.mark.parametrize("signed", [False, True])
def test_zero_weighted_residual_at_q_star_and_positive_elsewhere(kappa, signed):
    model = _layered_model()
    q_star = np.asarray(planning.value_iteration(model).q[0])
    np.testing.assert_allclose(_bellman(model, q_star)[:-1], q_star[:-1], atol=1e-5)
    stats = _population_statistics(model, _uniform_occupancy(model))
    gamma = 100.0
    assert abs(float(dr.max_weighted_loss(jnp.asarray(q_star), stats, kappa, gamma, signed))) \
        < 1e-5
    over = q_star.copy()
    over[4, 1] += 0.5  # over-estimates a visited pair: every W >= 0 sees it
    assert float(dr.max_weighted_loss(jnp.asarray(over), stats, kappa, gamma, signed)) > 1e-3
    under = q_star.copy()
    # A non-greedy action under-estimated (its state's value does not move, so nothing upstream
    # over-estimates): only signed weights see it.
    under[4, int(np.argmin(q_star[4]))] -= 0.5
    loss = float(dr.max_weighted_loss(jnp.asarray(under), stats, kappa, gamma, signed))
    if signed:
        assert loss > 1e-3
    else:
        assert abs(loss) < 1e-5


def test_weighted_residual_is_unbiased_against_exact_occupancies():
    model = _layered_model(1)
    mu = _uniform_occupancy(model)
    rng = np.random.default_rng(0)
    f = np.asarray(planning.value_iteration(model).q[0]) + rng.normal(0, 0.3, mu.shape)
    f[-1] = 0
    greedy = planning.greedy_policy(jnp.asarray(f))
    d_pi = np.asarray(planning.occupancy(model, greedy).state_action.sum(0))  # sum over layers
    expected = float((d_pi * (f - _bellman(model, f)))[:-1].sum())
    weights_table = np.where(mu > 0, d_pi / np.maximum(mu, 1e-12), 0.0)

    num = 100_000
    key_pair, key_next = jax.random.split(jax.random.key(0))
    pair = jax.random.categorical(key_pair, jnp.log(jnp.asarray(mu).reshape(-1)), shape=(num,))
    state, action = pair // ACTIONS, pair % ACTIONS
    next_state = jax.random.categorical(
        key_next, jnp.log(jnp.asarray(model.transitions)[state, action] + 1e-30))
    f_j = jnp.asarray(f, jnp.float32)
    delta = dr.td_residual(f_j[state, action], jnp.asarray(model.rewards)[state, action],
                           f_j[next_state].max(-1), jnp.asarray(model.terminal)[next_state])
    samples = np.asarray(jnp.asarray(weights_table, jnp.float32)[state, action] * delta)
    standard_error = samples.std() / np.sqrt(num)
    assert abs(samples.mean() - expected) < 3 * standard_error, (samples.mean(), expected)
    # The weight at the next state instead of the current one is biased far beyond that.
    wrong = np.asarray(jnp.asarray(weights_table, jnp.float32)[next_state, action] * delta)
    assert abs(wrong.mean() - expected) > 10 * standard_error


def test_clipping_and_the_closed_form_adversary():
    w = jnp.linspace(-5, 20, 101)
    for gamma in (0.5, 3.0):
        clipped = np.asarray(dr.clip_weights(w, gamma))
        assert clipped.max() <= gamma and np.all(np.diff(clipped) >= 0)
    np.testing.assert_array_equal(np.asarray(dr.clip_weights(w, 1e9)), np.asarray(w))
    assert float(dr.truncation_level(2.0, 9)) == pytest.approx(6.0)
    assert float(dr.truncation_level(2.0, 0)) == pytest.approx(2.0)

    rng = np.random.default_rng(0)
    sums = jnp.asarray(rng.normal(0, 3, 200), jnp.float32)
    counts = jnp.asarray(rng.integers(0, 6, 200), jnp.float32)
    for kappa in (0.0, 0.5, 2.0):
        for signed in (False, True):
            for gamma in (0.7, 4.0):
                value, u = dr.tabular_adversary(sums, counts, kappa, gamma, signed)
                grid = jnp.linspace(-gamma if signed else 0.0, gamma, 4001)
                brute = (grid[:, None] * sums - kappa * grid[:, None] ** 2 * counts).max(0)
                brute = jnp.where(counts > 0, brute, 0.0)
                np.testing.assert_allclose(np.asarray(value), np.asarray(brute), atol=2e-3)
                assert np.all(np.abs(np.asarray(u)) <= gamma + 1e-6)
                if not signed:
                    assert np.all(np.asarray(u) >= 0)


# --------------------------------------------------------------------------------------------
# Exact selection rules
# --------------------------------------------------------------------------------------------


def _episode(model, actions, first_state=0) -> Transition:
    """One deterministic episode of a tabular model with one-hot observations."""
    obs_table = np.asarray(model.observations)
    transitions = np.asarray(model.transitions)
    rows, state = [], first_state
    for step, action in enumerate(actions):
        nxt = int(np.argmax(transitions[state, action]))
        rows.append((state, action, float(np.asarray(model.rewards)[state, action]), nxt,
                     bool(np.asarray(model.terminal)[nxt]), step == 0))
        state = nxt
    s, a, r, n, t, first = map(np.array, zip(*rows, strict=True))
    return Transition(obs=jnp.asarray(obs_table[s]), action=jnp.asarray(a, jnp.int32),
                      reward=jnp.asarray(r, jnp.float32), terminated=jnp.asarray(t),
                      truncated=jnp.zeros(len(rows), bool), next_obs=jnp.asarray(obs_table[n]),
                      extras={"first": jnp.asarray(first)})


def _concat(*parts: Transition) -> Transition:
    return jax.tree.map(lambda *xs: jnp.concatenate(xs), *parts)


def test_optimism_picks_the_highest_feasible_value():
    model = toy.combination_lock_model(np.array([0, 0], np.int32), 2)
    q_star = np.asarray(planning.value_iteration(model).q[0])
    tempting = q_star.copy()
    tempting[0, 1] = 2.0  # promises 2 for the action the data saw fail
    also_wrong = q_star.copy()
    also_wrong[0, 1] = 1.5
    low = np.zeros_like(q_star)  # feasible too, but promises nothing
    tables = jnp.asarray(np.stack([tempting, also_wrong, q_star, low]), jnp.float32)
    data = _episode(model, [1, 0])  # the wrong first action: dead path, reward 0
    stats = dr.tabular_statistics(data, model.num_states, 2, 1)
    for seed in range(5):
        chosen = dr.select_enumerated(tables, stats, jax.random.key(seed), optimistic=True,
                                      beta=0.25, kappa=0.5, gamma=1.0)
        np.testing.assert_array_equal(np.asarray(chosen.q_table), q_star)
        assert float(chosen.feasible) == 1.0 and float(chosen.candidates_left) == 2.0
    # With an episode that refutes nothing (the right path), the highest promise at the data's
    # start state wins.
    good = dr.tabular_statistics(_episode(model, [0, 0]), model.num_states, 2, 1)
    chosen = dr.select_enumerated(tables, good, jax.random.key(0), optimistic=True, beta=0.25,
                                  kappa=0.5, gamma=1.0)
    np.testing.assert_array_equal(np.asarray(chosen.q_table), tempting)
    # Round 1, no data: optimism at the data's start states (Alg. 1 line 7) has none, so every
    # candidate ties (not a uniform guess over states), and the key decides.
    empty = dr.tabular_statistics(jax.tree.map(lambda x: x[:0], data), model.num_states, 2, 1)
    picks = {int(np.argmin(np.abs(np.asarray(tables) - np.asarray(dr.select_enumerated(
        tables, empty, jax.random.key(seed), optimistic=True, beta=0.25, kappa=0.5,
        gamma=1.0).q_table)).sum(axis=(1, 2)))) for seed in range(40)}
    assert picks == {0, 1, 2, 3}


@pytest.mark.parametrize("signed", [False, True])
def test_product_class_matches_brute_force_enumeration(signed):
    horizon, num_actions = 3, 2
    value_class = toy.combination_lock_value_class(horizon, num_actions)
    tables = value_class.enumerate()
    assert tables.shape == (num_actions ** horizon, 2 * horizon + 1, num_actions)
    model = toy.combination_lock_model(np.array([1, 0, 1], np.int32), num_actions)
    rng = np.random.default_rng(0)
    episodes = [_episode(model, rng.integers(0, num_actions, horizon)) for _ in range(6)]
    for count in (0, 2, 6):
        data = _concat(*episodes[:count]) if count else jax.tree.map(lambda x: x[:0],
                                                                       episodes[0])
        stats = dr.tabular_statistics(data, 2 * horizon + 1, num_actions, 1)
        kwargs = dict(beta=0.25, kappa=0.5, gamma=1.0, signed=signed)
        product = dr.select_product(value_class, stats, jax.random.key(count), **kwargs)
        losses = jax.vmap(dr.max_weighted_loss, in_axes=(0, None, None, None, None))(
            tables, stats, 0.5, 1.0, signed)
        assert float(product.loss) == pytest.approx(float(losses.min()), abs=1e-5)
        assert float(dr.max_weighted_loss(product.q_table, stats, 0.5, 1.0, signed)) == \
            pytest.approx(float(losses.min()), abs=1e-5)
        brute = dr.select_enumerated(tables, stats, jax.random.key(count), optimistic=False,
                                     **kwargs)
        assert float(brute.loss) == pytest.approx(float(product.loss), abs=1e-5)


def test_product_class_check_rejects_candidates_with_different_values():
    rows = np.zeros((2, 2, 2), np.float32)
    rows[0, 0] = [1, 0]
    rows[0, 1] = [0, 2]
    with pytest.raises(RlkitError, match="state 0 have different values"):
        dr.check_product_class(dr.ProductValueClass(rows=jnp.asarray(rows),
                                                    valid=jnp.ones((2, 2), bool)))


# --------------------------------------------------------------------------------------------
# Exact GLOW and HyGLOW through the round driver
# --------------------------------------------------------------------------------------------


def _lock(horizon: int, num_actions: int, code_seed: int):
    return toy.make_combination_lock(toy.CombinationLockConfig(horizon, num_actions, code_seed))


def _episodes_to_optimal(agent, env, rounds: int, seeds: int, dataset=None) -> np.ndarray:
    trainer = make_rounds_trainer(agent, env, env.default_params, rounds, dataset=dataset)
    carry = trainer.init(jax.random.split(jax.random.key(0), seeds))
    _, metrics = trainer.run(carry)
    return np.asarray(metrics["episodes_to_optimal"][:, -1])


def test_exact_glow_opens_a_lock_within_the_bound():
    horizon, num_actions = 6, 3
    bound = horizon * num_actions + 1
    for code_seed in (1,):
        env = _lock(horizon, num_actions, code_seed)
        agent = glow.make_agent(glow.Config(), env.spec, env.value_class())
        needed = _episodes_to_optimal(agent, env, bound, seeds=8)
        assert not np.isnan(needed).any()
        # Episodes before the optimal policy, plus its own successful episode.
        assert np.all(needed + 1 <= bound), needed
        # Each failed rollout refutes one wrong action: at least one per layer whose first
        # guess was wrong; far below the 3^6 = 729 codes a blind search would try.
        assert needed.max() >= 1


def test_exact_glow_with_an_enumerated_class_file(tmp_path):
    horizon, num_actions = 3, 2
    tables = np.asarray(toy.combination_lock_value_class(horizon, num_actions).enumerate())
    path = tmp_path / "codes.npy"
    np.save(path, tables)
    env = _lock(horizon, num_actions, 4)
    agent = glow.make_agent(glow.Config(value_class=str(path)), env.spec)
    needed = _episodes_to_optimal(agent, env, horizon * num_actions + 1, seeds=3)
    assert not np.isnan(needed).any() and np.all(needed <= horizon * num_actions)


def test_a_bad_value_class_file_is_one_clear_line(tmp_path):
    from rlkit.types import EnvSpec

    spec = EnvSpec("combination-lock", (4,), "float32", 2, 3)
    expected = "[M, S, A] = [M, 4, 2] for env 'combination-lock'"

    def error(path) -> str:
        with pytest.raises(RlkitError) as caught:
            glow.load_value_class(glow.Config(value_class=str(path)), spec)
        return str(caught.value)

    message = error(tmp_path / "missing.npy")
    assert message.startswith("value_class:") and "no such file" in message
    pickled = tmp_path / "objects.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    text = tmp_path / "text.npy"
    text.write_text("not an array")
    for path in (pickled, text):
        message = error(path)
        assert "is not a .npy array file" in message and expected in message
        assert "allow_pickle" not in message
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((2, 4, 3), np.float32))
    message = error(wrong)
    assert "(2, 4, 3)" in message and expected in message


def _optimal_dataset(env, episodes: int) -> Transition:
    model = env.model(env.default_params)
    policy = np.asarray(planning.value_iteration(model).q[0]).argmax(-1)
    actions, state = [], 0
    for _ in range(env.spec.max_episode_steps):
        actions.append(int(policy[state]))
        state = int(np.argmax(np.asarray(model.transitions)[state, actions[-1]]))
    one = _episode(model, actions)
    one = one.replace(extras={})
    return _concat(*[one] * episodes)


def test_hyglow_with_optimal_data_needs_no_more_online_episodes_than_glow():
    env = _lock(6, 3, 2)
    dataset = _optimal_dataset(env, 50)
    hybrid = glow.make_agent(glow.HybridConfig(), env.spec, env.value_class())
    needed_hybrid = _episodes_to_optimal(hybrid, env, 4, seeds=4, dataset=dataset)
    assert np.all(needed_hybrid <= 3), needed_hybrid  # pi* within 3 online rounds
    online = glow.make_agent(glow.Config(), env.spec, env.value_class())
    needed_online = _episodes_to_optimal(online, env, 19, seeds=4)
    assert np.all(needed_hybrid <= needed_online)


def test_with_episode_starts_marks_the_row_after_every_end():
    done = jnp.array([False, True, False, False, True, True])
    data = Transition(obs=jnp.zeros((6, 1)), action=jnp.zeros(6, jnp.int32),
                      reward=jnp.zeros(6), terminated=done, truncated=jnp.zeros(6, bool),
                      next_obs=jnp.zeros((6, 1)))
    first = np.asarray(with_episode_starts(data).extras["first"])
    np.testing.assert_array_equal(first, [True, False, True, False, False, True])


# --------------------------------------------------------------------------------------------
# Neural versions and H2O with other offline learners
# --------------------------------------------------------------------------------------------


def _mixture_dataset(env_name: str, env_config, episodes: int, epsilon: float) -> Transition:
    from rlkit.collect import collect

    data = collect(env_name, env_config, "mixture", episodes, seed=0, epsilon=epsilon,
                   checkpoint="optimal")
    return jax.tree.map(jnp.asarray, data.transitions)


def _assert_neural_hyglow_solves(env, env_name: str, env_config, episodes: int, epsilon: float,
                                 hidden_sizes: tuple[int, ...], rounds: int) -> None:
    """Neural HyGLOW, given `episodes` of a mixture policy's data, reaches the optimal policy
    within `rounds` rounds on both of 2 seeds."""
    dataset = _mixture_dataset(env_name, env_config, episodes, epsilon=epsilon)
    agent = glow.make_agent(glow.HybridConfig(version="neural", hidden_sizes=hidden_sizes,
                                              updates_per_round=16), env.spec)
    needed = _episodes_to_optimal(agent, env, rounds, seeds=2, dataset=dataset)
    assert not np.isnan(needed).any(), needed


def test_neural_hyglow_solves_a_small_deepsea_from_partial_data():
    # DeepSea 5: a partially competent policy (right with probability 0.8 a step).
    config = toy.DeepSeaConfig(size=5)
    _assert_neural_hyglow_solves(toy.make_deepsea(config), "deepsea", config, 50, 0.4, (32, 32),
                                 40)


def test_neural_glow_update_clips_weights_grows_truncation_and_is_optimistic():
    env = _lock(4, 2, 0)
    model = env.model(env.default_params)
    rng = np.random.default_rng(0)
    batch = _concat(*[_episode(model, rng.integers(0, 2, 4)) for _ in range(4)])  # 16 rows

    def train(optimism_coef: float):
        config = glow.Config(version="neural", hidden_sizes=(16,), updates_per_round=2,
                             batch_size=16, gamma_0=0.5, optimism_coef=optimism_coef,
                             learning_rate=1e-2)
        agent = glow.make_agent(config, env.spec)
        update = jax.jit(agent.update)
        state = agent.init(jax.random.key(0))
        history = []
        for i in range(12):
            state, metrics = update(state, batch, jax.random.key(i))
            history.append({k: float(v) for k, v in metrics.items()})
        return history

    history = train(1.0)
    for i, metrics in enumerate(history):
        # Clipping at gamma_0 * sqrt(round), the round advancing every updates_per_round updates.
        assert metrics["truncation"] == pytest.approx(0.5 * np.sqrt(i // 2 + 1), rel=1e-5)
        assert metrics["weight_abs_max"] <= metrics["truncation"] + 1e-6
        assert all(np.isfinite(v) for v in metrics.values())
    # Optimism: the start-state value term pushes max_a f(x_1, a) up.
    optimistic = train(5.0)[-1]["start_value"]
    plain = train(0.0)[-1]["start_value"]
    assert optimistic > plain + 0.1, (optimistic, plain)


def test_neural_paper_preset_grows_truncation_linearly_and_bootstraps_without_a_target():
    env = _lock(3, 2, 0)
    model = env.model(env.default_params)
    batch = _concat(*[_episode(model, [1, 0, 1]) for _ in range(4)])
    config = glow.Config(version="neural", preset="paper", hidden_sizes=(8,), updates_per_round=2,
                         batch_size=12, gamma_0=0.5, learning_rate=1e-2)
    agent = glow.make_agent(config, env.spec)
    state = agent.init(jax.random.key(0))
    update = jax.jit(agent.update)
    for i in range(6):
        state, metrics = update(state, batch, jax.random.key(i))
        assert float(metrics["truncation"]) == pytest.approx(0.5 * (i // 2 + 1))  # gamma t
    # Without a target network the target copy is never read: the Q-network bootstraps from
    # itself. Replacing the target parameters by garbage changes nothing.
    garbage = state.replace(target_params=jax.tree.map(lambda x: x + 100.0, state.target_params))
    a, metrics_a = update(state, batch, jax.random.key(9))
    b, metrics_b = update(garbage, batch, jax.random.key(9))
    np.testing.assert_allclose(jax.tree.leaves(a.q_params)[0], jax.tree.leaves(b.q_params)[0])
    assert float(metrics_a["td_abs_mean"]) == pytest.approx(float(metrics_b["td_abs_mean"]))
    # With a target network the residuals bootstrap from the shifted copy (2 of 3 rows).
    with_target = jax.jit(glow.make_agent(dataclasses.replace(config, target_network=True),
                                          env.spec).update)
    _, metrics_c = with_target(state, batch, jax.random.key(9))
    _, metrics_d = with_target(garbage, batch, jax.random.key(9))
    assert float(metrics_d["td_abs_mean"]) > float(metrics_c["td_abs_mean"]) + 30


@pytest.mark.slow  # ~25 s cold; test_cli_runs_an_offline_agent_inside_h2o covers H2O by default
def test_h2o_runs_cql_as_the_offline_learner():
    config = toy.CombinationLockConfig(horizon=4, num_actions=3, code_seed=1)
    env = toy.make_combination_lock(config)
    dataset = _mixture_dataset("combination-lock", config, 40, epsilon=0.5)
    offline = cql.make_agent(cql.Config(batch_size=64, hidden_sizes=(64,)), env.spec)
    agent = make_h2o_agent(offline, env.spec, episodes_per_round=2, updates_per_round=100)
    needed = _episodes_to_optimal(agent, env, 15, seeds=2, dataset=dataset)
    assert not np.isnan(needed).any(), needed


def test_h2o_refuses_online_agents():
    env = _lock(3, 2, 0)
    with pytest.raises(RlkitError, match="--h2o"):
        make_h2o_agent(dqn.make_agent(dqn.Config(), env.spec), env.spec)


def test_config_errors_name_the_field(tmp_path):
    with pytest.raises(RlkitError, match="version"):
        glow.Config(version="fast")
    with pytest.raises(RlkitError, match="gamma_0"):
        glow.Config(gamma_0=0.0)
    with pytest.raises(RlkitError, match="offline_fraction"):
        glow.HybridConfig(offline_fraction=1.5)
    spec = toy.make_chain(toy.ChainConfig()).spec
    with pytest.raises(RlkitError, match="no built-in value class"):
        glow.make_agent(glow.Config(), spec)
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((3, 4)))
    with pytest.raises(RlkitError, match=r"\[M, S, A\] = \[M, 8, 2\]"):
        glow.make_agent(glow.Config(value_class=str(bad)), spec)
    assert dataclasses.replace(glow.HybridConfig(), version="neural").hybrid


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _main(argv):
    from rlkit.train import main

    return main([*argv, "--no-progress"])


@pytest.fixture(scope="module")
def lock_dataset_dir(tmp_path_factory):
    """40 episodes of a 70%-correct policy (epsilon 0.4 of 4 actions) on a horizon-5 lock."""
    from rlkit.collect import collect
    from rlkit.data import save_dataset

    data = collect("combination-lock", toy.CombinationLockConfig(horizon=5), "mixture", 40,
                   seed=0, epsilon=0.4, checkpoint="optimal")
    path = tmp_path_factory.mktemp("data") / "lock5"
    save_dataset(path, data.transitions, data.info)
    return path


def _summary(run_dir):
    import json

    return json.loads((run_dir / "summary.json").read_text())


def test_cli_glow_reports_episodes_to_optimal_per_round_and_resumes_exactly(tmp_path):
    args = ["glow", "--env", "combination-lock", "--seeds", "2", "--total-steps", "150",
            "--num-logs", "3"]
    reference = tmp_path / "reference"
    assert _main([*args, "--run-dir", str(reference)]) == 0
    summary = _summary(reference)
    per_seed = summary["per_seed_episodes_to_optimal"]
    assert all(isinstance(n, int) and 1 <= n <= 5 * 4 for n in per_seed), per_seed
    assert summary["final_return"] == pytest.approx(1.0)
    # The paper's figures: with J* = 1 and one episode a round over T = 150 / 5 = 30 rounds,
    # regret = sum_t (1 - J(pi_t)) and the mixture's return = 1 - regret / T, seed by seed.
    assert summary["rounds"] == 30
    regret, mixture = summary["per_seed_cumulative_regret"], summary["per_seed_mixture_return"]
    np.testing.assert_allclose(mixture, 1 - np.asarray(regret) / 30, atol=1e-6)
    assert all(r >= n for r, n in zip(regret, per_seed, strict=True))  # each failed round costs 1
    assert summary["cumulative_regret"] == pytest.approx(np.mean(regret))
    assert "secondary" in summary["episodes_to_optimal_note"]
    resumed = tmp_path / "resumed"
    assert _main([*args, "--run-dir", str(resumed), "--stop-after-chunks", "1"]) == 0
    assert _main(["--resume", str(resumed)]) == 0
    assert (resumed / "metrics.csv").read_text() == (reference / "metrics.csv").read_text()


def test_cli_hyglow_learns_from_a_dataset(lock_dataset_dir, tmp_path):
    assert _main(["hyglow", "--dataset", str(lock_dataset_dir), "--seeds", "2",
                  "--total-steps", "50", "--num-logs", "2",
                  "--run-dir", str(tmp_path / "hyglow")]) == 0
    summary = _summary(tmp_path / "hyglow")
    assert summary["agent"] == "hyglow" and summary["dataset"]["episodes"] == 40
    assert summary["final_return"] == pytest.approx(1.0)


def test_cli_runs_an_offline_agent_inside_h2o(lock_dataset_dir, tmp_path):
    assert _main(["bc", "--dataset", str(lock_dataset_dir), "--h2o", "--seeds", "1",
                  "--total-steps", "40", "--num-logs", "2", "--h2o-updates-per-round", "20",
                  "--agent.hidden-sizes", "32", "--run-dir", str(tmp_path / "h2o")]) == 0
    summary = _summary(tmp_path / "h2o")
    assert summary["env_steps"] == 40 and summary["h2o"] is True
    assert {"cumulative_regret", "mixture_return"} <= set(summary)


def test_h2o_presets_set_the_rounds_schedule():
    env = _lock(3, 2, 0)
    offline = cql.make_agent(cql.Config(), env.spec)
    practical = make_h2o_agent(offline, env.spec).feed
    assert (practical.num_envs, practical.offline_schedule, practical.refit) == (4, "all", False)
    paper = make_h2o_agent(offline, env.spec, preset="paper").feed
    assert (paper.num_envs, paper.offline_schedule, paper.refit) == (1, "paper", True)
    with pytest.raises(RlkitError, match="--h2o-preset"):
        make_h2o_agent(offline, env.spec, preset="fast")


def test_outside_the_papers_assumptions_names_the_reason():
    from rlkit.h2o import outside_assumptions

    lock = toy.combination_lock_model(np.array([0, 1], np.int32), 2)
    assert outside_assumptions(lock, 1.0) is None
    deepsea = toy.make_deepsea(toy.DeepSeaConfig(size=4))
    model = deepsea.model(deepsea.default_params)
    optimal = float(planning.value_iteration(model).optimal_return)
    assert "negative rewards" in outside_assumptions(model, optimal)


@pytest.mark.parametrize("argv, needle", [
    (["glow", "--env", "chain"], "value_class: env 'chain' has no built-in value class"),
    (["hyglow", "--env", "combination-lock"], "--dataset: hyglow learns from a dataset"),
    (["dqn", "--env", "combination-lock", "--h2o"], "--h2o: wraps offline agents"),
    (["glow", "--env", "gym:CartPole-v1", "--agent.version", "neural"],
     "--env: glow runs in rounds on the device"),
    (["glow", "--env", "combination-lock", "--agent.kappa", "-1"],
     "kappa: must be a finite number in [0, inf)"),
    (["glow", "--env", "combination-lock", "--agent.preset", "fast"],
     "preset: must be 'practical' or 'paper'"),
    (["cql", "--env", "combination-lock", "--h2o", "--h2o-preset", "fast"],
     "--h2o-preset: must be 'practical' or 'paper'"),
    (["cql", "--env", "combination-lock", "--h2o-preset", "paper"],
     "--h2o-preset: has no effect without --h2o"),
    (["cql", "--env", "combination-lock", "--h2o-updates-per-round", "5"],
     "--h2o-updates-per-round: has no effect without --h2o"),
    (["glow", "--env", "combination-lock", "--total-steps", "100000"],
     "--total-steps: 20000 rounds of 1 episodes outgrow the 2000 episodes kept"),
])
def test_cli_errors_are_one_line_and_exit_2(argv, needle, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert _main([*argv, "--run-dir", str(run_dir)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], lines
    assert not run_dir.exists()


NOISY_LOCK = toy.CombinationLockConfig(horizon=4, num_actions=3, code_seed=2,
                                       observation_noise=0.1)


def test_noisy_observation_lock_passes_the_checker_with_its_noise_declared():
    from envs.checker import check_env

    env = toy.make_combination_lock(NOISY_LOCK)
    check_env(env, observation_noise=0.1)
    with pytest.raises(RlkitError, match="observations differ"):
        check_env(env)
    obs, _ = env.reset(jax.random.key(0), env.default_params)
    assert np.abs(np.asarray(obs) - np.eye(9)[0]).max() > 0  # really noisy


@pytest.mark.slow  # ~35 s cold; the DeepSea test covers neural HyGLOW in the default suite
def test_neural_hyglow_opens_a_lock_with_noisy_observations():
    _assert_neural_hyglow_solves(toy.make_combination_lock(NOISY_LOCK), "combination-lock",
                                 NOISY_LOCK, 40, 0.5, (64, 64), 30)


# --------------------------------------------------------------------------------------------
# The paper preset, the restricted weight class (Amortila et al. 2024, Eq. 4, 34, Thm 3.1)
# --------------------------------------------------------------------------------------------


def _stats(counts, residual_free_rewards=None) -> dr.TabularStatistics:
    """Hand-built statistics of terminal one-step samples: S_f(x, a) = f(x, a) N(x, a) - R."""
    counts = jnp.asarray(counts, jnp.float32)
    rewards = jnp.zeros_like(counts) if residual_free_rewards is None else residual_free_rewards
    num_states = counts.shape[0]
    next_counts = jnp.zeros((*counts.shape, num_states + 1)).at[..., num_states].set(counts)
    return dr.TabularStatistics(counts=counts, reward_sums=rewards, next_counts=next_counts,
                                starts=jnp.zeros(num_states))


def test_truncation_changes_the_chosen_f_with_a_restricted_weight_class():
    # One sample in each of two cells, both ending the episode (residual = f). f_a over-states
    # the rare cell 0 by 0.5, f_b the common cell 1 by 2. W = {(10, 0), (1, 1)}: a large ratio
    # on cell 0, a flat one. kappa = 0, so L(f, w) = sum [w]_gamma * f:
    #   gamma = 100: L(f_a) = max(10 * 0.5, 0.5) = 5, L(f_b) = max(0, 2) = 2 -> f_b;
    #   gamma = 1:   L(f_a) = max(1 * 0.5, 0.5) = 0.5, L(f_b) = 2           -> f_a.
    tables = jnp.asarray([[[0.5], [0.0]], [[0.0], [2.0]]])  # [M=2, S=2, A=1]
    weights = jnp.asarray([[[10.0], [0.0]], [[1.0], [1.0]]])  # [N=2, S=2, A=1]
    stats = _stats([[1.0], [1.0]])
    chosen = {}
    for gamma in (100.0, 1.0):
        selection = dr.select_enumerated(tables, stats, jax.random.key(0), optimistic=False,
                                         beta=0.0, kappa=0.0, gamma=gamma, weights=weights)
        chosen[gamma] = int(np.argmin(np.abs(np.asarray(tables) - selection.q_table)
                                      .sum(axis=(1, 2))))
        losses = [float(dr.finite_class_losses(t, weights, stats, 0.0, gamma)[0])
                  for t in tables]
        np.testing.assert_allclose(losses, {100.0: [5.0, 2.0], 1.0: [0.5, 2.0]}[gamma])
    assert chosen == {100.0: 1, 1.0: 0}
    # With tabular W (every table in [0, gamma]) the same data pick f_a at both levels: the
    # clip never binds on the best response's decision here, the point of the restricted class.
    for gamma in (100.0, 1.0):
        selection = dr.select_enumerated(tables, stats, jax.random.key(0), optimistic=False,
                                         beta=0.0, kappa=0.5, gamma=gamma)
        np.testing.assert_allclose(selection.q_table, tables[0])


def test_occupancy_ratio_class_holds_the_candidates_ratios_exactly():
    model = toy.combination_lock_model(np.array([0, 0], np.int32), 2)
    codes = [(0, 0), (0, 1), (1, 0), (1, 1)]
    policies = np.zeros((4, model.num_states, 2), np.float32)
    for i, code in enumerate(codes):  # the greedy policy of code c: c_h on the good path
        policies[i, :, 0] = 1.0
        policies[i, [0, 2], :] = 0.0
        policies[i, 0, code[0]] = policies[i, 2, code[1]] = 1.0
    weights = np.asarray(dr.occupancy_ratio_class(model, jnp.asarray(policies)))
    assert weights.shape == (4 * 5, model.num_states, 2)
    # w_(0,1): d^pi_00 / d^pi_01. pi_00 visits (0, a0) then (2, a0); pi_01 (0, a0) then (2, a1).
    # Ratios: (0, a0) 1 / 1; (2, a0) 1 / 0 -> the cap; (2, a1) 0 / 1 = 0; elsewhere 0 / 0 = 0.
    expected = np.zeros((model.num_states, 2), np.float32)
    expected[0, 0], expected[2, 0] = 1.0, dr.RATIO_CAP
    np.testing.assert_array_equal(weights[1], expected)
    # w_(0,0): d^pi_00 / d^pi_00, 1 on pi_00's support (0, a0), (2, a0) and 0 elsewhere.
    expected[2, 0] = 1.0
    np.testing.assert_array_equal(weights[0], expected)
    signed = np.asarray(dr.occupancy_ratio_class(model, jnp.asarray(policies), signed=True))
    np.testing.assert_array_equal(signed[20:], -weights)


def test_paper_preset_refutes_a_wrong_lock_candidate_after_the_predicted_visits():
    # A lock with H = 2, A = 2 (code 00). n episodes take the wrong action 1 at step 0. The
    # candidate "1 is right" over-states Q(0, 1) by 1 per visit; with alpha_t = 8 / gamma_t its
    # best clipped weight is gamma_t / 16 and its layer loss n gamma_t / 32. The per-layer
    # radius is c gamma_t (log(6 H / delta) + 2 log |F| + log t), |F| = 4, t = n + 1: refuted
    # once n / 32 > c (log(120) + 2 log 4 + log(n + 1)).
    confidence = 0.05
    model = toy.combination_lock_model(np.array([0, 0], np.int32), 2)
    env = _lock(2, 2, 0)
    agent = glow.make_agent(glow.Config(preset="paper", confidence=confidence), env.spec,
                            env.value_class())
    state = agent.init(jax.random.key(0))

    def predicted(n):
        return n / 32 > confidence * (np.log(6 * 2 / 0.1) + 2 * np.log(4) + np.log(n + 1))

    threshold = next(n for n in range(1, 1000) if predicted(n))
    one = _episode(model, [1, 0])
    one = one.replace(extras={"first": one.extras["first"], "step": jnp.arange(2)})
    for n, left in ((threshold - 1, 7.0), (threshold, 6.0)):
        _, metrics = agent.update(state, _concat(*[one] * n), jax.random.key(1))
        assert float(metrics["round"]) == n + 1
        # States 0 (2 candidates, then 1), 1, 3, 4 (one each) and unvisited 2 (both).
        assert float(metrics["candidates_left"]) == left, (n, metrics)
    # The closed form the docs quote agrees: threshold - 1 <= 32 c log_term < threshold.
    log_term = np.log(120) + 2 * np.log(4) + np.log(threshold + 1)
    assert threshold - 1 <= dr.refutation_visits(confidence, log_term) < threshold


def test_hyglow_paper_preset_learner_sees_t_minus_1_offline_and_online_episodes():
    env = _lock(3, 2, 2)
    dataset = _optimal_dataset(env, 6)
    agent = glow.make_agent(glow.HybridConfig(preset="paper"), env.spec, env.value_class())
    assert agent.feed.offline_schedule == "paper" and agent.feed.num_envs == 1
    trainer = make_rounds_trainer(agent, env, env.default_params, 8, dataset=dataset)
    _, metrics = trainer.run(trainer.init(jax.random.split(jax.random.key(0), 1)))
    rounds = np.arange(8)
    np.testing.assert_array_equal(metrics["round"][0], rounds + 1)
    # The learner's weighted episode count: t - 1 online + t - 1 offline (weight 1: equal
    # lengths), the offline part capped at the dataset's 6 and then weighted up to match.
    np.testing.assert_allclose(metrics["data_episodes"][0], 2 * rounds, rtol=1e-6)
    # Truncation gamma_t = gamma t and penalty alpha_t = 8 / gamma_t with gamma = 1.
    np.testing.assert_allclose(metrics["truncation"][0], rounds + 1)
    np.testing.assert_allclose(metrics["penalty"][0], 8 / (rounds + 1), rtol=1e-6)


def test_truncation_changes_glows_choice_with_the_occupancy_ratio_class_of_a_lock():
    # Lock H = 2, A = 2, code 00. F = the Q* of the 4 codes plus a "tempting" f that promises 2
    # for the wrong first action. W = the ratios between the 4 codes' greedy occupancies: at
    # (0, a1) they take the values {0, 1, 2, RATIO_CAP} (d^pi_1x / d^pi_1x' = 1, / the mixture
    # = 1 / 0.5 = 2, / d^pi_0x = 1 / 0). One episode takes the wrong first action, so the
    # tempting f has residual 2 there and kappa = 1/2 gives L = 2u - u^2 / 2 at weight u:
    #   gamma = 1:   u in {0, 1}          -> L = 1.5 <= beta = 1.75: feasible, and optimism
    #                                        picks it (start value 2 against 1);
    #   gamma = 100: u in {0, 1, 2, 100}  -> L = 2 (u = 2) > 1.75: refuted, a code's Q* is chosen.
    model = toy.combination_lock_model(np.array([0, 0], np.int32), 2)
    codes = np.asarray(toy.combination_lock_value_class(2, 2).enumerate())
    tempting = np.asarray(planning.value_iteration(model).q[0]).copy()
    tempting[0, 1] = 2.0
    tables = jnp.asarray(np.concatenate([codes, tempting[None]]), jnp.float32)
    policies = jax.nn.one_hot(jnp.asarray(codes).argmax(-1), 2)
    weights = dr.occupancy_ratio_class(model, policies)
    np.testing.assert_array_equal(np.unique(np.asarray(weights)[:, 0, 1]),
                                  [0.0, 1.0, 2.0, dr.RATIO_CAP])
    data = _episode(model, [1, 0])
    data = data.replace(extras={"first": data.extras["first"], "step": jnp.arange(2)})
    stats = dr.tabular_statistics(data, model.num_states, 2, 1)
    for gamma, loss, picks_tempting in ((1.0, 1.5, True), (100.0, 2.0, False)):
        layer_losses = dr.finite_class_losses(tables[-1], weights, stats, 0.5, gamma,
                                              num_layers=2)
        np.testing.assert_allclose(layer_losses, [loss, 0.0], rtol=1e-6)
        chosen = dr.select_enumerated(tables, stats, jax.random.key(0), optimistic=True,
                                      beta=1.75, kappa=0.5, gamma=gamma, num_layers=2,
                                      weights=weights)
        assert np.array_equal(np.asarray(chosen.q_table), tempting) == picks_tempting, gamma


def _tempting_class(tmp_path, promise: float):
    """F = the Q* of the 4 codes of a lock (H = 2, A = 2, code 00) plus a Q* of code 00 that
    promises `promise` for the wrong first action, as a .npy file; its model; one episode that
    takes that wrong action (residual `promise` at (0, a1), then 0 on the dead path)."""
    model = toy.combination_lock_model(np.array([0, 0], np.int32), 2)
    codes = np.asarray(toy.combination_lock_value_class(2, 2).enumerate())
    tempting = np.asarray(planning.value_iteration(model).q[0]).copy()
    tempting[0, 1] = promise
    path = tmp_path / "f.npy"
    np.save(path, np.concatenate([codes, tempting[None]]).astype(np.float32))
    data = _episode(model, [1, 0])
    data = data.replace(extras={"first": data.extras["first"], "step": jnp.arange(2)})
    return model, str(path), tempting, data


def test_glow_selects_through_the_occupancy_ratio_class_from_its_config(tmp_path):
    # The tempting f over-states Q(0, a1) by 3. W = the ratios between the codes' greedy
    # occupancies (the tempting f's greedy policy is code 10's, kept once) takes the values
    # {0, 1, 2, RATIO_CAP} at (0, a1); gamma = gamma_0 sqrt(1) = 100, kappa = 1/2:
    #   tables: u* = 3 / (2 kappa) = 3, L = 9 - 4.5 = 4.5 > beta = 4.25: refuted, a code chosen;
    #   ratios: u in {0, 1, 2, 100} -> L = max(0, 2.5, 6 - 2 = 4, < 0) = 4 <= 4.25: feasible,
    #           and optimism picks it (start value 3 against 1).
    model, path, tempting, data = _tempting_class(tmp_path, 3.0)
    spec = _lock(2, 2, 0).spec
    chosen = {}
    for weight_class in ("tables", "occupancy-ratios"):
        config = glow.Config(value_class=path, weight_class=weight_class, gamma_0=100.0,
                             beta=4.25)
        agent = glow.make_agent(config, spec, None, model)
        state, metrics = agent.update(agent.init(jax.random.key(0)), data, jax.random.key(1))
        chosen[weight_class] = (np.array_equal(np.asarray(state.q_table), tempting),
                                float(metrics["class_loss"]))
    assert chosen == {"tables": (False, 0.0), "occupancy-ratios": (True, 4.0)}


def test_truncation_changes_glows_choice_through_its_weight_class_config(tmp_path):
    # Over-statement 2, beta = 1.75 (the finite class's case in the test above, through the
    # agent): gamma_0 = 1 clips W to {0, 1} at (0, a1), L = 2 - 1/2 = 1.5: the tempting f is
    # feasible and chosen, 5 candidates left; gamma_0 = 100 lets u = 2 in, L = 4 - 2 = 2 > 1.75:
    # refuted, 4 left (the codes 1x over-state by 1 only: L = max(0.5, 0) <= 1.75).
    model, path, tempting, data = _tempting_class(tmp_path, 2.0)
    spec = _lock(2, 2, 0).spec
    for gamma_0, picks_tempting, left in ((1.0, True, 5.0), (100.0, False, 4.0)):
        config = glow.Config(value_class=path, weight_class="occupancy-ratios", gamma_0=gamma_0,
                             beta=1.75)
        agent = glow.make_agent(config, spec, None, model)
        state, metrics = agent.update(agent.init(jax.random.key(0)), data, jax.random.key(1))
        assert np.array_equal(np.asarray(state.q_table), tempting) == picks_tempting, gamma_0
        assert float(metrics["candidates_left"]) == left, gamma_0


def test_weight_class_reaches_glow_through_the_registry_and_rejects_bad_input():
    from rlkit import registry

    env = _lock(2, 2, 0)
    config = glow.Config(weight_class="signed-occupancy-ratios")
    agent = registry.make_agent("glow", config, env.spec, env)  # the env's model handed over
    # The lock's 4 codes, enumerated; the data refute the codes that start with the wrong
    # action (loss 1 - 1/2 at u = 1 > beta = 0.25), leaving 2.
    # The correct first action leads to state 2 (step 1, on the good path).
    right = int(np.flatnonzero(np.asarray(env.default_params.model.transitions)[0, :, 2])[0])
    wrong = 1 - right
    data = _episode(env.default_params.model, [wrong, 0])
    data = data.replace(extras={"first": data.extras["first"], "step": jnp.arange(2)})
    _, metrics = agent.update(agent.init(jax.random.key(0)), data, jax.random.key(1))
    assert float(metrics["candidates_left"]) == 2.0, metrics
    with pytest.raises(RlkitError, match="weight_class: must be one of"):
        glow.Config(weight_class="ratios")
    with pytest.raises(RlkitError, match="weight_class: .*exact version"):
        glow.Config(version="neural", weight_class="occupancy-ratios")
    with pytest.raises(RlkitError, match="weight_class: .*has none"):
        glow.make_agent(config, env.spec, env.value_class(), None)
    big = _lock(12, 4, 0)  # 4^12 codes
    with pytest.raises(RlkitError, match="weight_class: .*enumerates F"):
        registry.make_agent("glow", config, big.spec, big)
    too_many_ratios = _lock(8, 4, 0)  # 4^8 codes: 2^33 ratios
    with pytest.raises(RlkitError, match="weight_class: .*would score"):
        registry.make_agent("glow", config, too_many_ratios.spec, too_many_ratios)
