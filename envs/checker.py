"""Check that an environment honours rlkit's contracts, and say in words what to fix.

`check_env` is for authors of functional JAX environments (`rlkit.types.Environment`), and
`check_host_env` for batched CPU ones (`rlkit.types.HostEnvironment`). Both collect every problem
they can find and raise one `RlkitError` listing them all, so one run shows the whole to-do list.
`model_problems` checks a `TabularModel` on its own (the tabular env uses it at build time).

Typical use, in a test of a custom environment::

    from envs.checker import check_env
    check_env(make_my_env(MyConfig()))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rlkit.errors import RlkitError
from rlkit.types import Environment, EnvSpec, HostEnvironment, HostStep, TabularModel

# Probabilities are float32 in models; rows of a few hundred entries sum to 1 within this.
_PROBABILITY_TOLERANCE = 1e-4


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


def _describe(x: Any) -> str:
    """'shape (3,) dtype float32' for arrays, the type name for anything else."""
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return f"shape {tuple(x.shape)} dtype {x.dtype}"
    return f"a Python {type(x).__name__}"


def _leaf_signatures(tree: Any) -> dict[str, tuple]:
    """{path: (shape, dtype)} of every leaf (arrays or ShapeDtypeStructs), to compare pytrees."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {
        jax.tree_util.keystr(path): (
            tuple(np.shape(leaf)),
            str(leaf.dtype if hasattr(leaf, "dtype") else np.asarray(leaf).dtype),
        )
        for path, leaf in leaves
    }


def _compare_trees(what: str, before: Any, after: Any, when: str) -> list[str]:
    """Problems when `after` differs from `before` in structure, leaf shapes or dtypes."""
    problems = []
    sig_before, sig_after = _leaf_signatures(before), _leaf_signatures(after)
    if jax.tree_util.tree_structure(before) != jax.tree_util.tree_structure(after):
        added = sorted(set(sig_after) - set(sig_before))
        removed = sorted(set(sig_before) - set(sig_after))
        problems.append(
            f"{what} changes structure {when} (added {', '.join(added) or 'none'}, removed "
            f"{', '.join(removed) or 'none'}): return the same keys / fields every step so that "
            "lax.scan can carry it"
        )
        return problems
    for path, (shape, dtype) in sig_before.items():
        new_shape, new_dtype = sig_after[path]
        if (shape, dtype) != (new_shape, new_dtype):
            problems.append(
                f"{what} leaf {path} changes from shape {shape} dtype {dtype} to shape "
                f"{new_shape} dtype {new_dtype} {when}: give it a fixed shape and dtype from "
                "the start (e.g. jnp.zeros((), jnp.int32) instead of 0)"
            )
    return problems


def _check_obs(obs: Any, spec: EnvSpec, where: str) -> list[str]:
    if not hasattr(obs, "shape") or not hasattr(obs, "dtype"):
        return [f"{where} returns an observation that is {_describe(obs)}, not an array"]
    problems = []
    if tuple(obs.shape) != tuple(spec.obs_shape):
        problems.append(
            f"{where} returns an observation of shape {tuple(obs.shape)} but spec.obs_shape is "
            f"{tuple(spec.obs_shape)}: make them agree"
        )
    if str(obs.dtype) != spec.obs_dtype:
        problems.append(
            f"{where} returns an observation of dtype {obs.dtype} but spec.obs_dtype is "
            f"{spec.obs_dtype!r}: cast it (obs.astype(jnp.{spec.obs_dtype})) or fix the spec"
        )
    return problems


def _check_scalar(name: str, x: Any, dtype: str, fix: str) -> list[str]:
    if hasattr(x, "shape") and tuple(x.shape) == () and str(x.dtype) == dtype:
        return []
    return [f"step returns {name} as {_describe(x)}, expected a {dtype} scalar (shape ()): {fix}"]


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


