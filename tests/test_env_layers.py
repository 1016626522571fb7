"""Layers (issue 10 item 4) and start-up time (issue 11 item 16).

- An env's finite value class comes from the env's own config (`Environment.value_class`) and
  reaches the agent through `rlkit.registry.make_agent`; agents never import envs.
- Importing `envs` or `rlkit.registry`, or building a family's config, imports none of gymnax,
  gymnasium or procgen; nothing in `envs/` calls `jax.jit`.
"""

from __future__ import annotations

import ast
import dataclasses
import itertools
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import envs
from agents import glow
from envs import toy
from rlkit import planning, registry
from rlkit.loops.rounds import make_rounds_trainer

ROOT = Path(__file__).resolve().parents[1]


def _q_star(env) -> np.ndarray:
    """[S, A] the exact optimal Q-function of a time-indexed toy env."""
    return np.asarray(planning.value_iteration(env.model(env.default_params)).q[0])


def _contains(tables: np.ndarray, table: np.ndarray) -> bool:
    return bool(np.any(np.all(np.isclose(tables, table[None], atol=1e-6), axis=(1, 2))))


def test_lock_value_class_is_built_from_that_locks_config():
    """A 3-step, 3-action lock whose wrong actions pay a 0.25 lure: Q* on the good path is 1 for
    the code's action and 0.25 for the two others, and the class holds it (the old name-based
    lookup built the class of a lure-free lock, which does not contain this Q*)."""
    config = toy.CombinationLockConfig(horizon=3, num_actions=3, code_seed=2,
                                       distractor_reward=0.25)
    env = envs.make_env("combination-lock", config)
    q_star = _q_star(env)
    code = toy.combination_lock_code(2, 3, 3)
    for step in range(3):  # hand-computed Q* of the good-path state of each step
        expected = np.full(3, 0.25, np.float32)
        expected[code[step]] = 1.0
        np.testing.assert_allclose(q_star[2 * step], expected, atol=1e-6)
    np.testing.assert_allclose(q_star[1::2], 0.0)  # dead states and the terminal state

    value_class = env.value_class()
    assert value_class.rows.shape == (7, 3, 3) and value_class.valid.shape == (7, 3)
    tables = np.asarray(value_class.enumerate())
    assert tables.shape == (27, 7, 3)  # A^H = 27 codes
    assert _contains(tables, q_star)
    # Every code's Q* is in the class: the class is the lock family's, not one lock's.
    for other in (0, 5, 9):
        lock = toy.make_combination_lock(dataclasses.replace(config, code_seed=other))
        assert _contains(tables, _q_star(lock))
    # The lure-free class (what the old lookup by name gave this env) misses Q*.
    assert not _contains(np.asarray(toy.combination_lock_value_class(3, 3).enumerate()), q_star)


@pytest.mark.parametrize("deterministic", [True, False])
def test_deepsea_value_class_uses_the_move_cost_and_variant(deterministic):
    config = toy.DeepSeaConfig(size=3, mapping_seed=4, unscaled_move_cost=0.3,
                               deterministic=deterministic)
    env = envs.make_env("deepsea", config)
    tables = np.asarray(env.value_class().enumerate())
    assert tables.shape == (2 ** 9, 10, 2)
    assert _contains(tables, _q_star(env))
    # The default move cost's class (the old lookup by name) misses this Q*.
    assert not _contains(np.asarray(toy.deepsea_value_class(3).enumerate()), _q_star(env))


def test_envs_without_a_finite_class_have_no_hook():
    assert envs.make_env("chain").value_class is None
    assert envs.make_env("gridworld").value_class is None


