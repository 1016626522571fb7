"""Intrinsic rewards as reusable reward transforms: RND and RDD, in the optax style.

RND (Burda, Edwards, Storkey and Klimov 2019, "Exploration by Random Network Distillation"):
a predictor f_theta is trained to match a frozen random network mu(s); the bonus is the
prediction error (1/k) ||f_theta(s) - mu(s)||^2, large on states the predictor has seen little.

RDD (Fang, Yang, Tao, Lyu, Li, Shen and Li 2025, "Exploration by Random Distribution
Distillation", arXiv 2505.11044): the target is not mu(s) but a fresh sample
c(s) ~ N(mu(s), sigma^2 I) at every use. In the tabular limit the least-squares predictor after
n(s) visits is the mean of n(s) draws, so f(s) - mu(s) ~ N(0, sigma^2 / n(s)) and the bonus
(1/k) ||f(s) - mu(s)||^2 (their Eq. 11, read against the mean) is an unbiased estimate of
sigma^2 / n(s) (their Lemma 4.1): a pseudo-count, plus an optimisation (discrepancy) term for a
predictor that has not converged. Plain RND's error goes to 0 after one exact fit instead.

A transform is `Transform(init, observe, bonus, normalise_reward, update)`, pure functions over a
`State` pytree that an agent keeps inside its own state (so checkpoints and resume carry it):

    state = transform.init(key, num_streams)
    state = transform.observe(state, next_obs)           # running observation statistics
    raw = transform.bonus(state, next_obs, key)           # [B] bonus, unnormalised
    state, r_int = transform.normalise_reward(state, raw)  # [T, N] / running std of the return
    state, metrics = transform.update(state, next_obs, key)  # one predictor step

The RND recipe around it (their code, and DRND's `online/agents.py`, yk7333/DRND): predictor and
target see observations normalised by running mean and std and clipped to [-5, 5]; the bonus is
divided by the running std of its discounted return (RND's `RewardForwardFilter`, per stream);
the predictor trains on a random `update_proportion` share of each batch.

Readings chosen where the paper is not explicit (each a `Config` field):

* `kind`: "rnd" regresses onto mu(s); "rdd" onto a fresh c(s) ~ N(mu(s), sigma(s)^2 I).
* `sigma_network` (default False, as the paper's practical algorithm: one fixed scalar sigma for
  every state): True gives a per-state sigma(s) = sigma * 2 * sigmoid(h(s)), h a second frozen
  random network with k outputs, so sigma(s) lies in (0, 2 sigma) and is sigma on average at
  initialisation.
* `readout`: "mean" (default, the paper's Eq. 11): bonus (1/k) ||f - mu||^2; "sample": against
  a fresh sample, (1/k) ||f - c||^2, which adds sigma^2 in expectation (a constant floor).
* `mean_scale` (the paper's "mean" hyper-parameter, its Section 5.4): the per-state mean vector
  is rescaled to root-mean-square `mean_scale`, mu(s) = mean_scale * g(s) / rms(g(s)), g the
  frozen random network. So an unseen state's bonus starts near mean_scale^2 (plus the variance
  of the untrained predictor's output): with mean 1 it starts near 1, as the paper says. RND
  uses the same mu.
* `output_dim` k (64 by default; 512 on pixels in the paper) and `hidden_sizes` of both networks
  (ReLU MLPs on flattened observations; pixel observations are flattened too, a deviation from
  RND's CNN kept for simplicity).
* Observation statistics are initialised from random-agent steps by the caller's order of calls:
  `observe` runs on a batch before its bonus is read, so the first batch (PPO's first rollout
  comes from the initial, near-uniform policy; DQN's first batch from the epsilon = 1 warm-up)
  initialises them, as RND's `ObsNormStep` random steps do.
* `normalise_reward` divides by the running std of the discounted intrinsic return with discount
  `return_gamma` per stream ([T, N]: time, parallel envs). For replay agents (DQN), whose batches
  are not streams, the agent passes `return_gamma = 0`: the divisor is then the running std of
  the bonus itself.
* The predictor loss is (1/k) ||f(s) - c(s)||^2 averaged over the chosen rows, Adam with
  `learning_rate`. `update_rows` says how the spec's "random UpdateProportion share of the
  minibatch" is drawn: "subset" (default) draws exactly max(1, round(update_proportion * B))
  rows without replacement and runs predictor and target on those rows only; "mask" (RND's and
  DRND's code) keeps each row with probability `update_proportion` and computes the loss on every
  row with the others weighted 0, so both networks run over the whole batch. Both average the
  same row losses in expectation (a fixed count of rows instead of a binomial one); "subset"
  spends about `update_proportion` of the mask's predictor compute. PPO+RDD on DeepSea 20 ran
  at 0.73-0.75x plain PPO's env steps per second with the subset and 0.55-0.58x with the mask
  (side by side on a loaded 2-core CPU, benchmarks/README.md); results recorded before session
  14 used the mask (`update_rows="mask"` reproduces them).
* `count_states`: for one-hot observations (tabular envs), the index argmax(obs) of every row the
  predictor trains on is counted in `State.visit_count` (n(s) of the pseudo-count), for plots.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from rlkit.errors import require, require_int_at_least, require_number, require_one_of
from rlkit.nets import MLP
from rlkit.ops import generalized_advantage_estimation
from rlkit.types import Array, Metrics, PRNGKey, PyTree

KINDS = ("rnd", "rdd")
AGENT_CHOICES = ("none", *KINDS)
READOUTS = ("mean", "sample")
UPDATE_ROWS = ("mask", "subset")
RDD_ONLY = ("sigma", "sigma_network", "readout")  # fields RND reads nothing from


@dataclass(frozen=True)
class Config:
    """An intrinsic-reward transform's settings (defaults: the RDD paper's reported ones)."""

    kind: str = "rdd"
    """"rnd" (fixed random target) or "rdd" (a fresh Gaussian sample around it)."""
    output_dim: int = 64
    """k, the output dimension of predictor and target."""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """ReLU MLP widths of predictor and target."""
    learning_rate: float = 3e-4
    """Adam step size of the predictor."""
    sigma: float = 1.0
    """RDD: the target's standard deviation (> 0)."""
    sigma_network: bool = False
    """RDD: per-state sigma(s) from a frozen random network (False: the fixed scalar sigma)."""
    mean_scale: float = 1.0
    """The paper's "mean": root-mean-square magnitude of the target mean mu(s) (> 0)."""
    readout: str = "mean"
    """Bonus against the target's "mean" (the paper's Eq. 11) or a fresh "sample"."""
    update_proportion: float = 0.25
    """Share of each batch the predictor trains on, in (0, 1]."""
    update_rows: str = "subset"
    """How the share is drawn: an exact "subset" of rows, the networks run on those rows only,
    or a Bernoulli "mask" over the whole batch (RND's code; slower)."""
    obs_clip: float = 5.0
    """Normalised observations are clipped to [-obs_clip, obs_clip]."""
    return_gamma: float = 0.99
    """Discount of the intrinsic return whose running std normalises the bonus, in [0, 1)."""
    count_states: bool = False
    """Count argmax(obs) of the rows the predictor trains on (one-hot tabular observations)."""

    def __post_init__(self):
        check_fields(self)