def model_problems(model: Any, spec: EnvSpec | None = None) -> list[str]:
    """Everything wrong with a concrete `TabularModel` (shapes, probabilities, horizon).

    Args:
        model: the model to check (concrete arrays, not tracers).
        spec: when given, the model must also agree with it (actions, observations, horizon).

    Returns:
        A list of problems in words (empty when the model is fine).
    """
    if not isinstance(model, TabularModel):
        return [f"model(params) returns {type(model).__name__}, expected rlkit.types.TabularModel"]
    problems = []
    transitions = np.asarray(model.transitions)
    if transitions.ndim != 3 or transitions.shape[0] != transitions.shape[2]:
        return [f"model.transitions must have shape [S, A, S], got {transitions.shape}"]
    num_states, num_actions, _ = transitions.shape
    if spec is not None and num_actions != spec.num_actions:
        problems.append(
            f"model.transitions has {num_actions} actions but spec.num_actions is "
            f"{spec.num_actions}"
        )
    if not np.all(np.isfinite(transitions)) or np.any(transitions < 0):
        problems.append("model.transitions has negative or non-finite probabilities")
    row_sums = transitions.sum(-1)
    bad_rows = np.argwhere(np.abs(row_sums - 1.0) > _PROBABILITY_TOLERANCE)
    if len(bad_rows):
        s, a = bad_rows[0]
        problems.append(
            f"model.transitions rows must sum to 1 over next states: {len(bad_rows)} rows do not, "
            f"e.g. P[{s}, {a}, :] sums to {row_sums[s, a]:.6f}"
        )
    rewards = np.asarray(model.rewards)
    if rewards.shape != (num_states, num_actions):
        problems.append(
            f"model.rewards must have shape [S, A] = {(num_states, num_actions)}, got "
            f"{rewards.shape}"
        )
    elif not np.all(np.isfinite(rewards)):
        problems.append("model.rewards has non-finite entries")
    terminal = np.asarray(model.terminal)
    if terminal.shape != (num_states,) or terminal.dtype != np.bool_:
        problems.append(
            f"model.terminal must be a bool array of shape [S] = ({num_states},), got "
            f"{_describe(terminal)}"
        )
    initial = np.asarray(model.initial)
    if initial.shape != (num_states,):
        problems.append(f"model.initial must have shape [S] = ({num_states},), got {initial.shape}")
    else:
        if np.any(initial < 0) or abs(initial.sum() - 1.0) > _PROBABILITY_TOLERANCE:
            problems.append(
                f"model.initial must be a probability vector, it sums to {initial.sum():.6f}"
            )
        if terminal.shape == (num_states,) and np.any(initial[terminal.astype(bool)] > 0):
            problems.append(
                "model.initial puts mass on terminal states: episodes would start already over"
            )
    observations = np.asarray(model.observations)
    if observations.shape[:1] != (num_states,):
        problems.append(
            f"model.observations must have S = {num_states} rows, got shape {observations.shape}"
        )
    elif spec is not None:
        if tuple(observations.shape[1:]) != tuple(spec.obs_shape):
            problems.append(
                f"model.observations rows have shape {observations.shape[1:]} but spec.obs_shape "
                f"is {tuple(spec.obs_shape)}"
            )
        if str(observations.dtype) != spec.obs_dtype:
            problems.append(
                f"model.observations has dtype {observations.dtype} but spec.obs_dtype is "
                f"{spec.obs_dtype!r}"
            )
    horizon = np.asarray(model.horizon)
    if horizon.shape != () or not np.issubdtype(horizon.dtype, np.integer) or horizon < 1:
        problems.append(f"model.horizon must be a positive int scalar, got {_describe(horizon)}")
    elif spec is not None and int(horizon) != spec.max_episode_steps:
        problems.append(
            f"model.horizon is {int(horizon)} but spec.max_episode_steps is "
            f"{spec.max_episode_steps}: they are the same truncation length"
        )
    return problems


