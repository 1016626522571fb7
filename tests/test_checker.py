"""The env checker: accepts every toy env, and names each problem of deliberately broken ones."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from envs import tabular, toy
from envs.checker import check_env, check_host_env, model_problems
from rlkit.errors import RlkitError
from rlkit.types import EnvSpec, HostStep

GOOD_ENVS = {
    **{
        name: (lambda name=name: envs.make_env(name))
        for name in ["chain", "riverswim", "combination-lock", "deepsea", "gridworld", "tabular"]
    },
    "deepsea-stochastic": lambda: toy.make_deepsea(toy.DeepSeaConfig(size=4, deterministic=False)),
    "tabular-terminal-noise": lambda: tabular.make(
        tabular.Config(num_states=5, num_actions=2, horizon=6, num_terminal=1, reward_noise_std=0.3)
    ),
}


@pytest.mark.parametrize("name", sorted(GOOD_ENVS))
def test_accepts_every_toy_env(name):
    check_env(GOOD_ENVS[name]())


# --------------------------------------------------------------------------------------------
# Broken environments: a small chain with one thing wrong each
# --------------------------------------------------------------------------------------------


def _chain():
    return toy.make_chain(toy.ChainConfig(length=3, horizon=4))


def _with_step(transform):
    """The chain with step's outputs passed through transform(outputs, state) -> outputs."""
    env = _chain()

    def step(key, state, action, params):
        return transform(env.step(key, state, action, params), state)

    return env._replace(step=step)


def _reward_int(out, state):
    obs, next_state, reward, terminated, truncated, info = out
    return obs, next_state, reward.astype(jnp.int32), terminated, truncated, info


def _terminated_float(out, state):
    obs, next_state, reward, terminated, truncated, info = out
    return obs, next_state, reward, terminated.astype(jnp.float32), truncated, info


def _five_outputs(out, state):  # gym-style done
    obs, next_state, reward, terminated, truncated, info = out
    return obs, next_state, reward, terminated | truncated, info


def _obs_int(out, state):
    obs, *rest = out
    return (obs.astype(jnp.int32), *rest)


def _obs_batched(out, state):
    obs, *rest = out
    return (obs[None], *rest)


def _info_list(out, state):
    *rest, info = out
    return (*rest, [])


def _state_dtype_drift(out, state):
    obs, next_state, reward, terminated, truncated, info = out
    return (
        obs,
        next_state.replace(step=next_state.step.astype(jnp.float32)),
        reward,
        terminated,
        truncated,
        info,
    )


def _never_truncates(out, state):
    obs, next_state, reward, terminated, truncated, info = out
    return obs, next_state, reward, terminated, jnp.zeros((), jnp.bool_), info


def _python_branch(out, state):
    obs, next_state, reward, terminated, truncated, info = out
    if truncated:  # a Python branch on an array: fine eagerly, fails under jit
        reward = reward + 1.0
    return obs, next_state, reward, terminated, truncated, info


def _host_callback(out, state):
    obs, next_state, reward, terminated, truncated, info = out
    reward = jax.pure_callback(  # no vmap_method: cannot be vmapped
        lambda r: np.asarray(r, np.float32), jax.ShapeDtypeStruct((), jnp.float32), reward
    )
    return obs, next_state, reward, terminated, truncated, info


def _dict_state_env():
    """State as a dict that gains and loses a key every other step; info mirrors it."""
    env = _chain()

    def reset(key, params):
        obs, state = env.reset(key, params)
        return obs, {"index": state.index, "step": state.step}

    def step(key, state, action, params):
        as_tabular = tabular.TabularState(index=state["index"], step=state["step"])
        obs, next_state, reward, terminated, truncated, _ = env.step(
            key, as_tabular, action, params
        )
        new_state = {"index": next_state.index, "step": next_state.step}
        if "extra" not in state:
            new_state["extra"] = jnp.zeros(())
        return obs, new_state, reward, terminated, truncated, dict(new_state)

    return env._replace(reset=reset, step=step, model=None, state_index=None)


def _reset_three():
    env = _chain()
    return env._replace(reset=lambda key, params: (*env.reset(key, params), {}))


def _reset_python_int():
    env = _chain()

    def reset(key, params):
        obs, state = env.reset(key, params)
        return obs, state.replace(step=0)

    return env._replace(reset=reset)


def _bad_model():
    env = _chain()

    def model(params):
        m = params.model
        return m.replace(transitions=m.transitions * 0.9, horizon=jnp.asarray(7, jnp.int32))

    return env._replace(model=model)


def _shifted_state_index():
    env = _chain()
    return env._replace(state_index=lambda state, params: (state.index + 1) % 3)


