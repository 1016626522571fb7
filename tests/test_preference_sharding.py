"""The language-model preference phases split their batch axis over every device JAX sees
(issue 13, item 3): on two (forced) host devices, a DPO chunk and an iterative-DPO run give the
single-device numbers, the update's compiled program all-reduces its gradients, and the driver
asks for the split of every batch it builds. Each device count runs in a subprocess (the
device count is fixed when JAX starts)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import json, sys
sys.path[:0] = [ROOT, ROOT + "/tests"]
import jax, jax.numpy as jnp, numpy as np
from rlkit.loops import preference as driver
requested = []
original = driver.data_parallel
def recording(batch_size, devices=None):
    constrain, count = original(batch_size, devices)
    requested.append([batch_size, count])
    return constrain, count
driver.data_parallel = recording

from agents import dpo, iterative_dpo
from test_hypo import TOKENIZER, TASK, P, N, SPEC, RECORDS
import test_iterative_dpo_lm as lm

pairs = driver.tokenize_pairs(TOKENIZER, RECORDS * 4, P, N)
agent = dpo.make_agent(dpo.Config(beta=0.3, learning_rate=1e-2, batch_size=8), SPEC)
trainer = driver.make_preference_trainer(agent, pairs, driver.tokenize_prompts(
    TOKENIZER, ["312=", "97=", "5=", "44="], P), 3, reward_fn=TASK.reward_tokens)
carry = trainer.init(jax.random.split(jax.random.key(7), 2))
carry, metrics = trainer.run(carry)
dpo_losses = np.asarray(metrics["loss"]).tolist()
dpo_params = [np.asarray(x).ravel()[:64].tolist()
              for x in jax.tree.leaves(carry.agent_state.params)]

constrain, _ = original(8)
state = jax.jit(agent.init)(jax.random.key(0))
batch = jax.tree.map(lambda x: jnp.asarray(x[:8]), pairs)
program = jax.jit(lambda s, b, k: agent.update(s, constrain(b), k)).lower(
    state, batch, jax.random.key(1)).compile().as_text()

_, (_, history) = lm._run(lm._config())
print(json.dumps({"devices": len(jax.devices()), "requested": requested,
                  "all_reduce": "all-reduce" in program, "dpo_losses": dpo_losses,
                  "dpo_params": dpo_params, "iterative": history},
                 default=lambda x: np.asarray(x).tolist()))
"""


def _run(devices: int) -> dict:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-c", SCRIPT.replace("ROOT", repr(str(ROOT)), 1)
                           .replace("ROOT +", repr(str(ROOT)) + " +")],
                          env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def runs():
    return _run(1), _run(2)


def test_two_devices_split_every_batch_and_all_reduce_the_gradients(runs):
    one, two = runs
    assert one["devices"] == 1 and two["devices"] == 2
    assert all(count == 1 for _, count in one["requested"])
    # DPO's batch (8) and evaluation prompts (4); iterative DPO's generation (6 prompts x 2
    # samples per temperature), DPO batch (8) and evaluation prompts (2): all even, all split.
    assert sorted(two["requested"]) == [[2, 2], [4, 2], [8, 2], [8, 2], [12, 2]]
    assert two["all_reduce"] and not one["all_reduce"]


def test_two_devices_give_the_single_device_numbers(runs):
    one, two = runs
    np.testing.assert_allclose(two["dpo_losses"], one["dpo_losses"], rtol=1e-5, atol=1e-6)
    for a, b in zip(two["dpo_params"], one["dpo_params"], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert len(two["iterative"]) == len(one["iterative"]) == 2
    for a, b in zip(two["iterative"], one["iterative"], strict=True):
        assert a["labels_used"] == b["labels_used"] and a["pairs_kept"] == b["pairs_kept"]
        for name in ("true_reward", "reverse_kl", "win_rate", "loss"):
            assert a[name] == pytest.approx(b[name], rel=1e-4, abs=1e-5), name