def linear_mdp_problems(mdp: Any) -> list[str]:
    """Everything wrong with a concrete `rlkit.planning.LinearMDP`.

    Checks shapes ([S, A, d] features, [H, d, S] mu, [H, d] theta, [S] initial), finiteness,
    ||phi(s, a)|| <= 1, and that P_h(. | s, a) = <phi(s, a), mu_h(.)> is a probability
    distribution for every action in every state reachable at step h < H - 1 (from `initial`;
    the last step's mu is unused).

    Returns:
        A list of problems in words (empty when the model is fine).
    """
    from rlkit.planning import LinearMDP

    if not isinstance(mdp, LinearMDP):
        return [f"expected an rlkit.planning.LinearMDP, got {type(mdp).__name__}"]
    features, mu = np.asarray(mdp.features, np.float64), np.asarray(mdp.mu, np.float64)
    theta, initial = np.asarray(mdp.theta, np.float64), np.asarray(mdp.initial, np.float64)
    if features.ndim != 3:
        return [f"features must have shape [S, A, d], got {features.shape}"]
    num_states, _, dim = features.shape
    if theta.ndim != 2 or theta.shape[1] != dim:
        return [f"theta must have shape [H, d] with d = {dim}, got {theta.shape}"]
    horizon = theta.shape[0]
    problems = []
    if mu.shape != (horizon, dim, num_states):
        problems.append(f"mu must have shape [H, d, S] = {(horizon, dim, num_states)}, "
                        f"got {mu.shape}")
    if initial.shape != (num_states,):
        problems.append(f"initial must have shape [S] = ({num_states},), got {initial.shape}")
    elif np.any(initial < 0) or abs(initial.sum() - 1.0) > _PROBABILITY_TOLERANCE:
        problems.append(f"initial must be a probability vector, it sums to {initial.sum():.6f}")
    if not all(np.all(np.isfinite(x)) for x in (features, mu, theta)):
        return [*problems, "features, mu or theta has non-finite entries"]
    norms = np.linalg.norm(features, axis=-1)
    if norms.max() > 1.0 + _PROBABILITY_TOLERANCE:
        s, a = np.unravel_index(np.argmax(norms), norms.shape)
        problems.append(f"features must have norm <= 1: ||phi({s}, {a})|| = {norms[s, a]:.4f}")
    if mu.shape == (horizon, dim, num_states) and initial.shape == (num_states,) and horizon > 1:
        transitions = np.einsum("sad,hdt->hsat", features, mu[:-1])  # [H - 1, S, A, S]
        # Only states reachable at step h need distributions there (s0's features in the
        # hard-state instance, for one, are no distribution at step 1, where s0 never is).
        reachable = np.zeros((horizon - 1, num_states), bool)
        reachable[0] = initial > 0
        for h in range(horizon - 2):
            reachable[h + 1] = (transitions[h][reachable[h]] > _PROBABILITY_TOLERANCE).any((0, 1))
        if np.any((transitions < -_PROBABILITY_TOLERANCE) & reachable[:, :, None, None]):
            h, s, a, t = np.argwhere((transitions < -_PROBABILITY_TOLERANCE)
                                     & reachable[:, :, None, None])[0]
            problems.append(f"transitions must be non-negative: <phi({s}, {a}), mu_{h}({t})> = "
                            f"{transitions[h, s, a, t]:.4f}")
        sums = transitions.sum(-1)
        bad = np.argwhere((np.abs(sums - 1.0) > _PROBABILITY_TOLERANCE) & reachable[:, :, None])
        if len(bad):
            h, s, a = bad[0]
            problems.append(f"transitions must sum to 1 over next states: {len(bad)} (h, s, a) "
                            f"do not, e.g. sum_s' <phi({s}, {a}), mu_{h}(s')> = "
                            f"{sums[h, s, a]:.6f}")
    return problems


# --------------------------------------------------------------------------------------------
# Functional environments
# --------------------------------------------------------------------------------------------


def _spec_problems(spec: Any) -> list[str]:
    if not isinstance(spec, EnvSpec):
        return [f"env.spec is {type(spec).__name__}, expected rlkit.types.EnvSpec"]
    problems = []
    try:
        np.dtype(spec.obs_dtype)
    except TypeError:
        problems.append(f"spec.obs_dtype {spec.obs_dtype!r} is not a numpy dtype name")
    if spec.num_actions < 1:
        problems.append(f"spec.num_actions must be >= 1, got {spec.num_actions}")
    if spec.max_episode_steps < 1:
        problems.append(f"spec.max_episode_steps must be >= 1, got {spec.max_episode_steps}")
    return problems