def test_registry_hands_the_envs_class_to_glow_and_glow_fits_q_star():
    """Through the CLI's path (`registry.make_agent`), exact GLOW on a lured lock gets a class
    that holds Q*: after a few rounds its chosen f has zero loss and is feasible, and its greedy
    policy opens the lock. With the lure-free class no f would fit the lure's rewards."""
    config = toy.CombinationLockConfig(horizon=3, num_actions=3, code_seed=1,
                                       distractor_reward=0.25)
    env = envs.make_env("combination-lock", config)
    agent = registry.make_agent("glow", glow.Config(), env.spec, env)
    trainer = make_rounds_trainer(agent, env, env.default_params, 10)
    _, metrics = trainer.run(trainer.init(jax.random.split(jax.random.key(0), 2)))
    assert np.all(np.asarray(metrics["class_loss"][:, -1]) == 0.0)
    assert np.all(np.asarray(metrics["feasible"][:, -1]) == 1.0)
    assert np.all(np.asarray(metrics["policy_return"][:, -1]) == 1.0)
    # An agent without a value_class parameter gets none (and needs none).
    assert registry.make_agent("ppo", registry.agent_module("ppo").Config(), env.spec, env).feed


def test_glow_without_a_class_says_so():
    env = envs.make_env("chain")
    with pytest.raises(Exception, match="value_class: env 'chain' has no built-in value class"):
        registry.make_agent("glow", glow.Config(), env.spec, env)


def test_agents_never_import_envs():
    """Agents reach environments only through what the driver or the registry hands them."""
    for path in sorted((ROOT / "agents").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
                if node.module == "rlkit":
                    names += [f"rlkit.{alias.name}" for alias in node.names]
            for name in names:
                assert not (name == "envs" or name.startswith("envs.")), f"{path.name}: {name}"
                assert name != "rlkit.registry", f"{path.name} imports the CLI registry"


def test_rlkit_reaches_agents_and_envs_only_through_the_registry():
    for path in sorted((ROOT / "rlkit").rglob("*.py")):
        if path.name == "registry.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            for name in names:
                assert name.split(".")[0] not in ("agents", "envs"), f"{path}: imports {name}"


def test_no_jax_jit_in_envs():
    """The drivers own the jit boundary; the env checker compiles through rlkit.loops."""
    for path in sorted((ROOT / "envs").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "jit":
                pytest.fail(f"{path.name}:{node.lineno} uses jit")


def _imported_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys\nprint(' '.join(sorted(sys.modules)))"],
        capture_output=True, text=True, check=True, cwd=ROOT)
    return set(out.stdout.split())


def test_importing_envs_and_building_configs_imports_no_env_library():
    heavy = {"gymnax", "gymnasium", "procgen"}
    code = "\n".join([
        "import envs, rlkit.registry",
        "envs.get_env_entry('cartpole').default_config()",
        "envs.get_env_entry('gymnax:Breakout-MinAtar').default_config()",
        "envs.get_env_entry('gym:CartPole-v1').default_config()",
        "envs.get_env_entry('procgen:coinrun').default_config()",
        "rlkit.registry.env_descriptions()",
    ])
    assert not heavy & _imported_after(code)
    assert not heavy & _imported_after("import envs")


def test_gymnax_builtin_ids_match_gymnax():
    import gymnax

    from envs import gymnax_adapter

    assert set(gymnax_adapter.BUILTIN_IDS) == set(gymnax.registered_envs)
    assert len(gymnax_adapter.BUILTIN_IDS) == len(set(gymnax_adapter.BUILTIN_IDS))


def test_combination_lock_class_rows_by_hand():
    """H=2, A=2, lure 0.5: good-path rows are [[1, .5], [.5, 1]]; dead and terminal rows a
    single all-zero candidate."""
    value_class = toy.combination_lock_value_class(2, 2, 0.5)
    rows, valid = np.asarray(value_class.rows), np.asarray(value_class.valid)
    for state in (0, 2):
        np.testing.assert_array_equal(rows[state], [[1.0, 0.5], [0.5, 1.0]])
        np.testing.assert_array_equal(valid[state], [True, True])
    for state in (1, 3, 4):
        np.testing.assert_array_equal(rows[state], np.zeros((2, 2)))
        np.testing.assert_array_equal(valid[state], [True, False])
    assert len(list(itertools.product(*[np.flatnonzero(v) for v in valid]))) == 4
