"""GLOW and HyGLOW: Amortila, Foster, Jiang, Sekhari and Xie 2024, "Harnessing Density Ratios for
Online Reinforcement Learning" (ICLR 2024). Spec: ../shared/specs/glow_hyglow.md.

The paper's objects:

* a value class F of Q-functions f (Q* in F) and a weight class W of density ratios w(x, a) >= 0;
* the TD residual delta_f = f(x, a) - r - max_a' f(x', a'), and the penalised weighted loss
  L(f, w) = E_D[[w]_gamma delta_f - kappa [w]_gamma^2] with weights clipped at a level gamma_t
  that grows with the round, scored by the adversary max_w L (`rlkit.density_ratio`);
* GLOW (online): each round, the confidence set F_t = {f : max_w L(f, w) <= beta} on the data so
  far, the optimistic f_t = argmax over F_t of f(x_1, pi_f(x_1)), then one episode of the greedy
  pi_{f_t} added to the data;
* HyGLOW (hybrid): H2O, the reduction of hybrid to offline RL: each round the offline minimax
  learner f_t = argmin_f max_w L(f, w) on the offline data plus all online data so far (no
  optimism), then episodes of pi_{f_t}. `rlkit.loops.rounds` is that loop; the same loop runs
  any offline agent (`--h2o`).

Both come in two versions (`version`):

* "exact": F is a finite class and W all tables (x, a) -> [0, gamma] (or [-gamma, gamma]), whose
  inner maximum has a closed form, so each round is solved exactly on all the data from
  sufficient statistics (counts). F is the env's own class (its `Environment.value_class`: the Q* of
  every combination-lock code, or of every DeepSea action mapping, as product classes scored in
  O(S K A)) or a file of Q-tables [M, S, A] enumerated with `vmap` (`value_class=PATH.npy`).
  These are the versions the tests and the theory talk about. One episode per round.
* "neural": a Q-network f_theta and a weight network w_phi trained by gradient descent-ascent on
  batches of the data (our design; the paper has no deep-RL version). w_phi = softplus(g_phi)
  (or g_phi with signed weights), clipped at gamma_t = gamma_0 sqrt(t) with t the round; phi
  ascends L, theta descends it (targets from a target network, FQI style), and GLOW's theta also
  ascends lambda * max_a f_theta(x_1, a) on the batch's episode-start rows (the optimism term).
  HyGLOW's batches mix offline and online rows (`offline_fraction`, 0.5 as in Hy-Q).

How it runs: a `RoundFeed` (round driver `rlkit.loops.rounds`). Each round the exact version's
one `update` consumes all the data so far (the dataset, if any, and every online transition, as
one padded [M] batch with `extras["valid"]` marking real rows); the neural version's
`updates_per_round` updates each consume a [batch_size] batch drawn from that union. Then the
driver rolls `act` out for `episodes_per_round` whole episodes and stores them.

Two presets (`preset`). References are to the ICLR 2024 text (Amortila, Foster, Jiang, Sekhari,
Xie); "t" is the round everywhere in the paper preset (t = 1 + online episodes / episodes per
round: round 1 has no data).

Differences, practical (default) -> paper:

* truncation: gamma_0 sqrt(n), n = episodes in the data (exact; offline ones included) or rounds
  (neural) -> gamma_t = gamma_0 t (Alg. 1 line 3; gamma_0 is the paper's gamma <= 1);
* penalty on [w]^2: kappa (0.5) -> alpha_t = 8 / gamma_t;
* GLOW's confidence set: the loss summed over all layers <= beta (0.25) -> per layer (Eq. 4),
  each step's summed loss <= beta_t K (t-1) with beta_t = c gamma_t log(6|F||W|TH/delta) /
  (K (t-1)), c = `confidence` (36), delta = `delta` (0.1); no constraint at t = 1;
* the choice within the set (product classes): a minimum-loss f -> any f of the set, by fixed
  random priorities (optimism ties every f on locks and DeepSea);
* HyGLOW's data: the whole dataset from round 1, weighted by row count -> round t: the dataset's
  first t-1 episodes and the t-1 online ones, half and half (Alg. 2 line 5, Thm F.6);
* HyGLOW's objective: the summed signed loss -> the sum over layers of max_w |L_h| (Eq. 14),
  the same number for tabular W closed under negation;
* neural bootstrap: a target network (semi-gradient FQI) -> none, the gradient flows through
  max_a' f(x', a') (`target_network`).

Where the paper is silent, and what this code does:

* The size of W in beta_t's logarithm: tabular W is infinite; we take |W| = |F|. T, the number
  of rounds, is not known in advance; we use the current t (an anytime reading).
* Weight sign (`signed_weights`): W >= 0 (the paper) for GLOW; HyGLOW defaults to signed weights
  (the paper's augmented class, Eq. 38), because without optimism an under-estimating f is
  otherwise never refuted and data from the optimal policy alone would identify nothing.
* Practical radius: `beta` bounds the summed (not averaged) loss, i.e. the averaged loss is held
  below beta / n after n episodes, the theory's log(|F||W|/delta) / t shape with the log folded
  into beta. The default 0.25 refutes a deterministic over-estimate of 1 seen once (its loss is
  1/2 with kappa = 1/2); raise it for stochastic MDPs.
* What the paper constants cost (measured through this agent's update; the closed form is
  `rlkit.density_ratio.refutation_visits`): with c = 36, delta = 0.1, a wrong lock candidate is
  refuted after 34,581 visits at H = 5 and 51,815 at H = 10 (A = 4); GLOW tries about
  H (A-1) / 2 of them in turn, so about 2.6e5 and 7.8e5 episodes. The practical constants
  refute it on its first visit. The per-layer confidence set is exact on locks (one state with
  choices per layer); with several such states per layer (DeepSea) each takes an equal share
  of the layer's slack, a subset of the set.
* Optimism (Alg. 1 line 7) uses the data's empirical start states; before any episode every
  candidate ties. For product classes every f has the same start value, so optimism cannot
  separate them. Ties are broken by random priorities drawn once per seed (never by list
  order), so f_t stays put until the data refute it; re-drawing every round would keep
  re-guessing layers the data already confirmed (with W >= 0 a success refutes nothing) and
  measured about twice the episodes on locks.
* Weight classes (`weight_class`, exact version): W = all tables (closed form, the default), or
  a finite class built from the env's exact model, "occupancy-ratios": for the distinct greedy
  policies pi_i of F, the ratios d^pi_i / d^pi_j (j = i included: 1 on pi_i's support, the
  best response to pi_i's own data) and d^pi_i / (the uniform mixture of all),
  summed over steps (`rlkit.density_ratio.occupancy_ratio_class`; our finite reading of the
  mixture class, Eq. 34, whose denominators are mixtures of the rounds' policies), or
  "signed-occupancy-ratios" (with their negations, Eq. 38; `signed_weights` then plays no part).
  With a finite W truncation binds (with all tables the best response rarely reaches the clip).
  F is enumerated (a product class has A^H members: a small lock only; a class whose
  |F| |W| S A exceeds `MAX_FINITE_CLASS_WORK` is refused) and the adversary takes one w per
  layer (W = W_1 x ... x W_H, as the paper's w = (w_h)): one w for all layers pays the penalty
  of every layer it weights, and on a lock then refuted no wrong code (measured: GLOW stayed at
  return 0). W also holds w = 0 (without it a layer's max can be negative and, summed, offset
  a refuted layer: measured, 2 of 4 seeds stuck at return 0 on a lock with H = 3, A = 2).
  The practical radius bounds the sum of the layers' maxima, the paper's each layer;
  |W| in beta_t's logarithm is the class's size; under the paper preset HyGLOW minimises the
  sum over layers of max_w |L_h| (Eq. 14).
* If no f satisfies the constraint (a misspecified F) the minimum-loss f is used.
* Output: the agent's policy is the last fitted f_t; what the paper outputs, the uniform mixture
  of pi_1..pi_T, is evaluated exactly by the round driver (`mixture_return`, and
  `cumulative_regret`), beside `episodes_to_optimal` (a secondary figure of ours).
* Neural (our design; the paper has no deep-RL version). Its optimism is a Lagrangian
  relaxation of the paper's constrained argmax: theta descends L(f, w) - lambda max_a f(x_1, a)
  with a fixed multiplier lambda = `optimism_coef`, instead of maximising f(x_1) over the set
  {f : max_w L(f, w) <= beta_t}; nothing ties lambda to beta_t, so it is a heuristic. Rollouts
  are greedy (`epsilon` adds uniform actions), x_1 is recognised from the driver's `first`
  flag. Two time scales: the weight network takes 5 ascent steps at 3e-3 per Q step at 3e-4,
  with a target network copied every 100 Q steps (practical preset). With one ascent step at
  the Q network's rate the lagging weights kept pushing Q past its targets and Q diverged (to
  1e6 on DeepSea 20, measured); the faster adversary tracks its best response. With
  `refit=True` the networks restart every round and the neural round counter with them (t = 1).

Metrics: exact: `class_loss` (summed loss of f_t), `feasible`, `candidates_left`, `truncation`,
`data_episodes` (weighted episode starts in the data); paper preset also `round`, `radius`,
`penalty`; neural: `q_loss`, `weight_loss` (the adversary's L), `weight_mean`, `weight_abs_max`,
`truncation`, `td_abs_mean`, `q_mean`, `start_value`, `grad_norm`. The round driver adds
`policy_return`, `cumulative_regret`, `mixture_return` and `episodes_to_optimal` on envs with an
exact model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from rlkit import density_ratio as dr
from rlkit.errors import (
    RlkitError,
    check_network_fields,
    require,
    require_int_at_least,
    require_number,
)
from rlkit.nets import TorsoHead, make_torso
from rlkit.ops import (
    batched_index,
    clipped_adam,
    epsilon_greedy,
    gradient_step,
    target_network_update,
)
from rlkit.types import (
    Agent,
    Array,
    EnvSpec,
    Metrics,
    PRNGKey,
    PyTree,
    RoundFeed,
    TabularModel,
    Transition,
)

WEIGHT_CLASSES = ("tables", "occupancy-ratios", "signed-occupancy-ratios")
"""The exact version's weight classes W (`Config.weight_class`)."""