def _call(problems: list[str], what: str, fn: Callable, *args) -> Any:
    """fn(*args), or None with a problem recorded when it raises."""
    try:
        return fn(*args)
    except Exception as error:  # noqa: BLE001 - any failure is a finding to report
        problems.append(f"{what} raised {_first_line(error)}")
        return None


def _rollout(env: Environment, params: Any, key: jax.Array, num_episodes: int,
             observation_noise: float = 0.0) -> dict:
    """Random-action episodes of spec.max_episode_steps steps, compiled by the drivers' helper
    (`rlkit.loops.random_episodes`: one compiled episode, run per key).

    Returns numpy summaries: when each episode first ended, and (for envs with a model) how often
    the env disagreed with its model while the episode was running.
    """
    from rlkit.loops.random_episodes import run_random_episodes

    has_model = env.model is not None and env.state_index is not None
    # Observations may scatter around the model's by declared Gaussian noise: beyond 6 standard
    # deviations in any entry is a mismatch (a false alarm has probability ~1e-9 per entry).
    tolerance = 6.0 * observation_noise

    def differs(obs, expected):
        if observation_noise == 0:
            return jnp.any(obs != expected)
        return jnp.any(jnp.abs(obs - expected) > tolerance)

    def init(obs, state, params):
        stats = {"ended_at": jnp.asarray(-1, jnp.int32)}
        if has_model:
            model = env.model(params)
            index = env.state_index(state, params)
            stats["obs_mismatch"] = differs(obs, model.observations[index]).astype(jnp.int32)
            stats["bad_initial"] = (model.initial[index] <= 0).astype(jnp.int32)
            stats["bad_transition"] = jnp.zeros((), jnp.int32)
            stats["bad_terminated"] = jnp.zeros((), jnp.int32)
        return stats

    def accumulate(stats, t, state, action, out, params):
        obs, next_state, _, terminated, truncated, _ = out
        alive = stats["ended_at"] < 0
        done = jnp.logical_or(terminated, truncated)
        stats = dict(stats)
        stats["ended_at"] = jnp.where(alive & done, t + 1, stats["ended_at"])
        if has_model:
            model = env.model(params)
            index = env.state_index(state, params)
            next_index = env.state_index(next_state, params)
            mismatch = differs(obs, model.observations[next_index])
            impossible = model.transitions[index, action, next_index] <= 0
            wrong_end = terminated != model.terminal[next_index]
            for name, flag in (
                ("obs_mismatch", mismatch),
                ("bad_transition", impossible),
                ("bad_terminated", wrong_end),
            ):
                stats[name] = stats[name] + (alive & flag).astype(jnp.int32)
        return stats

    return run_random_episodes(env, params, key, num_episodes, init, accumulate)


def _non_array_leaves(tree: Any) -> list[str]:
    """Paths of leaves that are not JAX arrays (Python numbers, numpy arrays) at trace time."""
    return [
        jax.tree_util.keystr(path)
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
        if not isinstance(leaf, jax.Array)
    ]


def _trace(problems: list[str], what: str, fn: Callable, eager_fn: Callable | None, *args) -> Any:
    """Shapes and dtypes of fn(*args) (args may be ShapeDtypeStructs), traced as jit would.

    Tracing compiles nothing, so this is cheap.

    When tracing fails, `eager_fn` (the same call on concrete arrays, if given) tells a function
    that is broken apart from one that only breaks under jit.
    """
    try:
        return jax.eval_shape(fn, *args)
    except Exception as error:  # noqa: BLE001 - any failure is a finding to report
        traced_error = error
    if eager_fn is None:
        problems.append(f"{what} raised {_first_line(traced_error)}")
        return None
    try:
        eager_fn()
    except Exception as error:  # noqa: BLE001
        problems.append(f"{what} raised {_first_line(error)}")
        return None
    problems.append(
        f"{what} is not jittable ({_first_line(traced_error)}): replace Python if / while / "
        "int() / float() on arrays with jnp.where / lax.cond / lax.while_loop, and keep shapes "
        "static"
    )
    return None


