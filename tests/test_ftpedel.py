"""PEDEL and FTPedel (agents.ftpedel, rlkit.loops.ftpedel): the spec's section 2.5 properties,
the design solver against independent solvers, and the CLI's one-line errors."""

from __future__ import annotations

import itertools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

from agents import ftpedel
from envs import linear_mdp
from rlkit.loops import ftpedel as driver
from rlkit.loops.ftpedel import RunOptions, identify

HARD = linear_mdp.HardStateConfig(p=0.1)
# Stops at eps_l = 1/8 (three epochs), 16 policies.
FAST = dict(epsilon=0.5, sphere_points=4, frank_wolfe_iterations=60)


def _hard_offline(rows_a: int, rows_b: int, p: float = 0.1) -> list[ftpedel.StepData]:
    """Offline rows of the hard-state instance in exact proportions, no sampling: step 0 from s0
    (a (1 - p) : p split of next states over rows_a + rows_b rows), step 1 action 0 in s_A
    (rows_a rows) and in s_B (rows_b rows)."""
    mdp = linear_mdp.hard_state_mdp(p=p)
    features = np.asarray(mdp.features, np.float64)
    theta = np.asarray(mdp.theta, np.float64)
    n0 = rows_a + rows_b
    to_a = int(round(n0 * (1 - p)))
    next_features = np.concatenate([np.tile(features[1], (to_a, 1, 1)),
                                    np.tile(features[2], (n0 - to_a, 1, 1))])
    step0 = ftpedel.StepData(np.tile(features[0, 0], (n0, 1)), np.zeros(n0), next_features)
    phi1 = np.concatenate([np.tile(features[1, 0], (rows_a, 1)),
                           np.tile(features[2, 0], (rows_b, 1))])
    step1 = ftpedel.StepData(phi1, phi1 @ theta[1], np.zeros((rows_a + rows_b, 2, 2)))
    return [step0, step1]


def _empty(horizon=2, actions=2, dim=2):
    return [ftpedel.empty_step_data(actions, dim)] * horizon


def test_reduction_to_pedel_with_the_same_key():
    """FTPedel with no offline rows is PEDEL: the same budgets, episodes and policy."""
    env_config = linear_mdp.RandomConfig(num_states=4, num_actions=2, dim=2, horizon=2, seed=2)
    run = RunOptions(seeds=2, seed=3)
    pedel = identify("pedel", ftpedel.Config(**FAST), "linear-random", env_config, run)
    fine = identify("ftpedel", ftpedel.FineTuneConfig(**FAST), "linear-random", env_config, run,
                    offline=_empty())
    for a, b in zip(pedel["runs"], fine["runs"], strict=True):
        assert a["budgets"] == b["budgets"] and a["online_episodes"] == b["online_episodes"]
        assert a["policy"] == b["policy"] and a["verified"] and b["verified"]
        assert a["online_episodes"] > 0
    # The budgets depend on the sampled data (so the equality above is not trivial).
    assert pedel["runs"][0]["budgets"] != pedel["runs"][1]["budgets"]


def test_zero_online_episodes_when_the_offline_data_suffice():
    """With Lambda_off >= (beta / eps_l^2) phi phi^T in every direction needed, every T_{l,h}
    is 0, no episode is rolled out, and the returned policy is the optimal one."""
    config = ftpedel.FineTuneConfig(**FAST)
    env = linear_mdp.make_hard_state(HARD)
    weights = ftpedel.make_policy_class(config, 2, 2)
    first = np.asarray(linear_mdp.hard_state_mdp(0.1).features)[0]

    def no_rollouts(key, index):
        raise AssertionError("an online episode was requested")

    solve = jax.jit(lambda *args: ftpedel.frank_wolfe(*args, iterations=100))
    pieces = ftpedel.Pieces(solve=solve, collect=no_rollouts)
    result = ftpedel.run(config, weights, first, _hard_offline(4500, 500), pieces,
                         jax.random.key(0))
    assert result.verified and result.online_episodes == 0
    assert all(b == 0 for epoch in result.budgets for b in epoch)
    oracle, returns, optimal = driver.exact_oracle(ftpedel, env.default_params.linear, weights)
    assert returns[result.policy] == pytest.approx(optimal, abs=1e-6)


def test_offline_only_does_not_verify_without_coverage_of_the_easy_state():
    """The spec's offline data (s_B only) leave e_1 uncovered: no verified policy, 0 episodes."""
    config = ftpedel.FineTuneConfig(**FAST, max_online_episodes=0)
    summary = identify("ftpedel", config, "linear-hard-state", HARD, RunOptions(),
                       offline=[ftpedel.empty_step_data(2, 2), _hard_offline(0, 1000)[1]])
    run = summary["runs"][0]
    assert not run["verified"] and run["online_episodes"] == 0
    assert run["budgets"] == [[None]]