MAX_FINITE_CLASS_WORK = 2e8
"""Cap on |F| * |W| * S * A, the finite weight class's work per round (cells scored)."""


@dataclass(frozen=True)
class Config:
    """GLOW's hyper-parameters (HyGLOW's differ in defaults only: `HybridConfig`)."""

    version: str = "exact"
    """"exact" (finite F, tabular W, solved exactly each round) or "neural" (networks, GDA)."""
    preset: str = "practical"
    """"practical" (the fields below as set) or "paper": the paper's schedules gamma_t = gamma_0 t,
    alpha_t = 8 / gamma_t (replaces kappa), per-layer radius beta_t = confidence * gamma_t *
    log(6 |F| |W| t H / delta) / (t - 1) (replaces beta), t = the round, and HyGLOW's offline
    schedule (round t: the dataset's first t - 1 episodes, half and half with the online ones)."""
    confidence: float = 36.0
    """Paper preset: c in beta_t (36 in the paper)."""
    delta: float = 0.1
    """Paper preset: the failure probability in beta_t's logarithm."""
    offline_schedule: str | None = None
    """HyGLOW's dataset per round: "all" (the whole dataset from round 1), "paper" (round t: its
    first t - 1 episodes, half and half with the online ones), or None: by the preset."""
    value_class: str = "auto"
    """Exact F: "auto" (the env's class: combination-lock, deepsea) or a .npy of Q-tables
    [M, S, A] over the env's states."""
    weight_class: str = "tables"
    """Exact W: "tables" (all tables (x, a) -> [0, gamma], or [-gamma, gamma] with
    signed_weights; closed-form adversary), "occupancy-ratios" (the ratios between the
    occupancies of F's greedy policies, built from the env's model: the paper's mixture class,
    Eq. 34) or "signed-occupancy-ratios" (those and their negations, Eq. 38). The finite classes
    enumerate F (a small env only) and ignore signed_weights."""
    beta: float = 0.25
    """Confidence radius on the summed weighted loss (GLOW's constraint)."""
    kappa: float = 0.5
    """Quadratic weight penalty in L(f, w) = E[w delta - kappa w^2]; 0: MABO's discrepancy."""
    gamma_0: float = 1.0
    """Truncation constant: weights are clipped at gamma_0 * sqrt(t)."""
    signed_weights: bool = False
    """Let the adversary use negative weights too (W closed under negation)."""
    optimism: bool = True
    """GLOW's optimism (False: HyGLOW's minimum-loss offline learner)."""
    hybrid: bool = False
    """Learn from an offline dataset as well (HyGLOW; needs --dataset)."""
    episodes_per_round: int = 1
    """Episodes rolled out per round (1 in the theory)."""
    buffer_episodes: int = 2_000
    """Online episodes kept (the exact version refits on all of them every round, so a run may
    not outgrow it; the neural one forgets the oldest)."""
    total_steps: int = 20_000
    """Default env steps of a run (--total-steps overrides)."""
    # Neural version.
    learning_rate: float = 3e-4
    """Neural: Adam step size of the Q-network (slower than the weights: two time scales)."""
    weight_learning_rate: float = 3e-3
    """Neural: Adam step size of the weight network."""
    weight_steps: int = 5
    """Neural: ascent steps of the weight network per Q-network step."""
    updates_per_round: int = 32
    """Neural: descent-ascent updates per round."""
    batch_size: int = 128
    """Neural: rows per update."""
    optimism_coef: float = 1.0
    """Neural GLOW: lambda, the weight of max_a f(x_1, a) in the Q-network's objective."""
    discount: float = 1.0
    """Neural: discount of the residual's bootstrap (1: the episodic return)."""
    target_update_every: int = 100
    """Neural: Q updates between hard target-network copies."""
    target_network: bool | None = None
    """Neural: bootstrap from a target network (FQI style, semi-gradient: the method then needs
    Bellman completeness, which density ratios are meant to avoid). False: from the Q-network
    itself, differentiated through max_a' f(x', a'), the paper's objective. None: True under the
    practical preset, False under the paper one."""
    refit: bool = False
    """Neural: re-initialise both networks before each round's fit (the paper runs its offline
    learner afresh on each round's data); the exact version always refits."""
    offline_fraction: float | None = None
    """Neural HyGLOW: share of each batch from the dataset (None: in proportion to sizes)."""
    epsilon: float = 0.0
    """Neural: probability of a uniform action in rollouts (0: greedy, the paper's rule)."""
    max_grad_norm: float | None = 10.0
    """Neural: clip gradients to this global norm; None disables clipping."""
    hidden_sizes: tuple[int, ...] = (128, 128)
    """Neural: MLP widths (both networks)."""
    activation: str = "relu"
    """Neural: MLP activation, "relu" or "tanh"."""
    cnn: str = "nature"
    """Neural: torso for image observations, "nature", "impala" or "impala-small" (rlkit.nets)."""

    def __post_init__(self):
        require(self.version in ("exact", "neural"), "version",
                f"must be 'exact' or 'neural', got {self.version!r}.")
        require(self.preset in ("practical", "paper"), "preset",
                f"must be 'practical' or 'paper', got {self.preset!r}.")
        require_number(self.confidence, "confidence", low=0, low_open=True)
        require_number(self.delta, "delta", low=0, high=1, low_open=True, high_open=True)
        require(self.weight_class in WEIGHT_CLASSES, "weight_class",
                f"must be one of {', '.join(WEIGHT_CLASSES)}, got {self.weight_class!r}.")
        require(self.weight_class == "tables" or self.version == "exact", "weight_class",
                f"{self.weight_class!r} is a finite class of the exact version; use "
                "--agent.version exact or --agent.weight-class tables.")
        require(self.offline_schedule in (None, "all", "paper"), "offline_schedule",
                f"must be 'all', 'paper' or None (by the preset), got {self.offline_schedule!r}.")
        require_number(self.beta, "beta", low=0)
        require_number(self.kappa, "kappa", low=0)
        require_number(self.gamma_0, "gamma_0", low=0, low_open=True)
        for name in ("episodes_per_round", "buffer_episodes", "total_steps", "weight_steps",
                     "updates_per_round", "batch_size", "target_update_every"):
            require_int_at_least(getattr(self, name), name, 1)
        for name in ("learning_rate", "weight_learning_rate"):
            require_number(getattr(self, name), name, low=0, low_open=True, hint="try 1e-3.")
        require_number(self.optimism_coef, "optimism_coef", low=0)
        require_number(self.discount, "discount", low=0, high=1)
        if self.offline_fraction is not None:
            require_number(self.offline_fraction, "offline_fraction", low=0, high=1,
                           hint="None: in proportion to the sources' sizes.")
        require_number(self.epsilon, "epsilon", low=0, high=1)
        if self.max_grad_norm is not None:
            require_number(self.max_grad_norm, "max_grad_norm", low=0, low_open=True,
                           hint="None disables clipping.")
        check_network_fields(self)