def check_env(
    env: Environment, params: Any = None, key: jax.Array | None = None, num_episodes: int = 8,
    observation_noise: float = 0.0,
) -> None:
    """Check a functional environment against the `rlkit.types.Environment` contract.

    Checks the return arity of `reset` / `step`; observation shape and dtype against the spec;
    reward a float32 scalar, terminated / truncated bool scalars; info a dict of fixed structure;
    state leaves being arrays that keep their shapes and dtypes; `reset` / `step` jittable and
    vmappable over keys; every random-action episode ending within `spec.max_episode_steps`; and,
    for envs with a model, the model's shapes and probabilities and the env's agreement with it
    (`state_index` matching the observations, transitions in the model's support, `terminated`
    matching terminal states).

    The cost is a few traces and one compilation (the rollout); more only when something fails.

    Args:
        env: the environment.
        params: env params (default: `env.default_params`).
        key: PRNG key (default: `jax.random.key(0)`).
        num_episodes: random-action episodes to roll out (one compiled episode, run per key).
        observation_noise: the std of Gaussian noise the env adds to its observations (e.g.
            `envs.tabular.with_observation_noise`); they must then lie within 6 std of the
            model's observations instead of equalling them.

    Raises:
        RlkitError: listing every problem found.
    """
    params = env.default_params if params is None else params
    key = jax.random.key(0) if key is None else key
    problems = _spec_problems(env.spec)
    name = getattr(env.spec, "name", "?")

    def fail():
        if problems:
            lines = "\n".join(f"  - {problem}" for problem in problems)
            raise RlkitError(f"env {name!r} breaks the Environment contract:\n{lines}")

    fail()  # A broken spec makes every later check meaningless.
    spec = env.spec
    reset_key, step_key, rollout_key = jax.random.split(key, 3)
    action = jnp.zeros((), jnp.int32)

    # reset and two steps, traced (not compiled): arity, types, what changes between steps.
    non_arrays: dict[str, list[str]] = {}

    def traced_reset():
        out = env.reset(reset_key, params)
        if isinstance(out, tuple) and len(out) == 2:
            non_arrays["reset's state"] = _non_array_leaves(out[1])
        return out

    out = _trace(problems, "reset(key, params)", traced_reset, lambda: env.reset(reset_key, params))
    if out is not None and (not isinstance(out, tuple) or len(out) != 2):
        got = f"a tuple of {len(out)}" if isinstance(out, tuple) else type(out).__name__
        problems.append(f"reset must return (obs, state), got {got}")
        out = None
    if out is None:
        fail()
    obs, state = out
    problems += _check_obs(obs, spec, "reset")

    def traced_step(state, label):
        def fn(state):
            out = env.step(step_key, state, action, params)
            if isinstance(out, tuple) and len(out) == 6:
                non_arrays[label] = _non_array_leaves(out[1])
            return out

        def eager():
            _, concrete_state = env.reset(reset_key, params)
            for _ in range(1 if label == "the first step's state" else 2):
                concrete_state = env.step(step_key, concrete_state, action, params)[1]

        return _trace(problems, "step(key, state, action, params)", fn, eager, state)

    out = traced_step(state, "the first step's state")
    if out is not None and (not isinstance(out, tuple) or len(out) != 6):
        got = f"a tuple of {len(out)}" if isinstance(out, tuple) else type(out).__name__
        problems.append(
            "step must return (obs, state, reward, terminated, truncated, info) (gymnax 1.0 "
            f"with terminated and truncated apart), got {got}"
        )
        out = None
    if out is None:
        fail()
    obs_1, state_1, reward, terminated, truncated, info_1 = out
    problems += _check_obs(obs_1, spec, "step")
    problems += _check_scalar("reward", reward, "float32", "return jnp.asarray(r, jnp.float32)")
    for flag_name, flag in (("terminated", terminated), ("truncated", truncated)):
        problems += _check_scalar(
            flag_name, flag, "bool", "return a comparison (e.g. t >= limit), not a 0/1 number"
        )
    info_ok = isinstance(info_1, dict)
    if not info_ok:
        problems.append(f"step returns info as {type(info_1).__name__}, expected a dict of arrays")
    problems += _compare_trees("state", state, state_1, "between reset and the first step")
    out = traced_step(state_1, "the second step's state")
    if out is not None and isinstance(out, tuple) and len(out) == 6:
        _, state_2, _, _, _, info_2 = out
        problems += _compare_trees("state", state_1, state_2, "between the first and second step")
        if info_ok:
            problems += _compare_trees("info", info_1, info_2, "between the first and second step")
    for what, paths in non_arrays.items():
        problems += [
            f"{what} leaf {path} is not a JAX array (a Python number or numpy array): wrap it, "
            "e.g. jnp.asarray(x, jnp.int32), so its dtype and shape are fixed"
            for path in paths
        ]

    # vmap over keys (and the states they produce), traced only: failures show at trace time.
    keys = jax.random.split(step_key, 3)
    batched = _trace(
        problems, "jax.vmap(reset) over keys", jax.vmap(env.reset, (0, None)), None, keys, params
    )
    if batched is not None:
        batched = _trace(
            problems,
            "jax.vmap(step) over keys and states",
            jax.vmap(env.step, (0, 0, 0, None)),
            None,
            keys,
            batched[1],
            jnp.zeros((3,), jnp.int32),
            params,
        )
        if batched is None:
            problems[-1] += (
                " -- step is not vmappable: write it for one unbatched environment, without "
                "host callbacks (or give them a vmap_method) or Python-side batching"
            )
        elif tuple(batched[0].shape) != (3, *spec.obs_shape):
            problems.append(
                f"vmapped step returns observations of shape {tuple(batched[0].shape)}, "
                f"expected {(3, *spec.obs_shape)}"
            )

    # The exact model, when the env has one.
    model_ok = False
    if env.state_index is not None and env.model is None:
        problems.append("env.state_index is set but env.model is None: set both or neither")
    if env.model is not None:
        model = _call(problems, "model(params)", env.model, params)
        if model is not None:
            found = model_problems(model, spec)
            problems += found
            model_ok = not found
    fail()  # The rollout needs working types; report those first.

    # Random-action episodes, compiled as the drivers run them.
    checked_env = env if model_ok else env._replace(model=None, state_index=None)
    try:
        stats = _rollout(checked_env, params, rollout_key, num_episodes, observation_noise)
    except Exception as error:  # noqa: BLE001 - any failure is a finding to report
        problems.append(
            "rolling out random-action episodes with jit(lax.scan(step)) raised "
            f"{_first_line(error)}"
        )
        fail()
    never_ended = int(np.sum(stats["ended_at"] < 0))
    if never_ended:
        problems.append(
            f"{never_ended} of {num_episodes} random-action episodes neither terminated nor "
            f"truncated within spec.max_episode_steps={spec.max_episode_steps} steps: step must "
            "return truncated=True when the step counter reaches the time limit (or "
            "spec.max_episode_steps is larger than the env's limit)"
        )
    messages = {
        "obs_mismatch": "observations differ from model.observations[state_index(state)]: "
        "state_index or model.observations is inconsistent with the env",
        "bad_initial": "reset starts in states that model.initial gives probability 0: "
        "state_index or model.initial is inconsistent with reset",
        "bad_transition": "step makes transitions that model.transitions gives probability 0: "
        "state_index or model.transitions is inconsistent with step",
        "bad_terminated": "step's terminated flag disagrees with model.terminal of the next state",
    }
    for stat, message in messages.items():
        count = int(np.sum(stats.get(stat, 0)))
        if count:
            problems.append(f"{message} ({count} times in {num_episodes} episodes)")
    fail()


