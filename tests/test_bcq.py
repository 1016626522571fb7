"""Discrete BCQ (agents/bcq.py): the allowed-action mask and the constrained target by hand, the
two ends of the threshold on a toy MDP whose answers `rlkit.planning` computes exactly, config
errors, and the CLI.

The learning tests share one dataset of the chain with a trap (pushing left at the left end pays
0.01 a step): mostly a poor behaviour that stays left, plus a few episodes that walk right, every
action tried at every state the walk visits. With threshold 0 BCQ is double DQN on the data and
finds the optimal return J* = 11; with a threshold near 1 only the most frequent behaviour action
is allowed, and BCQ returns exactly the always-left value 16 * 0.01 (behaviour cloning's).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from datasets_helper import optimal_table, rollout, save_rollouts

import envs
from agents import bcq
from envs.toy import LEFT, ChainConfig
from rlkit import planning
from rlkit.data import load_dataset
from rlkit.data.hybrid import sample_dataset
from rlkit.errors import RlkitError
from rlkit.train import main
from rlkit.types import EnvSpec, Transition

TRAP = ChainConfig(length=6, horizon=16, left_reward=0.01)  # J* = 16 - 6 + 1 = 11
ALWAYS_LEFT_RETURN = 16 * 0.01


# ------------------------------------------------------------------------------------------
# The mask and the constrained target, by hand
# ------------------------------------------------------------------------------------------


def test_allowed_actions_by_hand():
    # G = [0.5, 0.3, 0.2]: ratios to the max [1, 0.6, 0.4].
    logits = jnp.log(jnp.array([[0.5, 0.3, 0.2]]))
    expected = {0.0: [True, True, True], 0.5: [True, True, False], 0.7: [True, False, False],
                0.99: [True, False, False]}
    for threshold, mask in expected.items():
        np.testing.assert_array_equal(bcq.allowed_actions(logits, threshold), [mask])
    # A shift of the logits is the same G; a uniform G allows every action at any threshold.
    np.testing.assert_array_equal(bcq.allowed_actions(logits + 7.0, 0.5), [[True, True, False]])
    np.testing.assert_array_equal(bcq.allowed_actions(jnp.zeros((1, 3)), 0.99), [[True] * 3])
    # Large logits do not overflow: ratios exp(0), exp(-1000) ~ 0, exp(-0.1) ~ 0.905.
    np.testing.assert_array_equal(bcq.allowed_actions(jnp.array([[1000.0, 0.0, 999.9]]), 0.9),
                                  [[True, False, True]])
    masked = bcq.mask_disallowed(jnp.array([[1.0, 5.0, 3.0]]), jnp.array([[True, False, True]]))
    assert int(jnp.argmax(masked)) == 2 and float(masked[0, 1]) == -np.inf


def _hand_made_state(agent, q_table, logit_table, target_q_table):
    """A state whose network is exactly the tables on one-hot obs: torso = identity (ReLU of a
    one-hot), Q head = q_table, G head = logit_table; the target's Q head = target_q_table."""
    state = agent.init(jax.random.key(0))

    def params(q):
        return {"params": {"torso": {"Dense_0": {"kernel": jnp.eye(3), "bias": jnp.zeros(3)}},
                           "Dense_0": {"kernel": jnp.asarray(q), "bias": jnp.zeros(3)},
                           "Dense_1": {"kernel": jnp.asarray(logit_table),
                                       "bias": jnp.zeros(3)}}}

    assert jax.tree.structure(params(q_table)) == jax.tree.structure(state.params)
    return state.replace(params=params(q_table), target_params=params(target_q_table))