@dataclass(frozen=True)
class HybridConfig(Config):
    """HyGLOW: H2O with the minimax learner; no optimism, signed weights, offline data."""

    signed_weights: bool = True
    """Let the adversary use negative weights too (W closed under negation)."""
    optimism: bool = False
    """GLOW's optimism (False: HyGLOW's minimum-loss offline learner)."""
    hybrid: bool = True
    """Learn from an offline dataset as well (HyGLOW; needs --dataset)."""
    offline_fraction: float | None = 0.5
    """Neural HyGLOW: share of each batch from the dataset (None: in proportion to sizes)."""


# --------------------------------------------------------------------------------------------
# Exact version
# --------------------------------------------------------------------------------------------


@struct.dataclass
class ExactState:
    """The exact learner's state: the current f_t and the key of its tie-breaking.

    Attributes:
        q_table: [S, A] the Q-table chosen in the last round.
        key: PRNG key of the tie-breaking priorities, fixed for the whole run (so a choice
            changes only when it stops being among the best).
    """

    q_table: Array
    key: Array


def load_value_class(config: Config, spec: EnvSpec,
                     value_class: dr.ProductValueClass | None = None,
                     ) -> dr.ProductValueClass | Array:
    """The exact version's F: the env's product class (`value_class`, from the env's
    `Environment.value_class` hook), or the enumerated tables of a file."""
    if config.value_class == "auto":
        require(value_class is not None, "value_class",
                f"env {spec.name!r} has no built-in value class (combination-lock and deepsea "
                "do); pass a .npy of Q-tables [M, S, A] or use --agent.version neural.")
        dr.check_product_class(value_class)
        return value_class
    path = Path(config.value_class)
    num_states, num_actions = int(np.prod(spec.obs_shape)), spec.num_actions
    expected = (f"[M, S, A] = [M, {num_states}, {num_actions}] for env {spec.name!r} (M Q-tables "
                "over its states and actions)")
    require(path.exists(), "value_class",
            f"{path}: no such file; pass 'auto' or a .npy of Q-tables {expected}.")
    require(path.is_file() and path.suffix == ".npy", "value_class",
            f"{path} is not a .npy file; pass 'auto' or a .npy of Q-tables {expected}.")
    try:
        tables = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError):
        raise RlkitError(f"value_class: {path} is not a .npy array file (save the Q-tables with "
                         f"numpy.save); expected {expected}.") from None
    require(isinstance(tables, np.ndarray) and tables.ndim == 3
            and tables.shape[1] >= num_states and tables.shape[2] == num_actions
            and np.issubdtype(tables.dtype, np.floating) and np.isfinite(tables).all(),
            "value_class", f"{path} holds {tables.dtype} {tables.shape}; expected finite floats "
            f"{expected}.")
    return jnp.asarray(tables, jnp.float32)