# --------------------------------------------------------------------------------------------
# Host environments
# --------------------------------------------------------------------------------------------


def _check_host_array(
    problems: list[str], name: str, x: Any, shape: tuple, dtype_ok: Callable, dtype_name: str
) -> bool:
    if not isinstance(x, np.ndarray):
        problems.append(f"step().{name} is {type(x).__name__}, expected a numpy array")
        return False
    if x.shape != shape or not dtype_ok(x.dtype):
        problems.append(
            f"step().{name} has shape {x.shape} dtype {x.dtype}, expected shape {shape} "
            f"dtype {dtype_name}"
        )
        return False
    return True


def check_host_env(env: HostEnvironment, seed: int = 0, max_steps: int | None = None) -> None:
    """Check a batched CPU environment against the `rlkit.types.HostEnvironment` contract.

    Checks `reset(seed)` and `step(actions)` shapes and dtypes ([num_envs, ...] numpy arrays,
    observations as the spec says, float rewards, bool terminated / truncated), that `step`
    returns a `HostStep` with `final_obs` equal to `obs` wherever no episode ended, and that every
    environment finishes an episode within `spec.max_episode_steps` random steps.

    Args:
        env: the host environment (not closed by this function).
        seed: the reset seed.
        max_steps: steps to run (default `spec.max_episode_steps`); with fewer, the check that
            episodes end is skipped.

    Raises:
        RlkitError: listing every problem found.
    """
    problems = _spec_problems(getattr(env, "spec", None))
    num_envs = getattr(env, "num_envs", None)
    if not isinstance(num_envs, int) or num_envs < 1:
        problems.append(f"env.num_envs must be a positive int, got {num_envs!r}")
    name = getattr(getattr(env, "spec", None), "name", "?")

    def fail():
        if problems:
            lines = "\n".join(f"  - {problem}" for problem in problems)
            raise RlkitError(f"host env {name!r} breaks the HostEnvironment contract:\n{lines}")

    fail()
    spec = env.spec
    obs_shape = (num_envs, *spec.obs_shape)
    obs_dtype = np.dtype(spec.obs_dtype)
    obs = _call(problems, "reset(seed)", env.reset, seed)
    if obs is not None:
        if not isinstance(obs, np.ndarray):
            problems.append(f"reset returns {type(obs).__name__}, expected a numpy array")
        elif obs.shape != obs_shape or obs.dtype != obs_dtype:
            problems.append(
                f"reset returns observations of shape {obs.shape} dtype {obs.dtype}, expected "
                f"shape {obs_shape} dtype {obs_dtype} ([num_envs, *spec.obs_shape])"
            )
    fail()
    rng = np.random.default_rng(seed)
    num_steps = spec.max_episode_steps if max_steps is None else max_steps
    ended = np.zeros(num_envs, bool)
    for _ in range(num_steps):
        actions = rng.integers(0, spec.num_actions, num_envs).astype(np.int32)
        out = _call(problems, "step(actions)", env.step, actions)
        if out is None:
            break
        if not isinstance(out, HostStep):
            missing = [f for f in HostStep._fields if not hasattr(out, f)]
            problems.append(
                f"step returns {type(out).__name__}, expected rlkit.types.HostStep"
                + (f" (missing {', '.join(missing)})" if missing else "")
            )
            break
        ok = _check_host_array(
            problems, "obs", out.obs, obs_shape, lambda d: d == obs_dtype, str(obs_dtype)
        )
        ok &= _check_host_array(
            problems,
            "final_obs",
            out.final_obs,
            obs_shape,
            lambda d: d == obs_dtype,
            str(obs_dtype),
        )
        ok &= _check_host_array(
            problems,
            "reward",
            out.reward,
            (num_envs,),
            lambda d: np.issubdtype(d, np.floating),
            "float32",
        )
        for flag in ("terminated", "truncated"):
            ok &= _check_host_array(
                problems, flag, getattr(out, flag), (num_envs,), lambda d: d == np.bool_, "bool"
            )
        if not ok:
            break
        done = out.terminated | out.truncated
        if np.any(out.obs[~done] != out.final_obs[~done]):
            problems.append(
                "step().final_obs differs from obs for environments that did not end: final_obs "
                "must be the true next observation, equal to obs unless the env was reset"
            )
            break
        ended |= done
    else:
        if num_steps >= spec.max_episode_steps and not ended.all():
            problems.append(
                f"{int((~ended).sum())} of {num_envs} environments did not end an episode within "
                f"spec.max_episode_steps={spec.max_episode_steps} random steps: truncate at the "
                "time limit (or fix spec.max_episode_steps)"
            )
    fail()