def test_budget_search_is_monotone_in_the_offline_covariance():
    rng = np.random.default_rng(0)
    solve = jax.jit(lambda *args: ftpedel.frank_wolfe(*args, iterations=100))
    for _ in range(3):
        factors = rng.normal(size=(5, 3, 3))
        covariances = np.einsum("kij,klj->kil", factors, factors) / 3
        targets = rng.normal(size=(6, 3)) * 0.5
        mask = np.ones(6, bool)
        budgets = []
        for extra in (0.0, 5.0, 50.0):
            offline = extra * np.diag([1.0, 0.0, 0.0]) + 0.3 * np.eye(3)
            budget, _ = ftpedel.budget_search(
                solve, covariances.astype(np.float32), offline.astype(np.float32),
                targets.astype(np.float32), mask, 0.01, 10**7)
            budgets.append(budget)
        assert budgets[0] > 0 and budgets == sorted(budgets, reverse=True), budgets


def test_adding_offline_data_never_raises_any_budget_in_oracle_mode():
    """Oracle mode: the active sets do not depend on data, so T_{l,h} compare one by one."""
    config = ftpedel.FineTuneConfig(**FAST, oracle=True)
    budgets = []
    for rows_a, rows_b in ((0, 0), (0, 300), (100, 300), (1000, 3000)):
        offline = _hard_offline(rows_a, rows_b) if rows_a + rows_b else _empty()
        summary = identify("ftpedel", config, "linear-hard-state", HARD, RunOptions(),
                           offline=offline)
        budgets.append(np.array(summary["runs"][0]["budgets"], float))
    for more, fewer in itertools.pairwise(budgets):
        assert more.shape == fewer.shape and np.all(fewer <= more), (more, fewer)
    assert budgets[0].sum() > budgets[-1].sum()


def test_oracle_elimination_is_sound():
    """Exact theta and phi: after epoch l every survivor has Delta(pi) <= 4 eps_l, and the
    class's best policy is never eliminated (a random linear MDP, 64 policies)."""
    env_config = linear_mdp.RandomConfig(num_states=5, num_actions=3, dim=3, horizon=2, seed=1)
    config = ftpedel.Config(epsilon=0.1, oracle=True, sphere_points=6)
    env = linear_mdp.make_random(env_config)
    weights = ftpedel.make_policy_class(config, 2, 3)
    oracle, returns, _ = driver.exact_oracle(ftpedel, env.default_params.linear, weights)
    best = returns.max()
    oracle_result = ftpedel.run(
        config, weights, np.asarray(env.default_params.linear.features)[0], _empty(2, 3, 3),
        ftpedel.Pieces(jax.jit(lambda *a: ftpedel.frank_wolfe(*a, iterations=50)), None),
        jax.random.key(0), oracle)
    assert len(oracle_result.survivors) >= 3 and len(oracle_result.survivors[-1]) < len(weights)
    assert oracle_result.verified and returns[oracle_result.policy] >= best - config.epsilon
    for epoch, survivors in enumerate(oracle_result.survivors, start=1):
        assert int(np.argmax(returns)) in survivors
        assert np.all(best - returns[survivors] <= 4 * 2.0**-epoch + 1e-6)


def test_estimated_run_verifies_an_epsilon_optimal_policy():
    summary = identify("pedel", ftpedel.Config(**FAST), "linear-hard-state", HARD,
                       RunOptions(seeds=2))
    assert summary["verified_fraction"] == 1.0
    assert summary["verified_epsilon_optimal_fraction"] == 1.0


def _brute_force(covariances, base, targets, budget, step=0.002):
    """The best design on a grid of the 3-simplex with spacing `step` (vectorised)."""
    grid = np.arange(0, 1 + step / 2, step)
    a, b = np.meshgrid(grid, grid, indexing="ij")
    keep = a + b <= 1 + 1e-12
    w = np.stack([a[keep], b[keep], np.clip(1 - a[keep] - b[keep], 0, None)], -1)  # [G, 3]
    matrices = budget * np.einsum("gk,kde->gde", w, covariances) + base
    solved = np.linalg.solve(matrices[:, None], targets[None, :, :, None])[..., 0]  # [G, N, d]
    return np.einsum("gnd,nd->gn", solved, targets).max(-1).min()