def load_weight_class(config: Config, spec: EnvSpec, value_class: dr.ProductValueClass | Array,
                      model: TabularModel | None) -> tuple[Array, Array] | None:
    """The exact version's finite W (`config.weight_class`), or None for all tables.

    W is `rlkit.density_ratio.occupancy_ratio_class` over the distinct greedy policies of F
    (Amortila et al. 2024, Eq. 34; Eq. 38 signed), built from the env's exact `model`; the
    selection then scores the enumerated F against it (`select_enumerated(weights=...)`), so a
    product class is enumerated. The zero weight is added (each layer's loss is then >= 0, as
    with tables) and identical weight tables are kept once.

    Returns:
        None, or (tables [M, S, A] the enumerated F, weights [N, S, A]).

    Raises:
        RlkitError: the env has no exact model, F has a single greedy policy, or the work per
            round |F| |W| S A exceeds `MAX_FINITE_CLASS_WORK`.
    """
    if config.weight_class == "tables":
        return None
    name = config.weight_class
    require(model is not None, "weight_class",
            f"{name!r} is built from the env's exact model and env {spec.name!r} has none; use "
            "--agent.weight-class tables.")
    if isinstance(value_class, dr.ProductValueClass):
        size = int(np.prod(np.asarray(value_class.valid).sum(axis=1), dtype=np.float64))
        cells = value_class.rows.shape[0] * spec.num_actions
        require(size * cells <= MAX_FINITE_CLASS_WORK, "weight_class",
                f"{name!r} enumerates F, and env {spec.name!r}'s class has {size:.3g} members; "
                "use a smaller env (e.g. --env-config.horizon 3) or --agent.weight-class tables.")
        tables = value_class.enumerate()
    else:
        tables = value_class
    num_tables, num_states, num_actions = tables.shape
    require(model.num_states == num_states, "value_class",
            f"covers {num_states} states but the env's model has {model.num_states}; "
            f"{name!r} needs F over the model's states.")
    greedy = np.asarray(tables).argmax(axis=-1)  # [M, S]
    policies = np.unique(np.eye(num_actions, dtype=np.float32)[greedy], axis=0)  # [P, S, A]
    require(len(policies) >= 2, "weight_class",
            f"every f in F has the same greedy policy, so {name!r} (ratios between their "
            "occupancies) is empty; use --agent.weight-class tables.")
    signed = name == "signed-occupancy-ratios"
    most = len(policies) * (len(policies) + 1) * (2 if signed else 1) + 1  # + the zero weight
    work = num_tables * most * num_states * num_actions
    require(work <= MAX_FINITE_CLASS_WORK, "weight_class",
            f"{name!r} would score {num_tables} tables against up to "
            f"{most} weights ({work:.3g} cells a round, limit "
            f"{MAX_FINITE_CLASS_WORK:.0e}); use a smaller env or --agent.weight-class tables.")
    ratios = np.asarray(dr.occupancy_ratio_class(model, jnp.asarray(policies), signed=signed))
    # w = 0 joins the class: each layer's max is then >= 0, so a layer the data refute cannot be
    # offset by another layer's negative loss in the practical (summed) radius.
    weights = np.unique(np.concatenate([np.zeros_like(ratios[:1]), ratios]), axis=0)
    return jnp.asarray(tables, jnp.float32), jnp.asarray(weights)