def test_update_uses_the_constrained_double_dqn_target_by_hand():
    """Three states, three actions. At next state 1, G = [0.5, 0.1, 0.4] allows actions {0, 2}
    at threshold 0.5; the online Q [3, 5, 1] then picks action 0 (not 1, the unconstrained
    argmax), and the target network evaluates it: 10 (not 40, double DQN without the mask; not
    30, the maximum of the target over the allowed actions)."""
    gamma = 0.9
    q_table = np.array([[1.0, 2.0, 0.0], [3.0, 5.0, 1.0], [0.0, 0.0, 4.0]])
    logit_table = np.log(np.array([[0.2, 0.2, 0.6], [0.5, 0.1, 0.4], [1 / 3, 1 / 3, 1 / 3]]))
    target_table = np.array([[0.0, 0.0, 0.0], [10.0, 40.0, 30.0], [0.0, 0.0, 0.0]])
    spec = EnvSpec("tiny", (3,), "float32", 3, 10)
    config = bcq.Config(gamma=gamma, bcq_threshold=0.5, batch_size=2, hidden_sizes=(3,),
                        eval_epsilon=0.0, loss="huber")
    agent = bcq.make_agent(config, spec)
    # With threshold 0 every action is allowed: plain double DQN.
    plain = bcq.make_agent(dataclasses.replace(config, bcq_threshold=0.0), spec)
    state = _hand_made_state(agent, q_table, logit_table, target_table)
    obs = jnp.eye(3)
    # Row 0: s=0, a=1, r=0.5, s'=1, goes on. Row 1: s=2, a=2, r=1, s'=1, terminated.
    batch = Transition(obs=obs[jnp.array([0, 2])], action=jnp.array([1, 2], jnp.int32),
                       reward=jnp.array([0.5, 1.0]), terminated=jnp.array([False, True]),
                       truncated=jnp.zeros(2, bool), next_obs=obs[jnp.array([1, 1])])
    key = jax.random.key(1)
    (_, metrics), (_, plain_metrics) = jax.jit(  # one compile for both
        lambda state, batch: (agent.update(state, batch, key), plain.update(state, batch, key))
    )(state, batch)

    targets = np.array([0.5 + gamma * 10.0, 1.0])  # [9.5, 1]
    q_taken = np.array([2.0, 4.0])
    errors = q_taken - targets  # [-7.5, 3]: both beyond Huber's delta 1
    huber = np.mean(np.abs(errors) - 0.5)
    nll = np.mean([-math.log(0.2), -math.log(1 / 3)])
    penalty = np.mean(np.square(logit_table[[0, 2]]))
    np.testing.assert_allclose(metrics["target_mean"], targets.mean(), rtol=1e-6)
    np.testing.assert_allclose(metrics["q_mean"], q_taken.mean(), rtol=1e-6)
    np.testing.assert_allclose(metrics["td_loss"], huber, rtol=1e-6)
    np.testing.assert_allclose(metrics["imitation_loss"], nll, rtol=1e-6)
    np.testing.assert_allclose(metrics["logit_penalty"], penalty, rtol=1e-6)
    np.testing.assert_allclose(metrics["loss"], huber + nll + 1e-2 * penalty, rtol=1e-6)
    np.testing.assert_allclose(metrics["allowed_fraction"], 2 / 3, rtol=1e-6)

    # The policy: the allowed argmax of Q in every state (state 0 allows only action 2).
    np.testing.assert_array_equal(agent.policy(state, obs), np.eye(3)[[2, 0, 2]])
    # Threshold 0: the unconstrained double-DQN target 0.5 + 0.9 * 40 and argmax policy.
    np.testing.assert_allclose(plain_metrics["target_mean"], np.mean([0.5 + gamma * 40.0, 1.0]),
                               rtol=1e-6)
    np.testing.assert_allclose(plain_metrics["allowed_fraction"], 1.0)
    np.testing.assert_array_equal(plain.policy(state, obs), np.eye(3)[[1, 1, 2]])


def test_eval_epsilon_mixes_the_uniform_policy_into_the_report_and_the_actions():
    spec = EnvSpec("tiny", (3,), "float32", 3, 10)
    agent = bcq.make_agent(bcq.Config(hidden_sizes=(3,), eval_epsilon=0.3), spec)
    state = _hand_made_state(agent, np.eye(3)[[2, 0, 1]], np.zeros((3, 3)), np.zeros((3, 3)))
    obs = jnp.eye(3)
    np.testing.assert_allclose(agent.policy(state, obs), 0.7 * np.eye(3)[[2, 0, 1]] + 0.1,
                               rtol=1e-6)
    actions, _ = jax.jit(jax.vmap(agent.act, in_axes=(None, None, 0, None)))(
        state, obs, jax.random.split(jax.random.key(0), 4000), jnp.int32(0))
    greedy_share = (np.asarray(actions) == np.array([2, 0, 1])).mean()
    assert abs(greedy_share - 0.8) < 0.02  # 0.7 + 0.3 / 3; binomial sd ~0.004


# ------------------------------------------------------------------------------------------
# Config errors
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overrides, field", [
    (dict(bcq_threshold=1.0), "bcq_threshold"),
    (dict(bcq_threshold=-0.1), "bcq_threshold"),
    (dict(bcq_threshold=float("nan")), "bcq_threshold"),
    (dict(logit_penalty=-1e-3), "logit_penalty"),
    (dict(eval_epsilon=1.5), "eval_epsilon"),
    (dict(tau=0.0), "tau"),
    (dict(target_update_every=0), "target_update_every"),
    (dict(gamma=1.1), "gamma"),
    (dict(loss="l1"), "loss"),
    (dict(learning_rate=0.0), "learning_rate"),
])
def test_config_rejects_impossible_values_naming_the_field(overrides, field):
    with pytest.raises(RlkitError, match=f"^{field}:") as error:
        bcq.Config(**overrides)
    assert "\n" not in str(error.value)


def test_threshold_zero_and_just_below_one_are_valid():
    assert bcq.Config(bcq_threshold=0.0).bcq_threshold == 0.0
    assert bcq.Config(bcq_threshold=0.999).bcq_threshold == 0.999