def check_fields(config: Any, prefix: str = "") -> None:
    """Validate the transform fields of `config`, named `prefix + name` (an agent's config keeps
    them as `intrinsic_sigma`, ...; the errors name those fields).

    Raises:
        RlkitError: naming the field and the fix.
    """

    def get(name):
        return getattr(config, prefix + name)

    if prefix:
        require_one_of(config.intrinsic, "intrinsic", AGENT_CHOICES)
        require_number(config.intrinsic_coef, "intrinsic_coef", low=0)
        if config.intrinsic == "none":  # the transform's fields would be read by nothing
            for field in dataclasses.fields(config):
                if field.name.startswith(prefix) and getattr(config, field.name) != field.default:
                    require(False, field.name, "has no effect with intrinsic none; add "
                            "--agent.intrinsic rnd or rdd, or drop it")
        if config.intrinsic == "rnd":  # no target noise: RDD's own fields would act on nothing
            rdd_only = {prefix + name for name in RDD_ONLY}
            for field in dataclasses.fields(config):
                if field.name in rdd_only and getattr(config, field.name) != field.default:
                    require(False, field.name, "applies to RDD only and has no effect with "
                            "intrinsic rnd; add --agent.intrinsic rdd, or drop it")
    else:
        require_one_of(config.kind, "kind", KINDS)
    require_int_at_least(get("output_dim"), prefix + "output_dim", 1)
    require(all(isinstance(h, int) and h >= 1 for h in get("hidden_sizes")),
            prefix + "hidden_sizes", f"must be positive ints, got {get('hidden_sizes')!r}.")
    require_number(get("learning_rate"), prefix + "learning_rate", low=0, low_open=True,
                   hint="try 3e-4.")
    require_number(get("sigma"), prefix + "sigma", low=0, low_open=True, hint="try 1.0.")
    require_number(get("mean_scale"), prefix + "mean_scale", low=0, low_open=True,
                   hint="try 1.0.")
    require_one_of(get("readout"), prefix + "readout", READOUTS)
    require_number(get("update_proportion"), prefix + "update_proportion", low=0, high=1,
                   low_open=True, hint="try 0.25.")
    require_one_of(get("update_rows"), prefix + "update_rows", UPDATE_ROWS)
    if not prefix:  # agents fix these two
        require_number(config.obs_clip, "obs_clip", low=0, low_open=True)
        require_number(config.return_gamma, "return_gamma", low=0, high=1, high_open=True)


