"""Host environments and custom environments (issue 11 items 11, 13, 14, 18 and 19).

- Env seeds come from `SeedSequence`: runs with seeds 0 and 1 share no environment seed.
- `--env gym:module:Id` imports the module first; `--env module:factory` builds a user's JAX env.
- A gymnasium family whose optional dependency is missing fails with one line naming the extra.
- The host driver hands the true final observation at every truncation, however many there are
  per rollout, and reports progress within a chunk.
"""

from __future__ import annotations

import importlib.util
import sys
import textwrap
import tomllib
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from envs import gymnasium_adapter
from rlkit import registry
from rlkit.errors import RlkitError
from rlkit.loops.host import make_host_trainer, reset_seed
from rlkit.types import Agent, Environment, OnPolicyFeed

# A gymnasium env that truncates on its own every 3 steps (as ../shared/cases/gym_cases.py's
# SelfTrunc-v0): observation [t / 3, episode tag], so a final observation (t = 3) can be told
# from the next episode's reset observation (t = 0).
SELF_TRUNC_MODULE = '''
import gymnasium as gym
import numpy as np
from gymnasium import spaces


class SelfTruncEnv(gym.Env):
    def __init__(self, every: int = 3):
        self.observation_space = spaces.Box(-10.0, 10.0, (2,), np.float32)
        self.action_space = spaces.Discrete(2)
        self.every = every
        self.episode = 0

    def _obs(self):
        return np.array([self.t / 3.0, (self.episode % 97) / 97.0], np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        self.episode += 1 + int(self.np_random.integers(0, 50))
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        return self._obs(), 1.0, False, self.t >= self.every, {}


gym.register(id="SelfTrunc_ID-v0", entry_point=f"{__name__}:SelfTruncEnv",
             max_episode_steps=100)
'''

JAX_MODULE = '''
from dataclasses import dataclass

import jax.numpy as jnp

from rlkit.types import Environment, EnvSpec


@dataclass(frozen=True)
class CounterConfig:
    limit: int = 4
    """Episode length."""


def make_counter(config: CounterConfig) -> Environment:
    spec = EnvSpec("counter", (1,), "float32", 2, config.limit)

    def reset(key, params):
        return jnp.zeros((1,), jnp.float32), jnp.zeros((), jnp.int32)

    def step(key, state, action, params):
        state = state + 1
        return (state[None].astype(jnp.float32), state, jnp.asarray(1.0, jnp.float32),
                jnp.asarray(False), state >= config.limit, {})

    return Environment(spec, None, reset, step)


def make_fixed():
    return make_counter(CounterConfig(limit=2))


def make_wrong():
    return "not an env"


def make_bad_shape():
    """Its spec promises observations of shape (6,); it emits (1,)."""
    env = make_counter(CounterConfig())
    return env._replace(spec=env.spec.__class__("bad", (6,), "float32", 2, 4))


def needs_two(a, b):
    return None
'''