# ------------------------------------------------------------------------------------------
# Learning on the trap chain, exact answers from rlkit.planning
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trap_dataset(tmp_path_factory) -> Path:
    """20 episodes of always-left (epsilon 0.2) and 20 of the optimal walk (epsilon 0.3)."""
    env = envs.make_env("chain", TRAP)
    left_table = jnp.zeros((TRAP.length, 2)).at[:, LEFT].set(1.0)
    # Equal episode counts: both rollouts share one compile.
    parts = [rollout(env, left_table, 20, epsilon=0.2, seed=0),
             rollout(env, optimal_table(env), 20, epsilon=0.3, seed=1)]
    return save_rollouts(tmp_path_factory.mktemp("data") / "trap", "chain", TRAP, parts,
                         "20 always-left (epsilon=0.2) + 20 optimal (epsilon=0.3) episodes")


def _train(configs: list[bcq.Config], data: Transition, num_updates: int):
    """Train one agent per config on uniform batches of `data`; their final states."""
    spec = envs.make_env("chain", TRAP).spec
    agents = [bcq.make_agent(config, spec) for config in configs]

    @jax.jit
    def train(data, key):  # data an argument: as a constant, XLA spends seconds folding it
        states = []
        for agent, config in zip(agents, configs, strict=True):
            init_key, key = jax.random.split(key)

            def step(state, step_key, agent=agent, config=config):
                batch_key, update_key = jax.random.split(step_key)
                batch = sample_dataset(data, batch_key, config.batch_size)
                return agent.update(state, batch, update_key)[0], None

            state, _ = jax.lax.scan(step, agent.init(init_key),
                                    jax.random.split(key, num_updates))
            states.append(state)
        return states

    return agents, train(data, jax.random.key(0))


@pytest.fixture(scope="module")
def trap_runs(trap_dataset):
    data = jax.tree.map(jnp.asarray, load_dataset(trap_dataset).transitions)
    # Every action is tried at every state the optimal walk visits (epsilon 0.3 on 20 walks).
    pairs = set(zip(np.asarray(data.obs).argmax(-1).tolist(), np.asarray(data.action).tolist(),
                    strict=True))
    assert pairs == {(s, a) for s in range(TRAP.length) for a in range(2)}
    base = dict(gamma=0.9, batch_size=64, hidden_sizes=(32, 32), learning_rate=3e-3,
                target_update_every=50, tau=1.0, eval_epsilon=0.0)
    configs = [bcq.Config(bcq_threshold=0.0, **base), bcq.Config(bcq_threshold=0.9, **base)]
    agents, states = _train(configs, data, num_updates=1500)
    env = envs.make_env("chain", TRAP)
    model = env.model(env.default_params)
    returns = [float(planning.expected_return(model, planning.policy_table(agent.policy, state,
                                                                            model)))
               for agent, state in zip(agents, states, strict=True)]
    return model, returns


def test_threshold_zero_reaches_the_optimal_return(trap_runs):
    model, (q_learning_return, _) = trap_runs
    optimal = float(planning.value_iteration(model).optimal_return)
    assert optimal == pytest.approx(11.0)
    assert q_learning_return == pytest.approx(optimal, abs=1e-5)


def test_threshold_near_one_returns_the_behaviour_value(trap_runs):
    model, (_, constrained_return) = trap_runs
    # Behaviour cloning's greedy policy: the most frequent action at the start state is left,
    # and always-left never leaves it.
    always_left = jnp.zeros((model.num_states, 2)).at[:, LEFT].set(1.0)
    assert float(planning.expected_return(model, always_left)) == pytest.approx(
        ALWAYS_LEFT_RETURN)
    assert constrained_return == pytest.approx(ALWAYS_LEFT_RETURN, abs=1e-5)


# ------------------------------------------------------------------------------------------
# The CLI
# ------------------------------------------------------------------------------------------


def test_cli_trains_bcq_from_a_dataset(trap_dataset, tmp_path):
    run_dir = tmp_path / "run"
    code = main(["bcq", "--dataset", str(trap_dataset), "--run-dir", str(run_dir),
                 "--no-progress", "--seeds", "1", "--num-logs", "1", "--total-steps", "20",
                 "--agent.batch-size", "16", "--agent.hidden-sizes", "8"])
    assert code == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["agent"] == "bcq" and summary["updates"] == 20 and summary["env_steps"] == 0
    assert summary["env"] == "chain" and summary["optimal_return"] == pytest.approx(11.0)
    assert summary["dataset"]["transitions"] == 40 * 16  # the chain never terminates
    assert summary["dataset"]["behaviour_return"] < 11.0
    header = (run_dir / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"td_loss", "imitation_loss", "allowed_fraction"} <= set(header)


def test_cli_refuses_a_bad_threshold_in_one_line(trap_dataset, tmp_path, capsys):
    run_dir = tmp_path / "run"
    code = main(["bcq", "--dataset", str(trap_dataset), "--run-dir", str(run_dir),
                 "--no-progress", "--agent.bcq-threshold", "1.0"])
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: --agent.bcq-threshold: must be a finite number in [0, 1)")
    assert not run_dir.exists()