def config_from_agent(agent_config: Any, return_gamma: float) -> Config:
    """The transform `Config` an agent's `intrinsic*` fields describe (`intrinsic` is the kind)."""
    names = ("output_dim", "hidden_sizes", "learning_rate", "sigma", "sigma_network",
             "mean_scale", "readout", "update_proportion", "update_rows", "count_states")
    return Config(kind=agent_config.intrinsic, return_gamma=return_gamma,
                  **{name: getattr(agent_config, "intrinsic_" + name) for name in names})


# --------------------------------------------------------------------------------------------
# Running statistics
# --------------------------------------------------------------------------------------------


@struct.dataclass
class RunningMoments:
    """Running mean and (population) variance of a stream of arrays, per element.

    Attributes:
        mean: [*shape] float32.
        var: [*shape] float32.
        count: float32 scalar, rows seen (0: empty; `var` is then 1 so dividing is harmless).
    """

    mean: Array
    var: Array
    count: Array


def init_moments(shape: Sequence[int]) -> RunningMoments:
    return RunningMoments(jnp.zeros(shape, jnp.float32), jnp.ones(shape, jnp.float32),
                          jnp.zeros((), jnp.float32))


def update_moments(moments: RunningMoments, x: Array) -> RunningMoments:
    """Merge a batch x [B, *shape] into the moments (Chan et al. 1979's parallel update, the
    form of RND's `RunningMeanStd`). An empty `moments` becomes the batch's own moments."""
    x = x.astype(jnp.float32)
    batch_count = jnp.float32(x.shape[0])
    batch_mean, batch_var = x.mean(axis=0), x.var(axis=0)
    total = moments.count + batch_count
    delta = batch_mean - moments.mean
    mean = moments.mean + delta * batch_count / total
    m2 = (moments.var * moments.count + batch_var * batch_count
          + jnp.square(delta) * moments.count * batch_count / total)
    return RunningMoments(mean, m2 / total, total)


# --------------------------------------------------------------------------------------------
# The transform
# --------------------------------------------------------------------------------------------


@struct.dataclass
class State:
    """A transform's state; every leaf is an array of fixed shape and dtype.

    Attributes:
        predictor_params: f_theta's parameters (trained).
        target_params: the frozen networks' parameters: {"mean": g, "sigma": h or absent}.
        opt_state: Adam's state of the predictor.
        obs_moments: running moments of the observations ([*obs_shape]).
        return_filter: [N] float32, the running discounted intrinsic return per stream.
        return_moments: running moments (scalar) of `return_filter`'s values.
        visit_count: [S] float32 rows trained on per argmax(obs) (`count_states`), else None
            (orbax cannot store an empty array).
        update_step: int32 scalar, predictor updates so far.
    """

    predictor_params: PyTree
    target_params: PyTree
    opt_state: optax.OptState
    obs_moments: RunningMoments
    return_filter: Array
    return_moments: RunningMoments
    visit_count: Array | None
    update_step: Array


class Transform(NamedTuple):
    """An intrinsic-reward transform's pure functions (see the module docstring).

    Attributes:
        init: `(key, num_streams) -> State`; `num_streams` N is the width of
            `normalise_reward`'s input (PPO: num_envs; DQN: batch_size).
        observe: `(state, obs [B, *obs_shape]) -> state`, obs statistics updated.
        bonus: `(state, obs [B, ...], key) -> [B] float32` raw bonus (key used by the "sample"
            readout only).
        normalise_reward: `(state, bonus [T, N]) -> (state, [T, N])`, divided by the running std
            of the discounted return.
        update: `(state, obs [B, ...], key) -> (state, metrics)`, one predictor step.
        predict: `(state, obs [B, ...]) -> (f [B, k], mu [B, k], sigma [B, k])`, all three
            networks on normalised observations (for tests and plots).
    """

    init: Callable[[PRNGKey, int], State]
    observe: Callable[[State, Array], State]
    bonus: Callable[[State, Array, PRNGKey], Array]
    normalise_reward: Callable[[State, Array], tuple[State, Array]]
    update: Callable[[State, Array, PRNGKey], tuple[State, Metrics]]
    predict: Callable[[State, Array], tuple[Array, Array, Array]]