def make_exact_agent(config: Config, spec: EnvSpec,
                     value_class: dr.ProductValueClass | None = None,
                     model: TabularModel | None = None) -> Agent:
    """The exact GLOW / HyGLOW learner on a tabular env with one-hot observations."""
    value_class = load_value_class(config, spec, value_class)
    finite = load_weight_class(config, spec, value_class, model)
    if finite is not None:  # W finite: select from the enumerated F
        value_class, weights = finite
    product = isinstance(value_class, dr.ProductValueClass)
    num_states = value_class.rows.shape[0] if product else value_class.shape[1]
    obs_size = int(np.prod(spec.obs_shape))
    require(obs_size <= num_states, "value_class",
            f"covers {num_states} states but the env's one-hot observations have {obs_size} "
            "entries; the class must be over the env's states.")
    obs_ndim = len(spec.obs_shape)

    paper = config.preset == "paper"
    horizon = spec.max_episode_steps
    if product:
        log_class = float(np.log(np.asarray(value_class.valid).sum(axis=1)).sum())
    else:
        log_class = float(np.log(value_class.shape[0]))
    # |W| in beta_t's logarithm: a finite class's size; tabular W is infinite, |W| := |F|.
    log_weights = log_class if finite is None else float(np.log(weights.shape[0]))
    # Layers matter only to GLOW's confidence set; HyGLOW minimises the sum over layers, for a
    # finite W under the paper preset the sum of the per-layer max_w |L_h| (Eq. 14).
    # A finite W is a product over layers (one w_h per layer, as in the paper; a single w for
    # all layers pays the penalty of every layer it weights, and on a lock then refutes nothing).
    absolute = finite is not None and paper and not config.optimism
    num_layers = horizon if finite is not None or (paper and config.optimism) else None

    def select(stats: dr.TabularStatistics, key: PRNGKey, gamma: Array, kappa, beta
               ) -> dr.Selection:
        kwargs = dict(beta=beta, kappa=kappa, gamma=gamma, signed=config.signed_weights,
                      num_layers=num_layers)
        if product:
            return dr.select_product(value_class, stats, key, **kwargs)
        if finite is not None:
            kwargs.update(weights=weights, absolute=absolute, summed_constraint=not paper)
        return dr.select_enumerated(value_class, stats, key, optimistic=config.optimism, **kwargs)

    def paper_round(data: Transition) -> Array:
        """t = 1 + online episodes in the data / episodes per round (offline rows excluded)."""
        valid = data.extras.get("valid", jnp.ones(data.reward.shape, bool)).astype(bool)
        offline = data.extras.get("offline", jnp.zeros(data.reward.shape, bool))
        online_starts = (data.extras["first"] & valid & ~offline).sum()
        return online_starts.astype(jnp.float32) / config.episodes_per_round + 1.0

    def init(key: PRNGKey) -> ExactState:
        return ExactState(q_table=jnp.zeros((num_states, spec.num_actions)), key=key)

    def update(state: ExactState, data: Transition, key: PRNGKey) -> tuple[ExactState, Metrics]:
        """Re-solve the round's problem on all of `data` (rows masked by extras["valid"])."""
        del key  # ties are broken by the state's fixed priorities, not the driver's key
        stats = dr.tabular_statistics(data, num_states, spec.num_actions, obs_ndim)
        if paper:
            round_t = paper_round(data)
            # log(6 |F| |W| T H / delta) (tabular W is infinite: |W| := |F|, the paper is
            # silent on its size) and T := t (the horizon of the run is not known in advance).
            log_term = (np.log(6.0 * horizon / config.delta) + log_class + log_weights
                        + jnp.log(round_t))
            gamma, kappa, beta = dr.paper_schedule(round_t, config.gamma_0, config.confidence,
                                                   log_term)
        else:
            gamma = dr.truncation_level(config.gamma_0, stats.num_episodes)
            kappa, beta = config.kappa, config.beta
        chosen = select(stats, state.key, gamma, kappa, beta)
        metrics = {"class_loss": chosen.loss, "feasible": chosen.feasible,
                   "candidates_left": chosen.candidates_left, "truncation": gamma,
                   "data_episodes": stats.num_episodes}
        if paper:
            metrics.update(round=round_t, radius=beta, penalty=kappa)
        return (ExactState(q_table=chosen.q_table, key=state.key),
                {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()})

    def greedy(state: ExactState, obs: Array) -> Array:
        return jnp.argmax(state.q_table[dr.observation_index(obs, obs_ndim)], axis=-1)

    def act(state: ExactState, obs: Array, key: PRNGKey, step: Array) -> tuple[Array, dict]:
        del key, step
        return greedy(state, obs).astype(jnp.int32), {}

    def policy(state: ExactState, obs: Array) -> Array:
        return jax.nn.one_hot(greedy(state, obs), spec.num_actions, dtype=jnp.float32)

    feed = RoundFeed(num_envs=config.episodes_per_round, episode_length=spec.max_episode_steps,
                     updates_per_round=1, batch_size=None, buffer_episodes=config.buffer_episodes,
                     uses_dataset=config.hybrid, offline_schedule=offline_schedule(config))
    return Agent(init=init, act=act, update=update, policy=policy, feed=feed)


