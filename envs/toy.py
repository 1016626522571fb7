"""Toy MDPs with exact models: chain, RiverSwim, combination lock, DeepSea, grid world.

Each is a `TabularModel` built by a `<name>_model` function and turned into an environment by
`envs.tabular.make_tabular_env`, so every one exposes `env.model(params)` for `rlkit.planning`.
The model builders of the lock and DeepSea take their randomness (the code, the action mapping)
as arrays: numpy arrays build the model on the host, JAX arrays build it with jnp, so one MDP per
seed is either a stack of host-built params or a `jax.vmap` over JAX codes:

    codes = jnp.stack([jnp.asarray(combination_lock_code(seed, 5, 4)) for seed in range(8)])
    params = jax.vmap(lambda code: tabular.make_params(combination_lock_model(code, 4)))(codes)

Time-dependent MDPs (lock, DeepSea) put the step index into the state, so their models are
stationary and their episodes end by termination after exactly H steps, never by truncation.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np

from envs.tabular import make_tabular_env, model_from_numpy, with_observation_noise
from rlkit.density_ratio import ProductValueClass
from rlkit.errors import require
from rlkit.types import Array, Environment, TabularModel

LEFT, RIGHT = 0, 1


# --------------------------------------------------------------------------------------------
# Chain
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChainConfig:
    """A deterministic chain: start at the left end, walk right to the rewarding end.

    Action 0 moves left, action 1 moves right (walls at both ends). Pushing right at the right end
    pays `right_reward`; pushing left at the left end pays `left_reward`. Nothing terminates; with
    horizon H and length n the optimal return is max(H - n + 1, H * left_reward) for
    right_reward 1.
    """

    length: int = 8
    """Number of states n in the chain."""
    horizon: int = 16
    """Episode length H; must be at least `length` for the right end to pay at all."""
    left_reward: float = 0.0
    """Reward of pushing left at the left end, a distractor (0.01 makes the chain a trap)."""
    right_reward: float = 1.0
    """Reward of pushing right at the right end."""

    def __post_init__(self):
        require(self.length >= 2, "length", f"must be >= 2, got {self.length}")
        require(
            self.horizon >= self.length,
            "horizon",
            f"must be >= length ({self.length}) so the right end can be reached and pay, got "
            f"{self.horizon}",
        )
        require(self.left_reward >= 0, "left_reward", f"must be >= 0, got {self.left_reward}")
        require(self.right_reward > 0, "right_reward", f"must be > 0, got {self.right_reward}")


def chain_model(config: ChainConfig) -> TabularModel:
    """The exact model of the chain ([n, 2, n] deterministic transitions)."""
    n = config.length
    transitions = np.zeros((n, 2, n))
    states = np.arange(n)
    transitions[states, LEFT, np.maximum(states - 1, 0)] = 1.0
    transitions[states, RIGHT, np.minimum(states + 1, n - 1)] = 1.0
    rewards = np.zeros((n, 2))
    rewards[0, LEFT] = config.left_reward
    rewards[n - 1, RIGHT] = config.right_reward
    initial = np.eye(n)[0]
    return model_from_numpy(transitions, rewards, np.zeros(n, bool), initial, config.horizon)


def make_chain(config: ChainConfig) -> Environment:
    """The chain environment (observations: one-hot of the position, [length])."""
    return make_tabular_env(chain_model(config), "chain")


# --------------------------------------------------------------------------------------------
# RiverSwim
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RiverSwimConfig:
    """RiverSwim (Strehl & Littman 2008): swimming left is easy, swimming right against the current
    rarely succeeds, and only the far right end pays well.

    Action 0 swims left (always succeeds), action 1 swims right. Variant "osband" (Osband, Russo
    & Van Roy 2013, the usual one in regret experiments): right moves up with probability 0.35,
    stays 0.6, drifts down 0.05 (0.6 / 0.4 at the two ends); start at the left end; rewards
    0.005 for swimming left at the left end and 1 for swimming right at the right end. Variant
    "strehl-littman" (the original): 0.3 / 0.6 / 0.1 in the middle, 0.3 up / 0.7 stay at the left
    end, 0.3 stay / 0.7 down at the right end; start in one of the two leftmost states; rewards 5
    and 10000 scaled by `reward_scale`, the right one paid when the swimmer stays at the right end
    (the model keeps the expected reward, 0.3 * 10000).
    """

    variant: str = "osband"
    """"osband" (probabilities 0.35/0.6/0.05, rewards 0.005 and 1) or "strehl-littman"."""
    num_states: int = 6
    """Number of river segments (6 in both papers; at least 3)."""
    horizon: int = 20
    """Episode length (Osband et al. 2013 use 20)."""
    reward_scale: float = 1e-4
    """Scales the "strehl-littman" rewards (5, 10000) so the large one is 1; unused otherwise."""

    def __post_init__(self):
        require(
            self.variant in ("osband", "strehl-littman"),
            "variant",
            f"must be 'osband' or 'strehl-littman', got {self.variant!r}",
        )
        require(
            self.num_states >= 3,
            "num_states",
            f"must be >= 3 (two banks and a middle), got {self.num_states}",
        )
        require(self.horizon >= 1, "horizon", f"must be >= 1, got {self.horizon}")
        require(self.reward_scale > 0, "reward_scale", f"must be > 0, got {self.reward_scale}")


def riverswim_model(config: RiverSwimConfig) -> TabularModel:
    """The exact RiverSwim model ([n, 2, n])."""
    n = config.num_states
    if config.variant == "osband":
        up, stay, down = 0.35, 0.6, 0.05
        left_end_up, right_end_stay = 0.6, 0.6
        small, large = 0.005, 1.0
        initial = np.eye(n)[0]
    else:
        up, stay, down = 0.3, 0.6, 0.1
        left_end_up, right_end_stay = 0.3, 0.3
        small, large = 5.0 * config.reward_scale, 10000.0 * config.reward_scale
        initial = (np.arange(n) < 2) / 2.0
    transitions = np.zeros((n, 2, n))
    states = np.arange(n)
    transitions[states, LEFT, np.maximum(states - 1, 0)] = 1.0
    for s in range(1, n - 1):
        transitions[s, RIGHT, [s - 1, s, s + 1]] = down, stay, up
    transitions[0, RIGHT, [0, 1]] = 1.0 - left_end_up, left_end_up
    transitions[n - 1, RIGHT, [n - 2, n - 1]] = 1.0 - right_end_stay, right_end_stay
    rewards = np.zeros((n, 2))
    rewards[0, LEFT] = small
    # The original pays the large reward on the right end's self-loop only; the model keeps the
    # expectation (Osband et al. pay it for the action).
    rewards[n - 1, RIGHT] = large * (right_end_stay if config.variant == "strehl-littman" else 1)
    return model_from_numpy(transitions, rewards, np.zeros(n, bool), initial, config.horizon)


def make_riverswim(config: RiverSwimConfig) -> Environment:
    """The RiverSwim environment (observations: one-hot of the segment, [num_states])."""
    return make_tabular_env(riverswim_model(config), "riverswim")


# --------------------------------------------------------------------------------------------
# Combination lock
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CombinationLockConfig:
    """A combination lock: H steps, one secret correct action per step among A.

    A wrong action drops the agent onto an absorbing dead path that pays nothing for the rest of
    the episode; the reward 1 comes only at the last step when all H actions were right, so a
    uniform policy finds it with probability A^-H. An optional small distractor reward is paid on
    the step that drops to the dead path (a lure; it cannot reach 1, so J* = 1 always). State
    (h, lock) with lock 0 = on the right track, 1 = dead, plus one terminal state; observations are
    the one-hot of that state ([2H + 1]).
    """

    horizon: int = 5
    """Number of steps H (the length of the code)."""
    num_actions: int = 4
    """Number of actions A; a uniform policy opens the lock with probability A^-H."""
    code_seed: int = 0
    """Seed of the secret code (one correct action per step)."""
    distractor_reward: float = 0.0
    """Reward for the step that drops to the dead path (0 disables; must be < 1)."""
    observation_noise: float = 0.0
    """Std of Gaussian noise added to every entry of every observation (0: the clean one-hot).
    Evaluation and the exact model use the clean observation of each state."""

    def __post_init__(self):
        require(self.horizon >= 1, "horizon", f"must be >= 1, got {self.horizon}")
        require(self.num_actions >= 2, "num_actions", f"must be >= 2, got {self.num_actions}")
        require(
            0 <= self.distractor_reward < 1,
            "distractor_reward",
            f"must be in [0, 1) so that opening the lock stays optimal, got "
            f"{self.distractor_reward}",
        )
        require(self.observation_noise >= 0, "observation_noise",
                f"must be >= 0, got {self.observation_noise}")


def combination_lock_code(seed: int, horizon: int, num_actions: int) -> np.ndarray:
    """A random code: [horizon] int32, the correct action at each step (numpy, on the host)."""
    return np.random.default_rng(seed).integers(0, num_actions, horizon).astype(np.int32)


def combination_lock_model(
    code: Array | np.ndarray, num_actions: int, distractor_reward: float = 0.0
) -> TabularModel:
    """The exact model of a combination lock with the given code.

    State index 2h + lock for step h in [0, H) and lock 0 (good) / 1 (dead); index 2H is the
    terminal state entered after the H-th action. A numpy code builds the model on the host; a
    JAX code (possibly traced) builds it with jnp, so the builder can be vmapped over codes.

    Args:
        code: [H] int, the correct action at each step.
        num_actions: A.
        distractor_reward: paid on the wrong action that leaves the good path.

    Returns:
        A `TabularModel` with S = 2H + 1 states and horizon H.
    """
    xp = np if isinstance(code, np.ndarray) else jnp
    horizon = code.shape[0]
    num_states, end = 2 * horizon + 1, 2 * horizon
    steps = np.arange(horizon)
    last = steps == horizon - 1
    next_good = np.where(last, end, 2 * steps + 2)[:, None]  # [H, 1]
    next_dead = np.where(last, end, 2 * steps + 3)[:, None]
    correct = xp.arange(num_actions)[None, :] == code[:, None]  # [H, A]
    from_good = xp.where(correct, next_good, next_dead)  # [H, A] next state indices
    from_dead = np.broadcast_to(next_dead, (horizon, num_actions))
    # Interleave good (2h) and dead (2h + 1) rows, then the terminal row.
    next_index = xp.stack([from_good, from_dead], axis=1).reshape(end, num_actions)
    next_index = xp.concatenate([next_index, np.full((1, num_actions), end)])
    eye = np.eye(num_states, dtype=np.float32)
    transitions = xp.asarray(eye)[next_index]  # [S, A, S], deterministic
    good_rewards = xp.where(correct, last[:, None], distractor_reward).astype(np.float32)
    dead_rewards = np.zeros((horizon, num_actions), np.float32)
    rewards = xp.stack([good_rewards, dead_rewards], axis=1).reshape(end, num_actions)
    rewards = xp.concatenate([rewards, np.zeros((1, num_actions), np.float32)])
    terminal = np.arange(num_states) == end
    if xp is np:
        return model_from_numpy(transitions, rewards, terminal, eye[0], horizon)
    return TabularModel(
        transitions=transitions,
        rewards=rewards,
        terminal=jnp.asarray(terminal),
        initial=jnp.asarray(eye[0]),
        observations=jnp.asarray(eye),
        horizon=jnp.asarray(horizon, jnp.int32),
    )


def make_combination_lock(config: CombinationLockConfig) -> Environment:
    """The combination lock environment."""
    code = combination_lock_code(config.code_seed, config.horizon, config.num_actions)
    model = combination_lock_model(code, config.num_actions, config.distractor_reward)
    env = make_tabular_env(model, "combination-lock")._replace(
        value_class=lambda: combination_lock_value_class(
            config.horizon, config.num_actions, config.distractor_reward))
    if config.observation_noise > 0:
        env = with_observation_noise(env, config.observation_noise)
    return env


# --------------------------------------------------------------------------------------------
# DeepSea
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeepSeaConfig:
    """DeepSea (Osband et al. 2019, bsuite): an N x N grid; the agent starts top left, falls one
    row per step and chooses left or right each step.

    Which action means "right" is drawn per cell (the randomised action mapping). Moving right
    costs 0.01 / N; pushing right in the rightmost column pays 1, which only the all-right path
    reaches, on the last of its N steps: J* = 1 - 0.01 (bsuite's optimal return). Observations
    are the [N, N] one-hot grid (all zeros after the last step), as in bsuite. The stochastic
    variant moves right only with probability 1 - 1/N and adds N(0, 1) reward noise in the two
    bottom corners, as bsuite's `deep_sea_stochastic`.
    """

    size: int = 10
    """Grid size N (also the episode length)."""
    mapping_seed: int = 0
    """Seed of the per-cell action mapping."""
    randomize_actions: bool = True
    """Random per-cell mapping (the real benchmark); False makes action 1 right everywhere."""
    deterministic: bool = True
    """False: right succeeds with probability 1 - 1/N and the bottom corners add reward noise."""
    unscaled_move_cost: float = 0.01
    """Total cost of moving right on every step; each right move costs this / N."""

    def __post_init__(self):
        require(self.size >= 2, "size", f"must be >= 2, got {self.size}")
        require(
            0 <= self.unscaled_move_cost < 1,
            "unscaled_move_cost",
            f"must be in [0, 1) so that the treasure stays worth it, got {self.unscaled_move_cost}",
        )


def deepsea_action_mapping(seed: int, size: int) -> np.ndarray:
    """A random mapping: [N, N] int32, the action that means "right" in each cell.

    Drawn exactly as bsuite draws it (`RandomState(mapping_seed).binomial(1, 0.5, [N, N])`), so
    a mapping seed gives the same DeepSea here and in bsuite.
    """
    return np.random.RandomState(seed).binomial(1, 0.5, [size, size]).astype(np.int32)


def deepsea_model(
    action_mapping: Array | np.ndarray,
    deterministic: bool = True,
    unscaled_move_cost: float = 0.01,
) -> TabularModel:
    """The exact DeepSea model.

    State index row * N + column for the N x N cells, and N * N for the terminal state entered
    after the N-th step. A numpy mapping builds the model on the host; a JAX mapping (possibly
    traced) builds it with jnp, so the builder can be vmapped over mappings.

    Args:
        action_mapping: [N, N] int, the action that moves right in each cell.
        deterministic: False for bsuite's stochastic variant (right fails with probability 1/N).
        unscaled_move_cost: each right move costs this / N.

    Returns:
        A `TabularModel` with S = N^2 + 1 states, 2 actions, horizon N.
    """
    xp = np if isinstance(action_mapping, np.ndarray) else jnp
    size = action_mapping.shape[0]
    num_states, end = size * size + 1, size * size
    rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")  # [N, N]
    eye = np.eye(num_states, dtype=np.float32)

    def below(col):  # [N, N, S] one-hot of the cell one row down in column `col`
        return eye[np.where(rows + 1 >= size, end, (rows + 1) * size + col)]

    success = 1.0 if deterministic else 1.0 - 1.0 / size
    # bsuite: a failed right move stays in the column (still falling one row).
    p_right = success * below(np.minimum(cols + 1, size - 1)) + (1.0 - success) * below(cols)
    p_left = below(np.maximum(cols - 1, 0))
    is_right = xp.arange(2)[None, None, :] == action_mapping[:, :, None]  # [N, N, 2]
    transitions = xp.where(is_right[..., None], p_right[:, :, None], p_left[:, :, None])
    transitions = xp.concatenate(
        [transitions.reshape(end, 2, num_states), np.broadcast_to(eye[end], (1, 2, num_states))]
    )
    # bsuite pays 1 for "right" in the last column (reachable on the last row only).
    treasure = xp.logical_and((cols == size - 1)[..., None], is_right)
    move_cost = is_right.astype(np.float32) * np.float32(unscaled_move_cost / size)
    rewards = treasure.astype(np.float32) - move_cost
    rewards = xp.concatenate([rewards.reshape(end, 2), np.zeros((1, 2), np.float32)])
    # Observations: bsuite's one-hot [N, N] grid, all zeros once the episode is over.
    observations = np.concatenate([eye[:end, :end], np.zeros((1, end), np.float32)])
    observations = observations.reshape(num_states, size, size)
    terminal = np.arange(num_states) == end
    if xp is np:
        return model_from_numpy(transitions, rewards, terminal, eye[0], size, observations)
    return TabularModel(
        transitions=transitions.astype(jnp.float32),
        rewards=rewards.astype(jnp.float32),
        terminal=jnp.asarray(terminal),
        initial=jnp.asarray(eye[0]),
        observations=jnp.asarray(observations),
        horizon=jnp.asarray(size, jnp.int32),
    )


def deepsea_reward_noise(size: int) -> np.ndarray:
    """[N^2 + 1, 2] std of the stochastic variant's reward noise: N(0, 1) in the bottom corners."""
    noise = np.zeros((size * size + 1, 2), np.float32)
    noise[[(size - 1) * size, size * size - 1]] = 1.0
    return noise


def make_deepsea(config: DeepSeaConfig) -> Environment:
    """The DeepSea environment (observations [N, N] float32)."""
    if config.randomize_actions:
        mapping = deepsea_action_mapping(config.mapping_seed, config.size)
    else:
        mapping = np.ones((config.size, config.size), np.int32)
    model = deepsea_model(mapping, config.deterministic, config.unscaled_move_cost)
    noise = None if config.deterministic else deepsea_reward_noise(config.size)
    return make_tabular_env(model, "deepsea", noise)._replace(
        value_class=lambda: deepsea_value_class(config.size, config.unscaled_move_cost,
                                                config.deterministic))


# --------------------------------------------------------------------------------------------
# Grid world
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GridWorldConfig:
    """A grid world: start in the top-left cell, reach the bottom-right goal.

    Actions 0 up, 1 right, 2 down, 3 left; bumping into the border stays put. With probability
    `slip` the move is replaced by a uniformly random one (possibly the intended one). Entering
    the goal pays 1 and terminates; every other step pays `step_reward`. Observations are the
    one-hot of the cell ([rows * cols]).
    """

    rows: int = 5
    """Grid height."""
    cols: int = 5
    """Grid width."""
    horizon: int = 20
    """Episodes are truncated after this many steps (at least rows + cols - 2 to reach the goal)."""
    slip: float = 0.0
    """Probability that the move is replaced by a uniformly random one."""
    step_reward: float = 0.0
    """Reward of every step that does not enter the goal (e.g. -0.01 to hurry)."""

    def __post_init__(self):
        require(self.rows >= 1, "rows", f"must be >= 1, got {self.rows}")
        require(self.cols >= 1, "cols", f"must be >= 1, got {self.cols}")
        require(self.rows * self.cols >= 2, "rows", "rows * cols must be >= 2 (start != goal)")
        require(
            self.horizon >= self.rows + self.cols - 2,
            "horizon",
            f"must be >= rows + cols - 2 = {self.rows + self.cols - 2} so the goal is "
            f"reachable, got {self.horizon}",
        )
        require(0 <= self.slip <= 1, "slip", f"must be in [0, 1], got {self.slip}")


def gridworld_model(config: GridWorldConfig) -> TabularModel:
    """The exact grid-world model ([rows * cols, 4, rows * cols])."""
    rows, cols = config.rows, config.cols
    num_states = rows * cols
    goal = num_states - 1
    moves = np.array([[-1, 0], [0, 1], [1, 0], [0, -1]])  # up, right, down, left
    r, c = np.divmod(np.arange(num_states), cols)
    intended = np.zeros((num_states, 4, num_states))
    for a, (dr, dc) in enumerate(moves):
        next_state = np.clip(r + dr, 0, rows - 1) * cols + np.clip(c + dc, 0, cols - 1)
        intended[np.arange(num_states), a, next_state] = 1.0
    random_move = intended.mean(axis=1, keepdims=True)
    transitions = (1.0 - config.slip) * intended + config.slip * random_move
    terminal = np.arange(num_states) == goal
    transitions[goal] = np.eye(num_states)[goal]
    rewards = transitions[:, :, goal] * 1.0 + (1.0 - transitions[:, :, goal]) * config.step_reward
    rewards[goal] = 0.0
    initial = np.eye(num_states)[0]
    return model_from_numpy(transitions, rewards, terminal, initial, config.horizon)


def make_gridworld(config: GridWorldConfig) -> Environment:
    """The grid-world environment."""
    return make_tabular_env(gridworld_model(config), "gridworld")


# --------------------------------------------------------------------------------------------
# Value classes (the finite F of GLOW / HyGLOW)
# --------------------------------------------------------------------------------------------


def combination_lock_value_class(
    horizon: int, num_actions: int, distractor_reward: float = 0.0
) -> ProductValueClass:
    """F = the optimal Q-functions of every code of a lock, as a product class.

    On the good path at step h, candidate k says "k is the correct action": Q(., k) = 1 (the
    optimal continuation always earns 1) and Q(., a) = `distractor_reward` for the others (the
    lure paid on dropping to the dead path, which earns nothing after). Dead states and the
    terminal state have the single candidate Q = 0. A^H codes, H * A candidate rows.

    Returns:
        rows [2H + 1, A, A] (state, candidate, action) and valid [2H + 1, A].
    """
    num_states = 2 * horizon + 1
    rows = np.zeros((num_states, num_actions, num_actions), np.float32)
    valid = np.zeros((num_states, num_actions), bool)
    eye = np.eye(num_actions, dtype=np.float32)
    rows[0:2 * horizon:2] = eye + np.float32(distractor_reward) * (1 - eye)
    valid[0:2 * horizon:2] = True
    valid[1::2, 0] = True  # dead states
    valid[-1, 0] = True  # the terminal state
    return ProductValueClass(rows=jnp.asarray(rows), valid=jnp.asarray(valid))


def deepsea_value_class(
    size: int, unscaled_move_cost: float = 0.01, deterministic: bool = True
) -> ProductValueClass:
    """F = the optimal Q-functions of every action mapping of a DeepSea.

    The optimal values do not depend on the mapping (it only relabels the two actions per cell),
    so in each cell the two candidates differ only in which action moves right: k = the action
    that moves right. Holds for the stochastic variant too (its reward noise has mean zero).
    2^(N^2) mappings, 2 N^2 candidate rows.

    Returns:
        rows [N^2 + 1, 2, 2] (state, candidate, action) and valid [N^2 + 1, 2].
    """
    from rlkit import planning

    model = deepsea_model(np.ones((size, size), np.int32), deterministic, unscaled_move_cost)
    q = np.asarray(planning.value_iteration(model).q[0])  # [S, 2]; action 1 moves right
    rows = np.stack([q[:, ::-1], q], axis=1).astype(np.float32)  # [S, 2, 2]
    valid = np.ones((size * size + 1, 2), bool)
    valid[-1, 1] = False  # the terminal state: one (all-zero) candidate
    return ProductValueClass(rows=jnp.asarray(rows), valid=jnp.asarray(valid))