class Head(nn.Module):
    """A ReLU MLP on flattened observations and a linear output: [B, ...] -> [B, k]."""

    hidden_sizes: Sequence[int]
    output_dim: int

    @nn.compact
    def __call__(self, obs: Array) -> Array:
        return nn.Dense(self.output_dim)(MLP(tuple(self.hidden_sizes), "relu")(obs))


def make_transform(config: Config, obs_shape: Sequence[int], *,
                   normalise_obs: bool = True,
                   predictor: nn.Module | None = None,
                   optimizer: optax.GradientTransformation | None = None) -> Transform:
    """Build RND or RDD for observations of shape `obs_shape`.

    Args:
        config: the settings.
        obs_shape: one observation's shape.
        normalise_obs: normalise and clip observations by running statistics (RND's recipe);
            False feeds them raw (for exact tabular tests).
        predictor: the predictor network `[B, ...] -> [B, k]` (default: `Head`).
        optimizer: the predictor's optimiser (default: Adam with `config.learning_rate`).

    Returns:
        The `Transform`.
    """
    k = config.output_dim
    obs_shape = tuple(obs_shape)
    predictor = predictor or Head(config.hidden_sizes, k)
    target = Head(config.hidden_sizes, k)
    optimizer = optimizer or optax.adam(config.learning_rate)
    num_counted = int(np.prod(obs_shape)) if config.count_states else 0
    noisy = config.kind == "rdd"

    def normalised(state: State, obs: Array) -> Array:
        obs = obs.astype(jnp.float32)
        if not normalise_obs:
            return obs
        moments = state.obs_moments
        return jnp.clip((obs - moments.mean) / jnp.sqrt(moments.var + 1e-8),
                        -config.obs_clip, config.obs_clip)

    def targets(target_params: PyTree, obs: Array) -> tuple[Array, Array]:
        """mu [B, k] at RMS `mean_scale`, sigma [B, k]; obs already normalised."""
        g = target.apply(target_params["mean"], obs)
        mu = config.mean_scale * g / jnp.sqrt(jnp.mean(jnp.square(g), -1, keepdims=True) + 1e-12)
        if config.sigma_network:
            sigma = config.sigma * 2.0 * jax.nn.sigmoid(target.apply(target_params["sigma"], obs))
        else:
            sigma = jnp.full_like(mu, config.sigma)
        return mu, sigma

    def init(key: PRNGKey, num_streams: int) -> State:
        predictor_key, mean_key, sigma_key = jax.random.split(key, 3)
        dummy = jnp.zeros((1, *obs_shape), jnp.float32)
        predictor_params = predictor.init(predictor_key, dummy)
        target_params = {"mean": target.init(mean_key, dummy)}
        if config.sigma_network:
            target_params["sigma"] = target.init(sigma_key, dummy)
        return State(
            predictor_params=predictor_params,
            target_params=target_params,
            opt_state=optimizer.init(predictor_params),
            obs_moments=init_moments(obs_shape),
            return_filter=jnp.zeros((num_streams,), jnp.float32),
            return_moments=init_moments(()),
            visit_count=jnp.zeros((num_counted,), jnp.float32) if num_counted else None,
            update_step=jnp.zeros((), jnp.int32),
        )

    def observe(state: State, obs: Array) -> State:
        return state.replace(obs_moments=update_moments(state.obs_moments, obs))

    def predict(state: State, obs: Array) -> tuple[Array, Array, Array]:
        x = normalised(state, obs)
        mu, sigma = targets(state.target_params, x)
        return predictor.apply(state.predictor_params, x), mu, sigma

    def bonus(state: State, obs: Array, key: PRNGKey) -> Array:
        f, mu, sigma = predict(state, obs)  # [B, k] each
        reference = mu
        if config.readout == "sample" and noisy:
            reference = mu + sigma * jax.random.normal(key, mu.shape)
        return jnp.mean(jnp.square(f - reference), axis=-1)  # [B]

    def normalise_reward(state: State, raw: Array) -> tuple[State, Array]:
        # RND's RewardForwardFilter: R_t = gamma * R_{t-1} + r_t per stream, never reset at
        # episode ends (the intrinsic return is non-episodic).
        def forward(running, r_t):
            running = config.return_gamma * running + r_t
            return running, running

        return_filter, returns = jax.lax.scan(forward, state.return_filter, raw)  # [T, N]
        moments = update_moments(state.return_moments, returns.reshape(-1))
        state = state.replace(return_filter=return_filter, return_moments=moments)
        return state, raw / jnp.sqrt(moments.var + 1e-8)

    def loss_fn(predictor_params: PyTree, x: Array, reference: Array, mask: Array):
        f = predictor.apply(predictor_params, x)
        row_loss = jnp.mean(jnp.square(f - reference), axis=-1)  # [B]
        return jnp.sum(mask * row_loss) / jnp.maximum(mask.sum(), 1.0)

    def update(state: State, obs: Array, key: PRNGKey) -> tuple[State, Metrics]:
        mask_key, noise_key = jax.random.split(key)
        if config.update_rows == "subset":  # exactly round(p * B) rows, the networks on those
            kept = max(1, round(config.update_proportion * obs.shape[0]))
            obs = obs[jax.random.permutation(mask_key, obs.shape[0])[:kept]]
            mask = jnp.ones((kept,), jnp.float32)
        else:  # RND's Bernoulli mask over the whole batch
            mask = (jax.random.uniform(mask_key, (obs.shape[0],)) < config.update_proportion)
            mask = mask.astype(jnp.float32)
        x = normalised(state, obs)
        mu, sigma = targets(state.target_params, x)
        reference = mu
        if noisy:  # a fresh draw at every use (RDD)
            reference = mu + sigma * jax.random.normal(noise_key, mu.shape)
        reference = jax.lax.stop_gradient(reference)
        loss, grads = jax.value_and_grad(loss_fn)(state.predictor_params, x, reference, mask)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.predictor_params)
        visit_count = state.visit_count
        if num_counted:
            flat = obs.reshape(obs.shape[0], -1)
            # All-zero observations (DeepSea after its last step) are no state: not counted.
            visit_count = visit_count.at[jnp.argmax(flat, axis=-1)].add(
                mask * (flat.max(axis=-1) > 0))
        state = state.replace(
            predictor_params=optax.apply_updates(state.predictor_params, updates),
            opt_state=opt_state, visit_count=visit_count, update_step=state.update_step + 1)
        return state, {"predictor_loss": loss.astype(jnp.float32)}

    return Transform(init=init, observe=observe, bonus=bonus, normalise_reward=normalise_reward,
                     update=update, predict=predict)