# --------------------------------------------------------------------------------------------
# Neural version
# --------------------------------------------------------------------------------------------


@struct.dataclass
class NeuralState:
    """The neural learner's state.

    Attributes:
        q_params: Q-network parameters.
        target_params: target Q-network parameters (a copy).
        weight_params: weight-network parameters.
        q_opt_state: optax state of the Q-network.
        weight_opt_state: optax state of the weight network.
        update_step: int32 scalar, Q updates done.
    """

    q_params: PyTree
    target_params: PyTree
    weight_params: PyTree
    q_opt_state: optax.OptState
    weight_opt_state: optax.OptState
    update_step: Array


def make_neural_agent(config: Config, spec: EnvSpec) -> Agent:
    """Neural GLOW / HyGLOW: Q- and weight networks trained by gradient descent-ascent."""
    num_actions = spec.num_actions
    torso = lambda: make_torso(spec, config.cnn, config.hidden_sizes, config.activation)  # noqa: E731
    q_network = TorsoHead(torso(), num_actions)
    weight_network = TorsoHead(torso(), num_actions)  # same shape: one output per action
    q_optimizer = clipped_adam(config.learning_rate, config.max_grad_norm)
    weight_optimizer = clipped_adam(config.weight_learning_rate, config.max_grad_norm)

    def init(key: PRNGKey) -> NeuralState:
        q_key, w_key = jax.random.split(key)
        dummy = jnp.zeros((1, *spec.obs_shape), spec.obs_dtype)
        q_params = q_network.init(q_key, dummy)
        weight_params = weight_network.init(w_key, dummy)
        return NeuralState(q_params=q_params, target_params=jax.tree.map(jnp.copy, q_params),
                           weight_params=weight_params, q_opt_state=q_optimizer.init(q_params),
                           weight_opt_state=weight_optimizer.init(weight_params),
                           update_step=jnp.zeros((), jnp.int32))

    def weights(weight_params: PyTree, obs: Array, action: Array, gamma: Array) -> Array:
        raw = batched_index(weight_network.apply(weight_params, obs), action)
        if not config.signed_weights:
            raw = jax.nn.softplus(raw)
        return dr.clip_weights(raw, gamma)

    paper = config.preset == "paper"
    use_target = (not paper) if config.target_network is None else config.target_network

    def residuals(q_params: PyTree, target_params: PyTree,
                  batch: Transition) -> tuple[Array, Array]:
        q = q_network.apply(q_params, batch.obs)
        q_taken = batched_index(q, batch.action)
        bootstrap = target_params if use_target else q_params  # no target: full gradient
        next_value = q_network.apply(bootstrap, batch.next_obs).max(axis=-1)
        delta = dr.td_residual(q_taken, batch.reward, config.discount * next_value,
                               batch.terminated)
        return delta, q

    def update(state: NeuralState, batch: Transition, key: PRNGKey) -> tuple[NeuralState, Metrics]:
        del key
        rounds = state.update_step // config.updates_per_round + 1
        if paper:  # gamma_t = gamma t, alpha_t = 8 / gamma_t
            gamma = config.gamma_0 * rounds.astype(jnp.float32)
            kappa = 8.0 / gamma
        else:
            gamma = dr.truncation_level(config.gamma_0, rounds)
            kappa = config.kappa
        delta, _ = residuals(state.q_params, state.target_params, batch)
        delta = jax.lax.stop_gradient(delta)

        def weight_loss(weight_params):  # the adversary ascends L: descend -L
            w = weights(weight_params, batch.obs, batch.action, gamma)
            return -dr.weighted_loss(w, delta, kappa)

        def weight_step(carry, _):
            weight_params, opt_state = carry
            grads = jax.grad(weight_loss)(weight_params)
            updates, opt_state = weight_optimizer.update(grads, opt_state, weight_params)
            return (optax.apply_updates(weight_params, updates), opt_state), None

        (weight_params, weight_opt_state), _ = jax.lax.scan(
            weight_step, (state.weight_params, state.weight_opt_state), None,
            length=config.weight_steps)
        w = jax.lax.stop_gradient(weights(weight_params, batch.obs, batch.action, gamma))
        first = batch.extras["first"].astype(jnp.float32)

        def q_loss(q_params):
            delta, q = residuals(q_params, state.target_params, batch)
            loss = dr.weighted_loss(w, delta, kappa)
            start_value = (q.max(axis=-1) * first).sum() / jnp.maximum(first.sum(), 1.0)
            if config.optimism:
                loss = loss - config.optimism_coef * start_value
            return loss, (delta, q, start_value)

        q_params, q_opt_state, loss, (delta, q, start_value), grad_norm = gradient_step(
            q_optimizer, q_loss, state.q_params, state.q_opt_state)
        update_step = state.update_step + 1
        target_params = target_network_update(q_params, state.target_params, update_step, 1.0,
                                              config.target_update_every)
        state = NeuralState(q_params=q_params, target_params=target_params,
                            weight_params=weight_params, q_opt_state=q_opt_state,
                            weight_opt_state=weight_opt_state, update_step=update_step)
        metrics = {"q_loss": loss, "weight_loss": -weight_loss(weight_params),
                   "weight_mean": w.mean(), "weight_abs_max": jnp.abs(w).max(),
                   "truncation": gamma, "td_abs_mean": jnp.abs(delta).mean(),
                   "q_mean": q.mean(), "start_value": start_value,
                   "grad_norm": grad_norm}
        return state, {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}

    def greedy(state: NeuralState, obs: Array) -> Array:
        return jnp.argmax(q_network.apply(state.q_params, obs), axis=-1)

    def act(state: NeuralState, obs: Array, key: PRNGKey, step: Array) -> tuple[Array, dict]:
        del step
        return epsilon_greedy(key, q_network.apply(state.q_params, obs), config.epsilon), {}

    def policy(state: NeuralState, obs: Array) -> Array:
        return jax.nn.one_hot(greedy(state, obs), num_actions, dtype=jnp.float32)

    feed = RoundFeed(num_envs=config.episodes_per_round, episode_length=spec.max_episode_steps,
                     updates_per_round=config.updates_per_round, batch_size=config.batch_size,
                     buffer_episodes=config.buffer_episodes,
                     offline_fraction=config.offline_fraction, uses_dataset=config.hybrid,
                     offline_schedule=offline_schedule(config), refit=config.refit)
    return Agent(init=init, act=act, update=update, policy=policy, feed=feed)


