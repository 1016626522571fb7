"""The contracts every rlkit package agrees on: environments, agents, transitions and models.

Everything here is a plain pytree or a NamedTuple of pure functions (optax / gymnax style), so it
can cross `jit`, `vmap` and `lax.scan` and be checkpointed as is.

Environments (ARCHITECTURE.md section 2) come in two kinds with one set of semantics:

* `Environment`: functional JAX environment, gymnax 1.0 style. `step` does **not** auto-reset;
  `rlkit.loops.autoreset` wraps it and keeps the observation before the reset in
  `info["final_obs"]` so that truncated episodes bootstrap correctly.
* `HostEnvironment`: a batched environment stepped on the CPU with numpy (gymnasium, procgen). It
  auto-resets itself and reports the pre-reset observation in the same `final_obs` field.

Agents (section 3) are `Agent` NamedTuples of pure functions plus a `Feed` that tells the driver
how to feed them (on-policy rollouts or a replay buffer, with their sizes).
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import numpy as np
from flax import struct

Array = jax.Array
PRNGKey = jax.Array
PyTree = Any
Metrics = dict[str, Array]


# --------------------------------------------------------------------------------------------
# Environments
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EnvSpec:
    """Static description of an environment's interface (hashable, never traced).

    Attributes:
        name: registry name, e.g. "cartpole" or "chain".
        obs_shape: shape of one observation, without batch axes.
        obs_dtype: numpy dtype name of observations ("float32", "uint8").
        num_actions: number of discrete actions.
        max_episode_steps: episodes are truncated after this many steps.
    """

    name: str
    obs_shape: tuple[int, ...]
    obs_dtype: str
    num_actions: int
    max_episode_steps: int

    @property
    def is_image(self) -> bool:
        """True for [H, W, C] uint8 pixel observations (the CNN torsos take these).

        Small float grids such as MinAtar's [10, 10, C] are not images in this sense: an MLP on
        the flattened grid is the usual network for them.
        """
        return len(self.obs_shape) == 3 and self.obs_dtype == "uint8"


@struct.dataclass
class TabularModel:
    """The exact model of a finite MDP, for `rlkit.planning`.

    Episodes start in `initial`, follow `transitions`, end when they enter a `terminal` state
    (absorbing, zero reward) and are truncated after `horizon` steps. Time-dependent MDPs (locks,
    DeepSea) put the step index into the state, so the model itself is stationary.

    Attributes:
        transitions: [S, A, S] P(s' | s, a); rows sum to one.
        rewards: [S, A] expected reward of taking a in s.
        terminal: [S] bool, entering such a state ends the episode.
        initial: [S] initial state distribution.
        observations: [S, *obs_shape] the observation emitted in each state (what the agent sees).
        horizon: int32 scalar, the truncation length (max_episode_steps).
    """

    transitions: Array
    rewards: Array
    terminal: Array
    initial: Array
    observations: Array
    horizon: Array

    @property
    def num_states(self) -> int:
        return self.transitions.shape[0]

    @property
    def num_actions(self) -> int:
        return self.transitions.shape[1]


class Environment(NamedTuple):
    """A functional JAX environment (gymnax 1.0 semantics, without auto-reset).

    Attributes:
        spec: the static `EnvSpec`.
        default_params: a pytree of environment parameters (vmappable).
        reset: `(key, params) -> (obs, env_state)`.
        step: `(key, env_state, action, params) -> (obs, env_state, reward, terminated,
            truncated, info)`; reward float32, terminated / truncated bool scalars; info a dict of
            arrays with a fixed structure.
        model: `(params) -> TabularModel` for environments with an exact model, else None.
        state_index: `(env_state, params) -> int32` index of the state in `model`, else None.
        value_class: `() -> rlkit.density_ratio.ProductValueClass`, the finite value class F
            (Q* of every member of the env's family, e.g. of every lock code) built from the
            env's own config, for agents that need one (GLOW's exact version), else None. The
            CLI hands it to such agents (`rlkit.registry.make_agent`); agents never import envs.
    """

    spec: EnvSpec
    default_params: PyTree
    reset: Callable[[PRNGKey, PyTree], tuple[Array, PyTree]]
    step: Callable[..., tuple[Array, PyTree, Array, Array, Array, dict]]
    model: Callable[[PyTree], TabularModel] | None = None
    state_index: Callable[[PyTree, PyTree], Array] | None = None
    value_class: Callable[[], Any] | None = None


class HostStep(NamedTuple):
    """One batched step of a `HostEnvironment` (numpy arrays with a leading [N] axis).

    `obs` is already the first observation of the next episode where an episode ended;
    `final_obs` is the true next observation (before any reset), used for bootstrapping.
    """

    obs: np.ndarray
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    final_obs: np.ndarray


class HostEnvironment(abc.ABC):
    """Interface of batched CPU environments (gymnasium vector envs, procgen).

    Implementations auto-reset (gymnasium's same-step mode) and keep terminated and truncated
    apart. `num_envs` environments step together.
    """

    spec: EnvSpec
    num_envs: int

    @abc.abstractmethod
    def reset(self, seed: int) -> np.ndarray:
        """Reset every environment (deterministically for `seed`); returns obs [N, *obs_shape]."""

    @abc.abstractmethod
    def step(self, actions: np.ndarray) -> HostStep:
        """Step every environment with int actions [N]; ended episodes reset themselves."""

    def close(self) -> None:  # noqa: B027 (optional hook: most environments hold nothing)
        """Release processes or native resources; the default holds none."""


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


@struct.dataclass
class Transition:
    """One environment step, batched by the caller ([T, N, ...] in rollouts, [B, ...] in batches).

    Attributes:
        obs: observation the action was chosen from.
        action: int32 action.
        reward: float32 reward.
        terminated: bool, the episode ended in a terminal state (do not bootstrap).
        truncated: bool, the episode was cut by a time limit (bootstrap from next_obs).
        next_obs: the true next observation, before any auto-reset.
        extras: what `act` returned alongside the action (log-prob, value, ...).
    """

    obs: Array
    action: Array
    reward: Array
    terminated: Array
    truncated: Array
    next_obs: Array
    extras: dict = struct.field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Agents
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OnPolicyFeed:
    """The agent learns from fresh rollouts of `rollout_length` steps of `num_envs` envs.

    `update` receives a `Transition` with leaves shaped [rollout_length, num_envs, ...].
    """

    num_envs: int
    rollout_length: int

    @property
    def steps_per_iteration(self) -> int:
        return self.num_envs * self.rollout_length

    @property
    def uses_dataset(self) -> bool:
        return False


PRIORITIES = "priorities"
"""The metrics key under which a prioritised agent's `update` returns its [B] new priorities
(|TD error| of each batch row); the driver pops it and sets the sampled rows' priorities before
the metrics are logged."""


@dataclass(frozen=True)
class ReplayFeed:
    """The agent learns from batches of a replay buffer filled by `num_envs` envs.

    Each driver iteration steps every env once and adds the [num_envs] transitions; once the
    buffer holds `learning_starts` transitions, `update` runs on a `Transition` batch of
    `batch_size` rows every `train_every` iterations.

    With `offline_fraction > 0` the feed is hybrid (Hy-Q, RLPD): each batch draws exactly
    `round(fraction * batch_size)` rows from an offline dataset and the rest from the online
    buffer (`rlkit.data.hybrid`), the fraction moving linearly from `offline_fraction` to
    `offline_fraction_end` over `offline_fraction_steps` driver iterations (constant when
    `offline_fraction_end` is None). The driver then needs a dataset.

    With `prioritised` the buffer is `rlkit.data.replay.make_prioritised_buffer(buffer_size,
    priority_alpha, epsilon=priority_epsilon)`: the batch carries the importance weights in
    `extras["weight"]` ([B] float32, beta moving linearly from `priority_beta` to 1 over
    `priority_beta_steps` env steps), and `update` returns the rows' new priorities under
    `metrics[PRIORITIES]` ([B]), which the driver pops and stores.
    """

    num_envs: int
    buffer_size: int
    batch_size: int
    learning_starts: int
    train_every: int = 1
    offline_fraction: float = 0.0
    offline_fraction_end: float | None = None
    offline_fraction_steps: int = 0
    prioritised: bool = False
    priority_alpha: float = 0.6
    priority_beta: float = 0.4
    priority_epsilon: float = 1e-6
    priority_beta_steps: int = 0

    @property
    def steps_per_iteration(self) -> int:
        return self.num_envs

    @property
    def uses_dataset(self) -> bool:
        return self.offline_fraction > 0 or bool(self.offline_fraction_end)


@dataclass(frozen=True)
class OfflineFeed:
    """The agent learns from uniform batches of an offline dataset only (BC, BCQ, CQL, IQL, DT).

    Each driver iteration is one `update` on a `Transition` batch of `batch_size` rows drawn
    with replacement; no environment steps are taken except to evaluate. With
    `context_length` K >= 1 (sequence models: the decision transformer) each batch item is
    instead the window of K steps of one episode ending at the drawn row, leaves [B, K, ...]
    with the extras `return_to_go`, `timestep`, `mask` and `max_return`
    (`rlkit.data.sequences`).
    """

    batch_size: int
    context_length: int = 0

    @property
    def steps_per_iteration(self) -> int:
        return 0

    @property
    def uses_dataset(self) -> bool:
        return True


@dataclass(frozen=True)
class RoundFeed:
    """The agent learns in rounds (GLOW, and H2O's reduction from hybrid to offline RL).

    Each driver iteration is one round: fit on all the data so far (the offline dataset, if any,
    plus every online transition), then roll the fitted agent's `act` out for `num_envs` envs x
    `episode_length` steps (exactly `num_envs` episodes on fixed-horizon envs) and store them.
    The fit is `updates_per_round` calls of `update`, each on a batch of `batch_size` rows drawn
    from the union (`offline_fraction` of them from the dataset, or in proportion to the two
    sources' sizes when it is None); with `batch_size=None` it is one call on all the data at
    once (exact learners), padded to a fixed size with `extras["valid"]` marking real rows.
    Every row carries `extras["first"]`, true at an episode's first step.

    Attributes:
        num_envs: episodes rolled out per round (environments stepped side by side).
        episode_length: steps per env per round (the env's max_episode_steps).
        updates_per_round: `update` calls per round (1 when `batch_size` is None).
        batch_size: rows per update, or None for all the data.
        buffer_episodes: online episodes kept (the oldest are overwritten beyond it).
        offline_fraction: share of each batch from the dataset, or None (proportional).
        uses_dataset: whether the agent needs an offline dataset.
        offline_schedule: "all" (the whole dataset from round 1) or "paper" (round t uses the
            dataset's first n episodes, n = the online episodes so far, and the two sources
            weighted half and half: Amortila et al. 2024, Alg. 2 line 5, Alg. 3 line 8).
        refit: re-initialise the agent (`init` with the seed's first key) before each round's
            fit, so each round's learner sees only that round's data.
    """

    num_envs: int
    episode_length: int
    updates_per_round: int
    batch_size: int | None
    buffer_episodes: int
    offline_fraction: float | None = None
    uses_dataset: bool = False
    offline_schedule: str = "all"
    refit: bool = False

    @property
    def steps_per_iteration(self) -> int:
        return self.num_envs * self.episode_length

    @property
    def buffer_size(self) -> int:
        return self.buffer_episodes * self.episode_length


@dataclass(frozen=True)
class PreferenceFeed:
    """The agent learns a language model from tokenized text (SFT, reward models, DPO), through
    the preference driver (`rlkit.loops.preference`).

    Each driver iteration is one `update` on `batch_size` rows drawn with replacement: a
    `Sequences` batch (`data="demonstrations"`) or a `PreferencePairs` batch (`data="pairs"`).

    Attributes:
        batch_size: rows (sequences or pairs) per update.
        data: "demonstrations" or "pairs".
        generates: whether `act` samples completions from prompts (SFT, DPO: evaluated by the
            true reward of fresh samples) or scores sequences (reward models).
    """

    batch_size: int
    data: str
    generates: bool


@struct.dataclass
class Sequences:
    """A batch of tokenized prompt + completion sequences, [B, T] each (T = P + N: the prompt
    left-padded to P tokens, the completion right-padded to N).

    Attributes:
        tokens: int32 token ids (padding holds the tokenizer's pad id).
        attention_mask: bool, True at real tokens (prompt and completion), False at padding.
        loss_mask: bool, True at the completion's tokens (EOS included): the tokens whose
            log-probabilities SFT and DPO count. Always False at position 0.
    """

    tokens: Array
    attention_mask: Array
    loss_mask: Array


@struct.dataclass
class PreferencePairs:
    """A batch of preference pairs: for the same prompt, `chosen` is preferred to `rejected`
    ([B, T] `Sequences` each)."""

    chosen: Sequences
    rejected: Sequences


Feed = OnPolicyFeed | ReplayFeed | OfflineFeed | RoundFeed | PreferenceFeed


class TextSpec(NamedTuple):
    """What a language-model agent needs to know about its task and model (the `EnvSpec` of
    SFT, reward models and DPO).

    Attributes:
        model: the `rlkit.lm.transformer.TransformerConfig` of the network.
        prompt_tokens: P, prompts are left-padded to this many tokens.
        completion_tokens: N, completions are right-padded (and generated) to this many tokens.
        pad_id: the tokenizer's padding id.
        eos_id: the tokenizer's end-of-sequence id (ends a generated completion).
    """

    model: Any
    prompt_tokens: int
    completion_tokens: int
    pad_id: int
    eos_id: int


class HistoryPolicy(NamedTuple):
    """A reported policy that conditions on the episode so far (the decision transformer), for
    the evaluators; `Agent.policy` stays the Markov policy of an episode's first step.

    The memory is a pytree of [N, ...] arrays, one row per environment, each row one episode
    from its start: `init` before the first step, then `policy` (which records `obs`) and
    `observe` (which records the action taken and the reward received) at every step.

    Attributes:
        init: `(agent_state, num_envs) -> memory`; `num_envs` is a Python int.
        policy: `(agent_state, memory, obs [N, *obs_shape]) -> (probs [N, A] float32, memory)`.
        observe: `(memory, action [N] int32, reward [N] float32) -> memory`.
    """

    init: Callable[[PyTree, int], PyTree]
    policy: Callable[[PyTree, PyTree, Array], tuple[Array, PyTree]]
    observe: Callable[[PyTree, Array, Array], PyTree]


class Agent(NamedTuple):
    """The agent contract (ARCHITECTURE.md section 3): pure functions and how to feed them.

    Attributes:
        init: `(key) -> state`, every leaf an array of fixed shape and dtype.
        act: `(state, obs [N, *obs_shape], key, step) -> (action [N] int32, extras dict of [N]
            arrays)`. Exploratory behaviour (sampling, epsilon-greedy). `step` is an int32
            scalar: the env steps this seed has taken before this call, as the driver counts
            them (on-policy feeds: `iteration * num_envs * rollout_length + t * num_envs` at
            rollout step t; replay feeds: `iteration * num_envs`; round feeds: `round *
            num_envs * episode_length + t * num_envs`). Schedules of exploration read it (DQN's
            epsilon), so `update` never advances a counter on `act`'s behalf; most agents
            ignore it.
        update: `(state, batch: Transition, key) -> (state, metrics dict of scalars)`; a
            prioritised replay agent adds `metrics[PRIORITIES]` ([B]), which its driver pops.
        policy: `(state, obs [N, *obs_shape]) -> probs [N, A]`, the policy evaluated and reported
            (greedy for value-based agents, the learned distribution for policy-gradient agents).
        feed: an `OnPolicyFeed`, `ReplayFeed`, `OfflineFeed` or `RoundFeed`.
        history: None for Markov agents; a `HistoryPolicy` for agents whose reported policy
            reads the episode so far (DT): the evaluators then run it, step by step, instead
            of `policy` (and never evaluate it exactly through a model's policy table).
    """

    init: Callable[[PRNGKey], PyTree]
    act: Callable[[PyTree, Array, PRNGKey, Array], tuple[Array, dict]]
    update: Callable[[PyTree, Transition, PRNGKey], tuple[PyTree, Metrics]]
    policy: Callable[[PyTree, Array], Array]
    feed: Feed
    history: HistoryPolicy | None = None


class BanditPairs(NamedTuple):
    """A batch of labelled preference pairs of a tabular preference bandit
    (`envs.preference_bandits`, which also names it `PreferencePairs`).

    Attributes:
        prompt_ids: [N, 1] int32 prompt tokens.
        chosen_ids: [N, L] int32 responses labelled as preferred.
        rejected_ids: [N, L] int32 responses labelled as dispreferred.
    """

    prompt_ids: Array
    chosen_ids: Array
    rejected_ids: Array