def non_episodic_gae(reward: Array, value: Array, last_value: Array, gamma: float,
                     gae_lambda: float) -> tuple[Array, Array]:
    """GAE(lambda) of the intrinsic reward, which ignores episode ends (RND, Burda et al. 2019,
    Section 2.3: the intrinsic return is non-episodic, so neither `terminated` nor `truncated`
    stops it; the value after step t is V(obs_{t+1}) of the same stream, across resets).

    Args:
        reward: [T, N] intrinsic rewards r_t (of next_obs_t).
        value: [T, N] V_int(obs_t).
        last_value: [N] V_int of the observation after the last step.
        gamma, gae_lambda: discount and lambda.

    Returns:
        (advantages [T, N], returns [T, N]).
    """
    next_value = jnp.concatenate([value[1:], last_value[None]], axis=0)
    never = jnp.zeros(reward.shape, bool)
    return generalized_advantage_estimation(reward, value, next_value, never, never, gamma,
                                            gae_lambda)


def per_state(transform: Transform, state: State, observations: Array) -> tuple[Array, Array]:
    """The raw mean-readout bonus and the visit count of each state of a tabular env.

    Args:
        transform: the transform (built with `count_states`).
        state: its state.
        observations: [S, *obs_shape] one-hot observations (a `TabularModel`'s).

    Returns:
        (bonus [S] (1/k) ||f - mu||^2, visit_count [S] of argmax(observation)).
    """
    f, mu, _ = transform.predict(state, observations)
    bonus = jnp.mean(jnp.square(f - mu), axis=-1)
    index = jnp.argmax(observations.reshape(observations.shape[0], -1), axis=-1)
    count = (jnp.zeros_like(bonus) if state.visit_count is None
             else state.visit_count[index])
    return bonus, count


__all__ = ["AGENT_CHOICES", "Config", "RunningMoments", "State", "Transform", "check_fields",
           "config_from_agent", "init_moments", "make_transform", "non_episodic_gae",
           "per_state", "update_moments"]
