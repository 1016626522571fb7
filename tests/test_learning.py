"""Learning tests: agents reach the optimal policy that rlkit.planning computes exactly.

Each test trains a few seeds side by side through the on-device driver and evaluates the greedy
version of the learned policy exactly on the environment's model, so a pass means "optimal", not
"return above a threshold someone picked".
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from agents import dqn, ppo
from envs.toy import ChainConfig, CombinationLockConfig
from rlkit import planning
from rlkit.loops.common import over_seeds
from rlkit.loops.on_device import make_on_device_trainer
from rlkit.types import Transition


def _train(agent, env, iterations, num_seeds=2, seed=0):
    trainer = make_on_device_trainer(agent, env, env.default_params, iterations)
    carry = trainer.init(jax.random.split(jax.random.key(seed), num_seeds))
    carry, metrics = trainer.run(carry)
    return trainer, carry, metrics


def _greedy_suboptimality(agent, env, agent_states):
    """J* - J(greedy learned policy) per seed, computed exactly."""
    model = env.model(env.default_params)
    tables = jax.jit(jax.vmap(lambda s: planning.policy_table(agent.policy, s, model)))(
        agent_states)
    greedy = jax.nn.one_hot(tables.argmax(-1), model.num_actions)
    return np.asarray(jax.jit(jax.vmap(lambda p: planning.suboptimality(model, p)))(greedy))


CASES = {
    "chain": ("chain", ChainConfig(length=8, horizon=16)),
    "lock": ("combination-lock", CombinationLockConfig(horizon=4, num_actions=3)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_ppo_reaches_the_optimal_policy(case):
    name, env_config = CASES[case]
    env = envs.make_env(name, env_config)
    config = ppo.Config(num_envs=8, rollout_length=32, total_steps=15_360, gamma=1.0)
    agent = ppo.make_agent(config, env.spec)
    trainer, carry, _ = _train(agent, env, config.num_iterations)
    np.testing.assert_allclose(_greedy_suboptimality(agent, env, carry.agent_state), 0.0,
                               atol=1e-6)
    # The driver's own (stochastic-policy) evaluation is exact too and close to optimal.
    optimal = float(planning.value_iteration(env.model(env.default_params)).optimal_return)
    evaluated = np.asarray(trainer.evaluate(carry))
    assert np.all(evaluated <= optimal + 1e-5)
    assert np.all(evaluated >= 0.9 * optimal)


def _train_dqn_to_the_optimal_policy(case, **overrides):
    """Train DQN for 10k env steps (2 seeds) on a CASES env and assert that its greedy policy is
    optimal and that the driver's evaluation returns J*; returns (agent, carry, metrics).

    Checked every 1k steps up to 15k for seeds 0-3 (chain), 0-2 (lock, chain with prioritised
    replay): the greedy policies of both seeds are optimal from 7k steps on (lock: 3k) and stay
    so; at 2k none of the chain's is."""
    name, env_config = CASES[case]
    env = envs.make_env(name, env_config)
    config = dqn.Config(learning_starts=500, epsilon_decay_steps=7_500, buffer_size=10_000,
                        **overrides)
    agent = dqn.make_agent(config, env.spec)
    trainer, carry, metrics = _train(agent, env, 10_000 // config.num_envs)
    np.testing.assert_allclose(_greedy_suboptimality(agent, env, carry.agent_state), 0.0,
                               atol=1e-6)
    optimal = float(planning.value_iteration(env.model(env.default_params)).optimal_return)
    np.testing.assert_allclose(np.asarray(trainer.evaluate(carry)), optimal, atol=1e-5)
    return agent, carry, metrics


@pytest.mark.parametrize("case", sorted(CASES))
def test_dqn_reaches_the_optimal_policy(case):
    _train_dqn_to_the_optimal_policy(case)


def test_dqn_with_prioritised_replay_reaches_the_optimal_policy_of_the_chain():
    """Proportional PER (importance weights, |TD| priorities) through the on-device driver."""
    agent, carry, metrics = _train_dqn_to_the_optimal_policy("chain", prioritised=True,
                                                             total_steps=10_000)
    assert agent.feed.prioritised
    # The driver popped the priorities and logged beta, annealed from 0.4 towards 1.
    assert "priorities" not in metrics
    beta = np.asarray(metrics["priority_beta"])
    np.testing.assert_allclose(beta[:, 0], 0.4, rtol=1e-6)
    assert np.all(np.diff(beta, axis=1) > 0) and np.all(beta[:, -1] > 0.99)
    assert np.asarray(carry.buffer.priorities).std() > 0  # priorities moved away from the max


def test_untrained_agents_are_not_optimal_on_the_lock():
    """The learning tests can fail: before training, the greedy policy misses the code."""
    name, env_config = CASES["lock"]
    env = envs.make_env(name, env_config)
    for agent in (ppo.make_agent(ppo.Config(num_envs=8, rollout_length=32), env.spec),
                  dqn.make_agent(dqn.Config(), env.spec)):
        # Seed by seed on the CPU (`over_seeds(map_on_cpu=True)`, as the drivers init): a jitted
        # vmap of init batches orthogonal init's QR, which can deadlock jaxlib 0.10.2's CPU pool.
        states = jax.jit(over_seeds(agent.init, map_on_cpu=True))(
            jax.random.split(jax.random.key(3), 4))
        assert np.all(_greedy_suboptimality(agent, env, states) > 0.5)


@pytest.mark.slow  # 5e5 env steps; the quickstart notebook (run by CI) trains CartPole too
def test_ppo_reaches_the_maximum_return_on_cartpole():
    env = envs.make_env("cartpole")
    config = ppo.Config()  # PureJaxRL's CartPole settings, 5e5 steps
    agent = ppo.make_agent(config, env.spec)
    trainer = make_on_device_trainer(agent, env, env.default_params, config.num_iterations,
                                     num_eval_episodes=16)
    carry = trainer.init(jax.random.split(jax.random.key(0), 1))
    carry, metrics = trainer.run(carry)
    # Training episodes that ended in the last tenth of the run, and a fresh evaluation.
    last = slice(-config.num_iterations // 10, None)
    finished = metrics["episodes"][0, last].sum()
    assert finished > 0
    assert float(metrics["episode_return_sum"][0, last].sum() / finished) > 475
    assert float(trainer.evaluate(carry)[0]) >= 495


def test_ppo_update_bootstraps_every_truncation_of_an_env_that_truncates_every_3_steps():
    """Issue 11 item 11, through PPO's own update on a JAX rollout.

    The env's time limit is 50 but it truncates every 3 steps, so a 12-step rollout holds four
    truncations per env where the old fixed-capacity gather kept one. PPO's update must equal
    the update of an agent whose time limit (1) makes the gather cover every step, i.e. the
    exact V(final obs) bootstrap, and differ from bootstrapping with the reset observation.
    """
    num_steps, num_envs = 12, 2
    config = ppo.Config(num_envs=num_envs, rollout_length=num_steps, num_minibatches=1,
                        update_epochs=1, total_steps=24, hidden_sizes=(8,), anneal_lr=False)
    spec = envs.make_env("cartpole").spec
    truncating = ppo.make_agent(config, dataclasses.replace(spec, max_episode_steps=50))
    exact = ppo.make_agent(config, dataclasses.replace(spec, max_episode_steps=1))
    state = jax.jit(truncating.init)(jax.random.key(0))
    obs_key, final_key, act_key, update_key = jax.random.split(jax.random.key(1), 4)
    obs = jax.random.normal(obs_key, (num_steps, num_envs, *spec.obs_shape))
    truncated = jnp.broadcast_to((jnp.arange(num_steps) % 3 == 2)[:, None],
                                       (num_steps, num_envs))
    final = 3.0 * jax.random.normal(final_key, obs.shape)  # final obs, unlike the reset obs
    following = jnp.concatenate([obs[1:], final[-1:]])
    next_obs = jnp.where(truncated[..., None], final, following)
    action, extras = jax.jit(jax.vmap(lambda o, k: truncating.act(state, o, k, jnp.int32(0))))(
        obs, jax.random.split(act_key, num_steps))
    rollout = Transition(obs=obs, action=action, reward=jnp.ones((num_steps, num_envs)),
                         terminated=jnp.zeros((num_steps, num_envs), bool),
                         truncated=truncated, next_obs=next_obs, extras=extras)
    update_truncating = jax.jit(truncating.update)
    _, got = update_truncating(state, rollout, update_key)
    _, want = jax.jit(exact.update)(state, rollout, update_key)
    # (policy_loss is about 0: the mean of normalised advantages at ratio 1; hence the atol.)
    for name in ("value_loss", "policy_loss", "loss"):
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6, err_msg=name)
    # Bootstrapping from the reset observation (what dropped truncations got) is measurably
    # different, so the comparison above can fail.
    _, wrong = update_truncating(state, rollout.replace(next_obs=following), update_key)
    assert abs(float(wrong["value_loss"]) - float(want["value_loss"])) > 1e-3