@pytest.fixture
def user_modules(tmp_path, monkeypatch):
    """Two small user modules on sys.path, with unique names per test."""
    suffix = tmp_path.name.replace("-", "_")
    gym_name, jax_name = f"user_gym_{suffix}", f"user_jax_{suffix}"
    gym_module = textwrap.dedent(SELF_TRUNC_MODULE).replace("_ID", suffix)
    (tmp_path / f"{gym_name}.py").write_text(gym_module)
    (tmp_path / f"{jax_name}.py").write_text(textwrap.dedent(JAX_MODULE))
    (tmp_path / "broken_mod.py").write_text("raise ValueError('boom\\nsecond line')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield f"{gym_name}:SelfTrunc{suffix}-v0", jax_name
    for name in (gym_name, jax_name, "broken_mod"):
        sys.modules.pop(name, None)


# --------------------------------------------------------------------------------------------
# Seeds (item 13)
# --------------------------------------------------------------------------------------------


def test_env_seeds_of_neighbouring_run_seeds_are_disjoint_and_reproducible():
    seeds_0 = gymnasium_adapter.env_seeds(0, 64)
    seeds_1 = gymnasium_adapter.env_seeds(1, 64)
    assert len(set(seeds_0)) == 64 and len(set(seeds_1)) == 64
    assert not set(seeds_0) & set(seeds_1)  # gymnasium's seed + i shared 63 of 64
    assert seeds_0 == gymnasium_adapter.env_seeds(0, 64)
    assert gymnasium_adapter.env_seeds(0, 8) == seeds_0[:8]  # env i's seed ignores N
    assert all(0 <= s < 2**64 for s in seeds_0)
    # The host driver's reset seeds: per run seed, stream and count, below procgen's 2^31.
    resets = {(s, stream, c): reset_seed(s, stream, c)
              for s in range(4) for stream in (0, 1) for c in range(4)}
    assert len(set(resets.values())) == len(resets)
    assert all(0 <= v < 2**31 for v in resets.values())
    assert reset_seed(3, 0, 1) == reset_seed(3, 0, 1)


def test_gymnasium_runs_with_seeds_0_and_1_play_different_episodes():
    """Env 1 of seed 0 and env 0 of seed 1 were the same CartPole under seed + i."""
    first = gymnasium_adapter.make(gymnasium_adapter.Config(), 4, 0)
    second = gymnasium_adapter.make(gymnasium_adapter.Config(), 4, 1)
    obs_0, obs_1 = first.reset(0), second.reset(1)
    for row in obs_0:
        assert not np.any(np.all(obs_1 == row, axis=1))
    np.testing.assert_array_equal(obs_0, first.reset(0))
    import gymnasium

    reference = gymnasium.make("CartPole-v1")
    seed_2 = gymnasium_adapter.env_seeds(0, 4)[2]
    np.testing.assert_array_equal(obs_0[2], reference.reset(seed=seed_2)[0])
    first.close()
    second.close()


# --------------------------------------------------------------------------------------------
# Custom environments (item 14)
# --------------------------------------------------------------------------------------------


def test_gym_module_id_imports_the_module_first(user_modules):
    gym_id, _ = user_modules
    env = registry.make_host_env(f"gym:{gym_id}", None, 2, 0)
    assert env.spec.name == f"gym:{gym_id}"
    assert env.spec.obs_shape == (2,) and env.spec.num_actions == 2
    assert env.spec.max_episode_steps == 100
    obs = env.reset(0)
    np.testing.assert_array_equal(obs[:, 0], 0.0)
    env.close()


def test_gym_module_errors_are_one_line(user_modules):
    gym_id, _ = user_modules
    gym_module = gym_id.partition(":")[0]
    cases = [
        ("gym:no_such_module_xyz:Foo-v0", "cannot import module 'no_such_module_xyz'"),
        (f"gym:{gym_module}:Missing-v0", "unknown gymnasium env id 'Missing-v0'"),
        ("gym:broken_mod:Foo-v0", "importing 'broken_mod'.*ValueError: boom"),
    ]
    for name, message in cases:
        with pytest.raises(RlkitError, match=message) as error:
            registry.make_host_env(name, None, 1, 0)
        assert "\n" not in str(error.value)


def test_jax_factory_by_import_path(user_modules):
    _, jax_name = user_modules
    entry = registry.env_entry(f"{jax_name}:make_counter")
    assert entry.kind == "jax"
    config = entry.default_config()
    assert type(config).__name__ == "CounterConfig" and config.limit == 4
    env = registry.make_env(f"{jax_name}:make_counter", type(config)(limit=3))
    assert isinstance(env, Environment) and env.spec.max_episode_steps == 3
    obs, state = env.reset(jax.random.key(0), None)
    for _ in range(3):
        obs, state, reward, terminated, truncated, _ = env.step(
            jax.random.key(0), state, jnp.int32(0), None)
    assert bool(truncated) and float(obs[0]) == 3.0
    # A factory without parameters has an empty config.
    fixed = registry.make_env(f"{jax_name}:make_fixed", None)
    assert fixed.spec.max_episode_steps == 2
    assert registry.env_entry(f"{jax_name}:make_fixed").default_config() == envs.NoConfig()
    # Listed in --help.
    assert "MODULE:FACTORY" in registry.env_descriptions()


def test_a_users_env_is_checked_once_before_training_in_one_line(user_modules, tmp_path, capfd):
    from rlkit.train import main

    _, jax_name = user_modules
    good = registry.make_env(f"{jax_name}:make_counter", None)
    registry.check_env(good, f"{jax_name}:make_counter")  # a conforming env passes
    code = main(["ppo", "--env", f"{jax_name}:make_bad_shape", "--total-steps", "1024",
                 "--no-progress", "--run-dir", str(tmp_path / "run")])
    err = capfd.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "breaks the Environment contract" in err[0] and "(6,)" in err[0], err[0]
    assert not (tmp_path / "run").exists()


def test_jax_factory_errors_are_one_line(user_modules):
    _, jax_name = user_modules
    cases = [
        ("no_such_module_xyz:make", "neither an env family .* nor an importable module"),
        ("gymx:CartPole-v1", "Did you mean 'gym' or 'gymnax'"),
        (f"{jax_name}:missing", rf"{jax_name}.missing does not exist.*make_counter"),
        (f"{jax_name}:needs_two", "no parameters or one config parameter annotated"),
        (f"{jax_name}:make_wrong", "returned str, expected an rlkit.types.Environment"),
        ("broken_mod:make", "importing 'broken_mod' failed: ValueError: boom"),
    ]
    for name, message in cases:
        with pytest.raises(RlkitError, match=message) as error:
            registry.make_env(name, None)
        assert "\n" not in str(error.value)


# --------------------------------------------------------------------------------------------
# Optional dependencies (item 18)
# --------------------------------------------------------------------------------------------


@pytest.mark.skipif(importlib.util.find_spec("Box2D") is not None, reason="Box2D is installed")
def test_lunar_lander_without_box2d_names_the_extra():
    with pytest.raises(RlkitError) as error:
        registry.make_host_env("gym:LunarLander-v3", None, 1, 0)
    message = str(error.value)
    assert "\n" not in message
    assert "optional extra 'box2d'" in message and "pip install 'rlkit[box2d]'" in message


@pytest.mark.skipif(importlib.util.find_spec("mujoco") is not None, reason="mujoco is installed")
def test_mujoco_family_names_its_extra():
    with pytest.raises(RlkitError, match=r"optional extra 'mujoco'.*rlkit\[mujoco\]"):
        registry.make_host_env("gym:Ant-v5", None, 1, 0)


@pytest.mark.skipif(importlib.util.find_spec("ale_py") is not None, reason="ale_py is installed")
def test_atari_ids_name_their_extra():
    with pytest.raises(RlkitError, match=r"optional extra 'atari'.*rlkit\[atari\]"):
        registry.make_host_env("gym:ALE/Pong-v5", None, 1, 0)
    with pytest.raises(RlkitError, match=r"optional extra 'atari'.*rlkit\[atari\]"):
        registry.make_host_env("gym:ale_py:ALE/Pong-v5", None, 1, 0)


def test_every_extra_named_by_the_adapter_is_declared():
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    extras = pyproject["project"]["optional-dependencies"]
    for extra in gymnasium_adapter.EXTRAS.values():
        assert extra in extras and any(f"gymnasium[{extra}]" in r for r in extras[extra])


# --------------------------------------------------------------------------------------------
# The host driver (items 11 and 19)
# --------------------------------------------------------------------------------------------


def _probe_agent(num_envs: int, rollout_length: int) -> Agent:
    """An agent that learns nothing and reports, per rollout, what it was handed."""

    def init(key):
        return {"count": jnp.zeros((), jnp.int32)}

    def act(state, obs, key, step):
        return jnp.zeros(obs.shape[0], jnp.int32), {}

    def update(state, batch, key):
        truncated = batch.truncated  # [T, N]
        final_t = batch.next_obs[..., 0]  # [T, N] step index / 3 of the observation handed
        metrics = {
            "truncations": truncated.sum(),
            # At a truncation the next_obs must be the episode's last (t = 3, i.e. 1.0) ...
            "wrong_final": (truncated & (final_t != 1.0)).sum(),
            # ... and elsewhere the observation one step on.
            "wrong_next": (~truncated & (jnp.abs(final_t - batch.obs[..., 0] - 1 / 3) > 1e-5))
            .sum(),
            # The same episode tag as the obs the step started from.
            "wrong_episode": (batch.next_obs[..., 1] != batch.obs[..., 1]).sum(),
        }
        return {"count": state["count"] + 1}, {k: v.astype(jnp.float32) for k, v in
                                                metrics.items()}

    def policy(state, obs):
        return jnp.full((obs.shape[0], 2), 0.5)

    return Agent(init, act, update, policy, OnPolicyFeed(num_envs, rollout_length))


def test_host_driver_hands_the_final_obs_at_every_truncation(user_modules):
    """SelfTrunc truncates every 3 steps: 10-step rollouts hold 3 truncations per env, and
    every truncated step's next_obs is the true final observation, not the reset one."""
    gym_id, _ = user_modules
    name = f"gym:{gym_id}"
    agent = _probe_agent(num_envs=2, rollout_length=10)
    trainer = make_host_trainer(
        agent, lambda num_envs, seed: registry.make_host_env(name, None, num_envs, seed),
        num_seeds=2, seed=0, iterations_per_chunk=3, num_eval_episodes=2)
    carry = trainer.init(jax.random.split(jax.random.key(0), 2))
    reported = []
    trainer.report_progress(reported.append)
    carry, metrics = trainer.run(carry)
    trainer.close()
    # 3 rollouts of 10 steps x 2 envs per seed: truncations at steps 3, 6, 9 of each 3-step
    # episode, counted over 30 steps = 10 per env, 20 per seed.
    np.testing.assert_array_equal(np.asarray(metrics["truncations"]).sum(axis=1), [20, 20])
    for name in ("wrong_final", "wrong_next", "wrong_episode"):
        np.testing.assert_array_equal(np.asarray(metrics[name]), 0.0, err_msg=name)
    # Progress: one report per batched env step, in env steps per seed.
    assert reported == [2] * 30


def test_import_user_module_turns_every_failure_into_one_line(tmp_path, monkeypatch):
    from rlkit.errors import RlkitError, import_user_module

    (tmp_path / "raises_on_import.py").write_text("raise ValueError('bad value\\nsecond line')\n")
    (tmp_path / "imports_missing.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert import_user_module("json", "importing 'json'", lambda error: None).dumps(1) == "1"
    with pytest.raises(RlkitError) as error:  # the module raises: its type and first line
        import_user_module("raises_on_import", "importing 'raises_on_import'", lambda e: None)
    assert str(error.value) == "importing 'raises_on_import' failed: ValueError: bad value"
    with pytest.raises(RlkitError) as error:  # not found, and the caller has no own message
        import_user_module("imports_missing", "importing 'imports_missing'", lambda e: None)
    assert str(error.value) == ("importing 'imports_missing' failed: No module named "
                                "'no_such_dependency_xyz'.")
    with pytest.raises(RlkitError, match="^mine: no_such_module_xyz$"):  # the caller's message
        import_user_module("no_such_module_xyz", "unused",
                           lambda e: RlkitError(f"mine: {e.name}"))
