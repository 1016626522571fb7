"""Learning tests: agents reach the optimal policy that rlkit.planning computes exactly.

Each test trains a few seeds side by side through the on-device driver and evaluates the greedy
version of the learned policy exactly on the environment's model, so a pass means "optimal", not
"return above a threshold someone picked".
"""

import jax
import numpy as np
import pytest

import envs
from agents import dqn, ppo
from envs.toy import ChainConfig, CombinationLockConfig
from rlkit import planning
from rlkit.loops.on_device import make_on_device_trainer


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


@pytest.mark.parametrize("case", sorted(CASES))
def test_dqn_reaches_the_optimal_policy(case):
    name, env_config = CASES[case]
    env = envs.make_env(name, env_config)
    config = dqn.Config(learning_starts=500, epsilon_decay_steps=7_500, buffer_size=10_000)
    agent = dqn.make_agent(config, env.spec)
    trainer, carry, _ = _train(agent, env, 15_000 // config.num_envs)
    np.testing.assert_allclose(_greedy_suboptimality(agent, env, carry.agent_state), 0.0,
                               atol=1e-6)
    optimal = float(planning.value_iteration(env.model(env.default_params)).optimal_return)
    np.testing.assert_allclose(np.asarray(trainer.evaluate(carry)), optimal, atol=1e-5)


def test_untrained_agents_are_not_optimal_on_the_lock():
    """The learning tests can fail: before training, the greedy policy misses the code."""
    name, env_config = CASES["lock"]
    env = envs.make_env(name, env_config)
    for agent in (ppo.make_agent(ppo.Config(num_envs=8, rollout_length=32), env.spec),
                  dqn.make_agent(dqn.Config(), env.spec)):
        states = jax.vmap(agent.init)(jax.random.split(jax.random.key(3), 4))
        assert np.all(_greedy_suboptimality(agent, env, states) > 0.5)


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