BROKEN = {
    "reset arity": (_reset_three, ["reset must return (obs, state)"]),
    "step arity": (lambda: _with_step(_five_outputs), ["terminated and truncated apart"]),
    "obs dtype": (lambda: _with_step(_obs_int), ["dtype int32 but spec.obs_dtype is 'float32'"]),
    "obs shape": (lambda: _with_step(_obs_batched), ["shape (1, 3) but spec.obs_shape is (3,)"]),
    "reward dtype": (lambda: _with_step(_reward_int), ["reward as shape () dtype int32"]),
    "terminated dtype": (lambda: _with_step(_terminated_float), ["terminated as shape ()"]),
    "info type": (lambda: _with_step(_info_list), ["info as list"]),
    "state drift": (
        lambda: _with_step(_state_dtype_drift),
        ["state leaf .step changes from shape () dtype int32 to shape () dtype float32"],
    ),
    "structure drift": (
        _dict_state_env,
        [
            "state changes structure between reset and the first "
            "step (added ['extra'], removed none)",
            "info changes structure between the first and second "
            "step (added none, removed ['extra'])",
        ],
    ),
    "python int state": (_reset_python_int, ["reset's state leaf .step is not a JAX array"]),
    "not jittable": (lambda: _with_step(_python_branch), ["is not jittable"]),
    "not vmappable": (lambda: _with_step(_host_callback), ["step is not vmappable"]),
    "never truncates": (
        lambda: _with_step(_never_truncates),
        [
            "8 of 8 random-action episodes neither terminated nor truncated within "
            "spec.max_episode_steps=4"
        ],
    ),
    "bad model": (
        _bad_model,
        ["rows must sum to 1", "model.horizon is 7 but spec.max_episode_steps is 4"],
    ),
    "state_index": (
        _shifted_state_index,
        [
            "observations differ from model.observations",
            "reset starts in states that model.initial gives",
        ],
    ),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_rejects_broken_env_naming_the_problem(name):
    make, expected = BROKEN[name]
    with pytest.raises(RlkitError) as error:
        check_env(make())
    message = str(error.value)
    assert message.startswith("env 'chain' breaks the Environment contract:")
    for phrase in expected:
        assert phrase in message, message


def test_lists_every_problem_at_once():
    def transform(out, state):
        return _terminated_float(_reward_int(_obs_int(out, state), state), state)

    with pytest.raises(RlkitError) as error:
        check_env(_with_step(transform))
    lines = [line for line in str(error.value).splitlines() if line.startswith("  - ")]
    assert len(lines) == 3, lines
    assert "observation of dtype int32" in lines[0]
    assert "reward" in lines[1] and "terminated" in lines[2]


def test_model_problems_on_a_hand_broken_model():
    model = toy.chain_model(toy.ChainConfig(length=3, horizon=4))
    spec = EnvSpec("chain", (3,), "float32", 2, 4)
    assert model_problems(model, spec) == []
    bad = model.replace(
        rewards=model.rewards[:, :1],
        initial=jnp.asarray([0.5, 0.0, 0.0]),
        observations=model.observations.astype(jnp.int32),
    )
    problems = model_problems(bad, spec)
    assert any("model.rewards must have shape [S, A] = (3, 2)" in p for p in problems)
    assert any("model.initial must be a probability vector" in p for p in problems)
    assert any("model.observations has dtype int32" in p for p in problems)
    wrong_actions = EnvSpec("chain", (3,), "float32", 4, 4)
    assert any(
        "2 actions but spec.num_actions is 4" in p for p in model_problems(model, wrong_actions)
    )


# --------------------------------------------------------------------------------------------
# Host environments
# --------------------------------------------------------------------------------------------


class NumpyChain:
    """A batched numpy chain that auto-resets: a minimal correct HostEnvironment."""

    def __init__(
        self, num_envs=3, length=4, limit=5, *, final_obs=True, bool_flags=True, truncate=True
    ):
        self.spec = EnvSpec("numpy-chain", (length,), "float32", 2, limit)
        self.num_envs = num_envs
        self.length, self.limit = length, limit
        self.final_obs, self.bool_flags, self.truncate = final_obs, bool_flags, truncate

    def _obs(self):
        return np.eye(self.length, dtype=np.float32)[self.position]

    def reset(self, seed):
        self.position = np.zeros(self.num_envs, int)
        self.t = np.zeros(self.num_envs, int)
        return self._obs()

    def step(self, actions):
        self.position = np.clip(self.position + np.where(actions == 1, 1, -1), 0, self.length - 1)
        self.t += 1
        reward = (self.position == self.length - 1).astype(np.float32)
        terminated = np.zeros(self.num_envs, bool)
        truncated = (self.t >= self.limit) & self.truncate
        final = self._obs()
        done = terminated | truncated
        self.position[done], self.t[done] = 0, 0
        flags = (terminated, truncated) if self.bool_flags else (terminated * 1.0, truncated * 1.0)
        if not self.final_obs:
            return self._obs(), reward, *flags
        return HostStep(self._obs(), reward, *flags, final)


def test_check_host_env_accepts_a_correct_env():
    check_host_env(NumpyChain())


@pytest.mark.parametrize(
    "kwargs, phrase",
    [
        ({"final_obs": False}, "expected rlkit.types.HostStep"),
        ({"bool_flags": False}, "step().terminated has shape (3,) dtype float64, expected"),
        ({"truncate": False}, "3 of 3 environments did not end an episode within"),
    ],
)
def test_check_host_env_rejects_broken_envs(kwargs, phrase):
    with pytest.raises(RlkitError) as error:
        check_host_env(NumpyChain(**kwargs))
    assert phrase in str(error.value), str(error.value)


def test_check_host_env_catches_final_obs_that_is_not_the_true_next_obs():
    env = NumpyChain()
    step = env.step

    def bad_step(actions):
        out = step(actions)
        return out._replace(final_obs=np.zeros_like(out.final_obs))

    env.step = bad_step
    with pytest.raises(RlkitError, match="final_obs differs from obs"):
        check_host_env(env)