def _scipy(covariances, base, targets, budget):
    """min_lambda max_n via the epigraph form (SLSQP from several starts)."""
    def value(w):
        matrix = budget * np.einsum("k,kde->de", w, covariances) + base
        return np.einsum("nd,de,ne->n", targets, np.linalg.inv(matrix), targets)

    best = np.inf
    for start in np.eye(3) * 0.7 + 0.1:
        x0 = np.concatenate([start, [value(start).max()]])
        res = scipy.optimize.minimize(
            lambda x: x[-1], x0, method="SLSQP",
            bounds=[(0, 1)] * 3 + [(0, None)],
            constraints=[{"type": "eq", "fun": lambda x: x[:3].sum() - 1},
                         {"type": "ineq", "fun": lambda x: x[-1] - value(x[:3])}],
            options={"ftol": 1e-12, "maxiter": 500})
        best = min(best, value(np.clip(res.x[:3], 0, 1) / np.clip(res.x[:3], 0, 1).sum()).max())
    return best


@pytest.mark.parametrize("seed", [0, 1])
def test_frank_wolfe_matches_brute_force_and_scipy(seed):
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(3, 2))
    covariances = np.einsum("ki,kj->kij", vectors, vectors) + 0.05 * np.eye(2)
    targets = rng.normal(size=(4, 2))
    base, budget = 0.5 * np.eye(2), 10.0
    weights, value = jax.jit(lambda *a: ftpedel.frank_wolfe(*a, iterations=400))(
        jnp.float32(budget), jnp.asarray(covariances, jnp.float32), jnp.asarray(base, jnp.float32),
        jnp.asarray(targets, jnp.float32), jnp.ones(4, bool))
    brute, reference = _brute_force(covariances, base, targets, budget), _scipy(
        covariances, base, targets, budget)
    assert np.isclose(np.asarray(weights).sum(), 1.0, atol=1e-5)
    assert float(value) <= brute + 1e-3
    assert abs(float(value) - reference) <= 1e-3
    assert reference <= brute + 1e-9
    # exploration="active": lambda stays on the allowed policies, at a value no better.
    restricted, restricted_value = jax.jit(lambda *a: ftpedel.frank_wolfe(*a, iterations=400))(
        jnp.float32(budget), jnp.asarray(covariances, jnp.float32), jnp.asarray(base, jnp.float32),
        jnp.asarray(targets, jnp.float32), jnp.ones(4, bool), jnp.array([True, True, False]))
    assert float(restricted[2]) == 0.0 and float(restricted_value) >= float(value) - 1e-6


def test_policy_class_file_of_the_wrong_shape_is_refused(tmp_path):
    path = tmp_path / "class.npy"
    np.save(path, np.zeros((4, 3, 2), np.float32))
    with pytest.raises(Exception, match=r"^policy_class: .*expected finite floats \[N, H, d\]"):
        ftpedel.make_policy_class(ftpedel.Config(policy_class=str(path)), 2, 2)
    good = tmp_path / "good.npy"
    np.save(good, np.ones((4, 2, 2), np.float32))
    assert ftpedel.make_policy_class(ftpedel.Config(policy_class=str(good)), 2, 2).shape == (
        4, 2, 2)


@pytest.mark.parametrize("argv, message", [
    (["pedel", "--agent.epsilon", "0"], "epsilon: must be a finite number in (0, inf)"),
    (["pedel", "--agent.delta", "1.5"], "delta: must be a finite number in (0, 1)"),
    (["pedel", "--agent.delta", "0"], "delta: must be a finite number in (0, 1)"),
    (["ftpedel", "--env", "linear-hard-state"], "--dataset: ftpedel learns from offline data"),
    (["pedel", "--env", "chain"], "--env: chain is not a linear MDP"),
])
def test_cli_bad_input_is_one_line(argv, message, capsys):
    assert driver.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_cli_dataset_of_another_env_or_dimension_is_one_line(tmp_path, capsys):
    from rlkit.collect import collect
    from rlkit.data.dataset import save_dataset

    data = collect("linear-random", linear_mdp.RandomConfig(dim=2, horizon=2), "random", 20,
                   seed=0)
    path = save_dataset(tmp_path / "random-d2", data.transitions, data.info)
    assert driver.main(["ftpedel", "--dataset", str(path), "--env", "linear-hard-state"]) == 2
    assert "was collected on env 'linear-random'" in capsys.readouterr().err
    assert driver.main(["ftpedel", "--dataset", str(path), "--env-config.dim", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert "another feature dimension" in err and "\n" not in err


def test_cli_writes_the_summary(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert driver.main(["pedel", "--env-config.p", "0.1", "--agent.epsilon", "0.5",
                        "--agent.frank-wolfe-iterations", "50",
                        "--agent.sphere-points", "4", "--run-dir", str(run_dir)]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    run = summary["runs"][0]
    assert run["verified"] and run["suboptimality"] == pytest.approx(0.0, abs=1e-6)
    assert run["online_episodes"] == sum(sum(epoch) for epoch in run["budgets"])
    assert "verified after" in capsys.readouterr().out