def offline_schedule(config: Config) -> str:
    """The round driver's offline schedule: the paper's for HyGLOW under the paper preset."""
    if config.offline_schedule is not None:
        return config.offline_schedule
    return "paper" if config.preset == "paper" and config.hybrid else "all"


def make_agent(config: Config, spec: EnvSpec,
               value_class: dr.ProductValueClass | None = None,
               model: TabularModel | None = None) -> Agent:
    """Build GLOW (or HyGLOW, for a `HybridConfig` or `hybrid=True`) for an environment.

    Args:
        config: the hyper-parameters.
        spec: the environment's spec (exact version: a tabular env with one-hot observations).
        value_class: the env's finite class F (`env.value_class()`), used by the exact version
            with `value_class="auto"`; the neural version ignores it.
        model: the env's exact model (`env.model(params)`), from which the exact version builds
            a finite weight class (`weight_class` other than "tables"); else unused.

    Returns:
        The `Agent`, fed by a `RoundFeed` (run it with `rlkit.loops.rounds`).
    """
    if config.version == "exact":
        return make_exact_agent(config, spec, value_class, model)
    return make_neural_agent(config, spec)


__all__ = ["Config", "ExactState", "HybridConfig", "MAX_FINITE_CLASS_WORK", "NeuralState",
           "WEIGHT_CLASSES", "load_value_class", "load_weight_class",
           "make_agent", "make_exact_agent", "make_neural_agent"]
