"""DQN with the double-DQN target: Mnih et al. 2015 (Nature), van Hasselt et al. 2016 (AAAI); and
Hy-Q (`HybridConfig`): Song, Zhou, Sekhari, Bagnell, Krishnamurthy and Sun 2023, "Hybrid RL:
Using Both Offline and Online Data Can Make RL Efficient" (ICLR 2023).

DQN: fit Q(s, a) by regressing on bootstrapped one-step targets sampled from a replay buffer,
with a slowly updated copy of the network (the target network) providing the bootstrap. Double
DQN (van Hasselt et al. 2016, eq. 4) picks the next action with the online network and evaluates
it with the target network, which removes most of the max-operator's overestimation:

    y = r + gamma * (1 - terminated) * Q_target(s', argmax_a Q_online(s', a))

The agent acts epsilon-greedily, with epsilon annealed linearly over env steps, and reports the
greedy policy. With `prioritised` the buffer is proportional prioritised replay (Schaul et al.
2016): rows are drawn with probability P(i) = p_i^alpha / sum_k p_k^alpha, each row's loss is
weighted by w_i = (N * P(i))^-beta / max_j w_j with beta annealed from `priority_beta` to 1 over
the run, and sampled rows get the new priority |TD error| + epsilon.

Hy-Q: the same update, where every batch mixes the offline dataset and the agent's own data in a
fixed proportion (half and half in the paper). The offline data covers a good policy's state
distribution; the online data covers the learner's own, which is where a Bellman error would
mislead it. With both, Q-learning needs neither an exploration bonus nor the coverage
assumptions of purely offline or purely online methods (the paper proves it efficient when the
offline data supports a high-quality policy and the MDP has bounded bilinear rank). Hy-Q is the
baseline HyGLOW and FTPedel are measured against. `HybridConfig` differs from `Config` in
defaults only: `python -m rlkit.train hyq --env ENV --dataset DIR`.

How it runs: a `ReplayFeed` (on-device driver `rlkit.loops.on_device` for JAX envs, host driver
`rlkit.loops.host` for gymnasium / procgen). Each driver iteration steps `num_envs` envs once
with `act` and adds the transitions to the buffer; once it holds `learning_starts` of them, one
`update` every `train_every` iterations consumes a [batch_size] batch (`rlkit.loops.common.
replay_learn`; for Hy-Q, `round(offline_fraction * batch_size)` of its rows come from the
dataset, `rlkit.data.hybrid`). Reading the agent takes this file, `rlkit.ops` and that driver;
the torsos come from `rlkit.nets`.

Deviations from the papers, and why:

* Adam (as CleanRL and most modern ports) instead of the Nature paper's RMSProp, and the squared
  TD error by default with gradients clipped by global norm (`max_grad_norm`). The Nature paper's
  error clipping, i.e. the Huber loss (delta 1), is `loss="huber"`: it suits clipped Atari rewards
  but learns slowly where returns are large (CartPole's reach 100 with gamma 0.99: at 200k steps
  Huber plateaued near 40-140 where MSE reached 300-500).
* `double=False` gives the Nature target `r + gamma * max_a Q_target(s', a)`.
* Truncated transitions (time limits) bootstrap from the true next observation; only terminated
  ones do not (Pardo et al. 2018). The papers treated every episode end as terminal.
* The target network is updated every `target_update_every` *updates* (not env steps) as
  `target <- tau * online + (1 - tau) * target`; `tau = 1` is the papers' hard copy, and
  `target_update_every = 1` with a small `tau` is Polyak averaging.
* Epsilon is a function of the env steps the driver has taken (`act`'s `step`): constant at
  `epsilon_start` while the buffer fills up to `learning_starts`, then linear to `epsilon_end`
  over `epsilon_decay_steps` env steps (the papers anneal from step 0; with `epsilon_start = 1`
  both explore uniformly during warm-up).
* Prioritised replay samples by stratified inverse-CDF search instead of a sum tree
  (`rlkit.data.replay.make_prioritised_buffer`), anneals beta over env steps (`total_steps`,
  which `--total-steps` sets), and is not combined with Hy-Q's dataset rows.
* Hy-Q: rollouts are greedy by default (`epsilon_start = epsilon_end = 0`), as in the paper's
  algorithm, which explores only through the online data its greedy policies collect. The
  paper's analysis refits Q from scratch every round (FQI); like its neural experiments this
  takes incremental gradient steps with a target network. `offline_fraction` may follow a
  linear schedule (`offline_fraction_end`, `offline_fraction_steps` in driver iterations), as in
  offline-to-online work; the paper keeps it at 0.5. Updates start once the online buffer holds
  `learning_starts` transitions (default one batch), so online rows never repeat a handful.
* The replay buffer stores `next_obs` beside `obs` (simple, twice the memory of frame stacking).

Metrics returned by `update` (float32 scalars):

* `loss` (= `td_loss`): the mean half-squared (or Huber) TD error of the batch before the step,
  importance-weighted with `prioritised`.
* `q_mean`: mean Q(s, a) of the sampled actions; drifting far above plausible returns is
  overestimation.
* `target_mean`: mean bootstrapped target y.
* `td_abs_mean`: mean |Q(s, a) - y|.
* `grad_norm`: global gradient norm before clipping.
* Hy-Q adds `offline_fraction` (the driver's), the share of the batch drawn from the dataset.
* With an intrinsic reward: `intrinsic_reward_mean` (the normalised bonus added to the batch's
  rewards, before `intrinsic_coef`), `intrinsic_bonus_mean` (raw) and `predictor_loss`.

Intrinsic rewards (`intrinsic = "rnd"` or `"rdd"`, `rlkit.intrinsic`): each sampled batch's
reward becomes `r + intrinsic_coef * b(next_obs) / std`, the bonus read at sampling time with the
current predictor (so it decays as the predictor learns, however old the row), `std` the running
std of the bonus itself (a replay batch is no stream, so the transform's return discount is 0);
then the predictor takes one step on an `intrinsic_update_proportion` share of the batch
(`intrinsic_update_rows`: an exact subset, or RND's Bernoulli mask). The
batch's observations update the transform's running statistics before its bonus is read (the
first batches come from the epsilon = 1 warm-up: random-agent steps, as RND initialises them).
The transform's state lives in `State.intrinsic`, so checkpoints carry it.

The exploration rate is not a metric: it is the schedule above at the row's `env_steps`. With
`prioritised`, `update` also returns `metrics[PRIORITIES]` ([B] |TD error|), which the driver
pops to set the sampled rows' priorities before logging (`rlkit.types.PRIORITIES`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import optax
from flax import struct

from rlkit import intrinsic as intrinsic_rewards
from rlkit.errors import (
    RlkitError,
    check_optimiser_fields,
    require,
    require_int_at_least,
    require_number,
    require_one_of,
)
from rlkit.nets import TorsoHead, make_torso
from rlkit.ops import (
    clipped_adam,
    epsilon_greedy,
    gradient_step,
    target_network_update,
    td_loss,
)
from rlkit.types import (
    PRIORITIES,
    Agent,
    Array,
    EnvSpec,
    Metrics,
    PRNGKey,
    PyTree,
    ReplayFeed,
    Transition,
)


@dataclass(frozen=True)
class Config:
    """DQN hyper-parameters. The defaults learn CartPole and small toy MDPs, whatever the budget.

    The hybrid fields (`offline_fraction`...) default to off; `HybridConfig` turns them on.
    """

    learning_rate: float = 2.5e-4
    """Adam step size."""
    gamma: float = 0.99
    """Discount factor, in [0, 1]."""
    batch_size: int = 128
    """Transitions per update."""
    num_envs: int = 8
    """Environments stepped in parallel; each driver iteration adds num_envs transitions."""
    buffer_size: int = 10_000
    """Replay buffer capacity in transitions."""
    learning_starts: int = 1_000
    """Transitions in the buffer before the first update (batch_size <= it <= buffer_size)."""
    train_every: int = 1
    """Driver iterations (of num_envs env steps each) between updates."""
    target_update_every: int = 100
    """Updates between target-network updates."""
    tau: float = 1.0
    """Target update step: target <- tau * online + (1 - tau) * target; 1 is a hard copy."""
    max_grad_norm: float | None = 10.0
    """Clip gradients to this global norm; None disables clipping."""
    loss: str = "mse"
    """TD loss: "mse" (half squared error) or "huber" (delta 1, the Nature paper's clipping)."""
    double: bool = True
    """Double DQN target (van Hasselt et al. 2016); False gives the Nature max target."""
    epsilon_start: float = 1.0
    """Exploration rate until learning_starts env steps."""
    epsilon_end: float = 0.05
    """Exploration rate after the decay."""
    epsilon_decay_steps: int = 10_000
    """Env steps after learning_starts over which epsilon decays linearly (0: constant end)."""
    total_steps: int = 100_000
    """Env steps of the run per seed (--total-steps sets it); prioritised beta reaches 1 there."""
    prioritised: bool = False
    """Proportional prioritised replay (Schaul et al. 2016) instead of uniform sampling."""
    priority_alpha: float = 0.6
    """Prioritised: priority exponent alpha, >= 0 (0 samples uniformly); the paper's 0.6."""
    priority_beta: float = 0.4
    """Prioritised: importance exponent beta at the start, in [0, 1]; annealed to 1."""
    priority_epsilon: float = 1e-6
    """Prioritised: > 0, added to |TD error| so that no row becomes unsampleable."""
    offline_fraction: float = 0.0
    """Hy-Q: share of each batch drawn from the offline dataset, in [0, 1] (0: plain DQN)."""
    offline_fraction_end: float | None = None
    """Hy-Q: if set, the share moves linearly to this value over offline_fraction_steps."""
    offline_fraction_steps: int = 0
    """Hy-Q: driver iterations over which offline_fraction moves to offline_fraction_end."""
    hidden_sizes: tuple[int, ...] = (128, 128)
    """MLP widths for vector observations."""
    activation: str = "relu"
    """MLP activation: "relu" or "tanh"."""
    cnn: str = "nature"
    """Torso for image observations: "nature" (Mnih et al. 2015), "impala" (procgen) or
    "impala-small" (rlkit.nets)."""
    intrinsic: str = "none"
    """Intrinsic reward added to each batch's rewards: none, rnd or rdd (rlkit.intrinsic)."""
    intrinsic_coef: float = 1.0
    """Weight of the normalised intrinsic reward (>= 0)."""
    intrinsic_output_dim: int = 64
    """Output dimension k of the intrinsic predictor and target."""
    intrinsic_hidden_sizes: tuple[int, ...] = (64, 64)
    """ReLU MLP widths of the intrinsic predictor and target."""
    intrinsic_learning_rate: float = 3e-4
    """Adam step size of the intrinsic predictor."""
    intrinsic_sigma: float = 1.0
    """RDD: standard deviation of the target distribution (> 0)."""
    intrinsic_sigma_network: bool = False
    """RDD: per-state sigma from a frozen random network instead of the fixed sigma."""
    intrinsic_mean_scale: float = 1.0
    """RDD/RND: RMS magnitude of the target mean (the RDD paper's "mean")."""
    intrinsic_readout: str = "mean"
    """RDD: bonus against the target "mean" or a fresh "sample"."""
    intrinsic_update_proportion: float = 0.25
    """Share of each batch the predictor trains on, in (0, 1]."""
    intrinsic_update_rows: str = "subset"
    """How that share is drawn: an exact "subset" or RND's Bernoulli "mask" (slower)."""
    intrinsic_count_states: bool = False
    """Count visits per one-hot state in the transform's state (tabular envs, for plots)."""

    def __post_init__(self):
        check_optimiser_fields(self, learning_rate_hint="try 2.5e-4.")
        require_number(self.gamma, "gamma", low=0, high=1)
        for name in ("num_envs", "buffer_size", "learning_starts", "train_every",
                     "target_update_every"):
            require_int_at_least(getattr(self, name), name, 1)
        require_number(self.tau, "tau", low=0, high=1, low_open=True)
        require_one_of(self.loss, "loss", ("huber", "mse"))
        for name in ("epsilon_start", "epsilon_end", "priority_beta", "offline_fraction"):
            require_number(getattr(self, name), name, low=0, high=1)
        if self.offline_fraction_end is not None:
            require_number(self.offline_fraction_end, "offline_fraction_end", low=0, high=1)
        require_int_at_least(self.epsilon_decay_steps, "epsilon_decay_steps", 0)
        require_int_at_least(self.offline_fraction_steps, "offline_fraction_steps", 0)
        require_number(self.priority_alpha, "priority_alpha", low=0)
        require_number(self.priority_epsilon, "priority_epsilon", low=0, low_open=True)
        intrinsic_rewards.check_fields(self, prefix="intrinsic_")
        require(self.batch_size <= self.buffer_size, "batch_size",
                f"{self.batch_size} exceeds buffer_size {self.buffer_size}; lower batch_size or "
                "raise buffer_size.")
        require(self.learning_starts >= self.batch_size, "learning_starts",
                f"{self.learning_starts} is below batch_size {self.batch_size}; the first batch "
                "would repeat transitions. Raise learning_starts to at least batch_size.")
        require(self.learning_starts <= self.buffer_size, "learning_starts",
                f"{self.learning_starts} exceeds buffer_size {self.buffer_size}, so learning "
                "would never start; lower learning_starts or raise buffer_size.")
        require(not (self.prioritised and self.uses_dataset), "prioritised",
                "does not combine with offline data (offline_fraction > 0); drop one of them.")

    @property
    def uses_dataset(self) -> bool:
        """Whether batches mix in dataset rows (Hy-Q)."""
        return self.offline_fraction > 0 or bool(self.offline_fraction_end)

    def feed(self) -> ReplayFeed:
        """The `ReplayFeed` these fields describe."""
        return ReplayFeed(
            num_envs=self.num_envs, buffer_size=self.buffer_size, batch_size=self.batch_size,
            learning_starts=self.learning_starts, train_every=self.train_every,
            offline_fraction=self.offline_fraction,
            offline_fraction_end=self.offline_fraction_end,
            offline_fraction_steps=self.offline_fraction_steps,
            prioritised=self.prioritised, priority_alpha=self.priority_alpha,
            priority_beta=self.priority_beta, priority_epsilon=self.priority_epsilon,
            priority_beta_steps=self.total_steps)


@dataclass(frozen=True)
class HybridConfig(Config):
    """Hy-Q: DQN's fields with the dataset's share of each batch on (the paper's 0.5) and
    greedy rollouts."""

    learning_starts: int = 128
    """Online transitions stored before the first update (batch_size <= it <= buffer_size)."""
    epsilon_start: float = 0.0
    """Exploration rate until learning_starts env steps (0: the paper's greedy rollouts)."""
    epsilon_end: float = 0.0
    """Exploration rate after the decay."""
    epsilon_decay_steps: int = 0
    """Env steps after learning_starts over which epsilon decays linearly (0: constant end)."""
    offline_fraction: float = 0.5
    """Share of each batch drawn from the offline dataset (the paper's 0.5), in [0, 1]."""

    def __post_init__(self):
        super().__post_init__()
        # A schedule over 0 steps never moves (feed_fraction keeps the start value).
        scheduled = bool(self.offline_fraction_end) and self.offline_fraction_steps > 0
        require(self.offline_fraction > 0 or scheduled,
                "offline_fraction", "is 0 with no schedule, so Hy-Q would never see the dataset; "
                "use dqn for purely online learning.")


@struct.dataclass
class State:
    """DQN's training state; every leaf is an array of fixed shape and dtype.

    Attributes:
        params: online Q-network parameters.
        target_params: target-network parameters, a copy (never the same buffers as `params`,
            so a driver may donate the state).
        opt_state: optax state of the online parameters.
        update_step: int32 scalar, updates done so far (drives the target-network period).
        intrinsic: the intrinsic reward transform's `rlkit.intrinsic.State` (None without one).
    """

    params: PyTree
    target_params: PyTree
    opt_state: optax.OptState
    update_step: Array
    intrinsic: PyTree = None


class QNetwork(TorsoHead):
    """A torso (MLP or CNN from `rlkit.nets`) and a linear head: obs [B, ...] -> Q [B, A]
    (`num_outputs` is the number of actions)."""


def epsilon_schedule(config: Config) -> Callable[[Array], Array]:
    """The exploration rate after `step` env steps (int32 scalar) -> float32 scalar.

    `epsilon_start` until `learning_starts` env steps, then linear to `epsilon_end` over
    `epsilon_decay_steps` env steps, then `epsilon_end` (`epsilon_decay_steps = 0`: always
    `epsilon_end`).
    """
    if config.epsilon_decay_steps == 0:
        schedule = optax.constant_schedule(config.epsilon_end)
    else:
        schedule = optax.linear_schedule(
            config.epsilon_start, config.epsilon_end, config.epsilon_decay_steps)

    def epsilon(step: Array) -> Array:
        # optax's constant schedule returns a Python float; act wants an array.
        return jnp.asarray(schedule(jnp.maximum(step - config.learning_starts, 0)), jnp.float32)

    return epsilon


def make_agent(config: Config, spec: EnvSpec) -> Agent:
    """Build DQN (or Hy-Q, for a `HybridConfig`) for an environment.

    Args:
        config: the hyper-parameters.
        spec: the environment's spec (observation shape and dtype, number of actions).

    Returns:
        The `Agent` (init, act, update, policy) fed by a `ReplayFeed` (hybrid for Hy-Q).

    Raises:
        RlkitError: the environment has no discrete actions.
    """
    if spec.num_actions < 1:
        raise RlkitError(f"env {spec.name!r}: DQN needs discrete actions, got "
                         f"num_actions={spec.num_actions}.")
    num_actions = spec.num_actions
    network = QNetwork(make_torso(spec, config.cnn, config.hidden_sizes, config.activation),
                       num_actions)
    optimizer = clipped_adam(config.learning_rate, config.max_grad_norm)
    epsilon = epsilon_schedule(config)
    transform = None
    if config.intrinsic != "none":
        transform = intrinsic_rewards.make_transform(
            intrinsic_rewards.config_from_agent(config, return_gamma=0.0), spec.obs_shape)

    def init(key: PRNGKey) -> State:
        params = network.init(key, jnp.zeros((1, *spec.obs_shape), spec.obs_dtype))
        return State(
            params=params,
            # A real copy: outside jit the same arrays in two leaves would alias donated buffers.
            target_params=jax.tree.map(jnp.copy, params),
            opt_state=optimizer.init(params),
            update_step=jnp.zeros((), jnp.int32),
            # fold_in: the network's key stays the one plain DQN uses.
            intrinsic=None if transform is None else transform.init(
                jax.random.fold_in(key, 1), config.batch_size),
        )

    def add_bonus(transform_state, batch: Transition, key: PRNGKey):
        """(transform state, batch with r + intrinsic_coef * normalised bonus, metrics)."""
        transform_state = transform.observe(transform_state, batch.next_obs)
        raw = transform.bonus(transform_state, batch.next_obs, key)  # [B]
        transform_state, reward_int = transform.normalise_reward(transform_state, raw[None])
        reward_int = reward_int[0]  # [B]
        batch = batch.replace(reward=batch.reward + config.intrinsic_coef * reward_int)
        return transform_state, batch, {"intrinsic_reward_mean": reward_int.mean(),
                                        "intrinsic_bonus_mean": raw.mean()}

    def act(state: State, obs: Array, key: PRNGKey, step: Array) -> tuple[Array, dict]:
        """Epsilon-greedy actions [N] int32 for obs [N, *obs_shape]; extras is empty."""
        q = network.apply(state.params, obs)  # [N, A]
        return epsilon_greedy(key, q, epsilon(step)), {}

    def loss_fn(params: PyTree, target_params: PyTree, batch: Transition):
        q = network.apply(params, batch.obs)  # [B, A]
        # The online net's values at s' only select the double-DQN action: a separate forward
        # pass of stopped parameters, so the backward pass runs over the B rows of obs only (one
        # pass over obs and next_obs together back-propagates zeros through all 2B rows).
        q_next_online = network.apply(jax.lax.stop_gradient(params), batch.next_obs)  # [B, A]
        q_next_target = network.apply(target_params, batch.next_obs)  # [B, A]
        # Importance weights (N P(i))^-beta / max_j w_j of prioritised replay, from the driver.
        weight = batch.extras["weight"] if config.prioritised else None  # [B]
        td = td_loss(q, batch.action, batch.reward, batch.terminated, q_next_online,
                     q_next_target, config.gamma, double=config.double, loss=config.loss,
                     weight=weight)
        metrics = {"td_loss": td.loss, "q_mean": td.q_taken.mean(),
                   "target_mean": td.target.mean(), "td_abs_mean": jnp.abs(td.td_error).mean()}
        return td.loss, (metrics, jnp.abs(td.td_error))

    def update(state: State, batch: Transition, key: PRNGKey) -> tuple[State, Metrics]:
        """One gradient step on a batch with leaves [B, ...]; `key` is used by the intrinsic
        reward only (plain DQN is deterministic)."""
        transform_state, intrinsic_metrics = None, {}
        if transform is not None:
            bonus_key, predictor_key = jax.random.split(key)
            transform_state, batch, intrinsic_metrics = add_bonus(state.intrinsic, batch,
                                                                  bonus_key)
            transform_state, predictor_metrics = transform.update(
                transform_state, batch.next_obs, predictor_key)
            intrinsic_metrics.update(predictor_metrics)
        params, opt_state, loss, (metrics, td_abs), grad_norm = gradient_step(
            optimizer, loss_fn, state.params, state.opt_state, state.target_params, batch)
        update_step = state.update_step + 1
        target_params = target_network_update(params, state.target_params, update_step,
                                              config.tau, config.target_update_every)
        state = State(params=params, target_params=target_params, opt_state=opt_state,
                      update_step=update_step, intrinsic=transform_state)
        metrics = {"loss": loss, **metrics, "grad_norm": grad_norm, **intrinsic_metrics}
        metrics = {name: value.astype(jnp.float32) for name, value in metrics.items()}
        if config.prioritised:
            metrics[PRIORITIES] = td_abs  # [B], popped by the driver (new priorities)
        return state, metrics

    def policy(state: State, obs: Array) -> Array:
        """Greedy policy as one-hot probabilities [N, A] for obs [N, *obs_shape]."""
        return jax.nn.one_hot(jnp.argmax(network.apply(state.params, obs), axis=-1), num_actions,
                              dtype=jnp.float32)

    return Agent(init=init, act=act, update=update, policy=policy, feed=config.feed())


__all__ = ["Config", "HybridConfig", "QNetwork", "State", "epsilon_schedule", "make_agent"]
