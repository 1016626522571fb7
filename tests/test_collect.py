"""`rlkit.collect`: datasets from random, optimal, mixture and trained policies, on JAX and host
envs, checked against the exact answers of `rlkit.planning`; the CLI's errors; kill safety."""

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
import yaml

from envs.toy import ChainConfig, chain_model
from rlkit import planning
from rlkit.collect import collect, main
from rlkit.data.dataset import DatasetError, load_dataset

ROOT = Path(__file__).resolve().parents[1]
LENGTH, HORIZON = 8, 16  # the default chain
OPTIMAL = HORIZON - LENGTH + 1  # walk right for n - 1 steps, then collect 1 per step


def _subprocess_env() -> dict:
    """The environment of CLI subprocesses: this checkout, and the test run's persistent
    compilation cache (tests/conftest.py), so a re-run compiles nothing."""
    return dict(os.environ, PYTHONPATH=str(ROOT),
                JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir or "",
                JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5",
                JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")


def _episodes(transitions):
    """Row ranges [start, end) of the episodes, in row order."""
    ends = np.flatnonzero(np.asarray(transitions.terminated) | np.asarray(transitions.truncated))
    starts = np.concatenate([[0], ends[:-1] + 1])
    return list(zip(starts, ends + 1, strict=True))


def _check_chain_rows(dataset, episodes):
    """Invariants of a chain dataset that any wrong collector breaks."""
    t = dataset.transitions
    obs, next_obs = np.asarray(t.obs), np.asarray(t.next_obs)
    assert dataset.num_episodes == episodes
    assert len(t.action) == episodes * HORIZON  # the chain never terminates: H steps each
    assert t.action.dtype == np.int32 and t.reward.dtype == np.float32
    assert not np.asarray(t.terminated).any()
    np.testing.assert_array_equal(t.truncated, np.arange(len(t.action)) % HORIZON == HORIZON - 1)
    position, next_position = obs.argmax(1), next_obs.argmax(1)
    np.testing.assert_array_equal(obs, np.eye(LENGTH, dtype=np.float32)[position])
    for start, end in _episodes(t):
        assert end - start == HORIZON
        assert position[start] == 0  # every episode starts at the left end
        # Episode-major rows: inside an episode, next_obs is the next row's obs.
        np.testing.assert_array_equal(next_obs[start:end - 1], obs[start + 1:end])
    step = np.where(np.asarray(t.action) == 1, 1, -1)
    np.testing.assert_array_equal(next_position, np.clip(position + step, 0, LENGTH - 1))
    paid = (position == LENGTH - 1) & (np.asarray(t.action) == 1)
    np.testing.assert_array_equal(t.reward, paid.astype(np.float32))


@pytest.fixture(scope="module")
def chain_datasets():
    # 10 episodes, 8 at a time: the last batch keeps 2 of its 8.
    return {policy: collect("chain", None, policy, 10, seed=0, num_envs=8)
            for policy in ("random", "optimal")}


def test_random_chain_dataset(chain_datasets):
    dataset = chain_datasets["random"]
    _check_chain_rows(dataset, 10)
    info = dataset.info
    assert info.env_id == "chain" and info.num_actions == 2
    assert info.obs_shape == (LENGTH,) and info.obs_dtype == "float32"
    assert info.env_params == {"length": LENGTH, "horizon": HORIZON, "left_reward": 0.0,
                               "right_reward": 1.0}
    assert info.behaviour_policy == "random"
    actions = np.asarray(dataset.transitions.action)
    assert 0.3 < actions.mean() < 0.7  # both actions, roughly evenly
    model = chain_model(ChainConfig())
    random_return = float(planning.expected_return(model, planning.uniform_policy(model)))
    extra = info.extra
    assert extra["seed"] == 0 and extra["episodes"] == 10 and extra["epsilon"] == 1.0
    assert extra["exact_return"] == pytest.approx(random_return, rel=1e-5)
    assert extra["random_return"] == pytest.approx(random_return, rel=1e-5)
    assert extra["optimal_return"] == pytest.approx(OPTIMAL)
    assert extra["normalised_score"] == pytest.approx(0.0, abs=1e-3)
    returns = [float(dataset.transitions.reward[s:e].sum()) for s, e in _episodes(
        dataset.transitions)]
    assert info.behaviour_return == pytest.approx(np.mean(returns))
    assert info.behaviour_return_std == pytest.approx(np.std(returns))


def test_optimal_chain_dataset_matches_the_exact_optimum(chain_datasets):
    dataset = chain_datasets["optimal"]
    _check_chain_rows(dataset, 10)
    info = dataset.info
    assert info.behaviour_policy == "optimal"
    # Deterministic chain, deterministic policy: every episode earns exactly J*.
    for start, end in _episodes(dataset.transitions):
        assert float(dataset.transitions.reward[start:end].sum()) == OPTIMAL
    assert info.behaviour_return == OPTIMAL and info.behaviour_return_std == 0.0
    assert info.extra["exact_return"] == pytest.approx(OPTIMAL)
    assert info.extra["optimal_return"] == pytest.approx(OPTIMAL)
    assert info.extra["normalised_score"] == pytest.approx(100.0, abs=1e-3)


def test_same_seed_same_data_and_epsilon_semantics():
    """Mixture(eps) of optimal is the optimal policy with eps; eps 1 is the random policy."""
    kwargs = dict(seed=3, num_envs=8)
    mixture = collect("chain", None, "mixture", 8, checkpoint="optimal", epsilon=0.5, **kwargs)
    optimal = collect("chain", None, "optimal", 8, epsilon=0.5, **kwargs)
    assert mixture.info.behaviour_policy == optimal.info.behaviour_policy
    assert mixture.info.behaviour_policy == "mixture(epsilon=0.5) of optimal"
    for a, b in zip(jax.tree.leaves(mixture.transitions), jax.tree.leaves(optimal.transitions),
                    strict=True):
        np.testing.assert_array_equal(a, b)
    all_random = collect("chain", None, "mixture", 8, checkpoint="optimal", epsilon=1.0, **kwargs)
    random = collect("chain", None, "random", 8, **kwargs)
    np.testing.assert_array_equal(all_random.transitions.action, random.transitions.action)
    assert all_random.info.extra["exact_return"] == pytest.approx(
        random.info.extra["exact_return"])
    other_seed = collect("chain", None, "random", 8, seed=4, num_envs=8)
    assert not np.array_equal(other_seed.transitions.action, random.transitions.action)


def test_mixture_exact_return_lies_between_random_and_optimal_and_matches_the_data():
    epsilon, episodes = 0.3, 512
    dataset = collect("chain", None, "mixture", episodes, seed=1, epsilon=epsilon,
                      checkpoint="optimal", num_envs=8)
    _check_chain_rows(dataset, episodes)
    extra = dataset.info.extra
    assert extra["random_return"] < extra["exact_return"] < extra["optimal_return"]
    assert 0 < extra["normalised_score"] < 100
    model = chain_model(ChainConfig())
    table = ((1 - epsilon) * planning.value_iteration(model).policy
             + epsilon * planning.uniform_policy(model))
    assert extra["exact_return"] == pytest.approx(
        float(planning.expected_return(model, table)), rel=1e-5)
    # The measured return estimates the exact one (4 standard errors).
    error = dataset.info.behaviour_return_std / np.sqrt(episodes)
    assert abs(dataset.info.behaviour_return - extra["exact_return"]) < 4 * error
    # The fraction of non-expert actions: at most epsilon / 2 of the rows disagree with the
    # optimal action where it is unambiguous (while the right end is still reachable).
    t = dataset.transitions
    position = np.asarray(t.obs).argmax(1)
    step = np.arange(len(position)) % HORIZON
    reachable = HORIZON - step >= LENGTH - position
    off = np.mean(np.asarray(t.action)[reachable] != 1)
    assert abs(off - epsilon / 2) < 0.03


def test_host_env_episodes_are_whole_and_episode_major():
    dataset = collect("gym:CartPole-v1", None, "random", 3, seed=0, num_envs=2)
    t = dataset.transitions
    episodes = _episodes(t)
    assert dataset.num_episodes == 3 and len(episodes) == 3
    assert episodes[-1][1] == len(t.action)  # no unfinished episode is kept
    obs, next_obs = np.asarray(t.obs), np.asarray(t.next_obs)
    returns = []
    for start, end in episodes:
        np.testing.assert_array_equal(next_obs[start:end - 1], obs[start + 1:end])
        assert not (t.terminated[start:end - 1] | t.truncated[start:end - 1]).any()
        assert abs(obs[start]).max() <= 0.05  # CartPole's reset state
        returns.append(end - start)  # reward 1 per step
    # The end of one episode is not the start of the next (a reset lies between).
    for (_, end), (start, _) in zip(episodes[:-1], episodes[1:], strict=True):
        assert not np.array_equal(next_obs[end - 1], obs[start])
    info = dataset.info
    assert info.env_id == "gym:CartPole-v1" and info.obs_shape == (4,)
    assert info.env_params["env_id"] == "CartPole-v1"
    assert info.behaviour_return == pytest.approx(np.mean(returns))
    assert "exact_return" not in info.extra


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def test_cli_writes_a_loadable_dataset_and_respects_overwrite(tmp_path, capsys):
    out = tmp_path / "chain-expert"
    args = ["--env", "chain", "--policy", "optimal", "--episodes", "4", "--out", str(out),
            "--no-progress", "--env-config.length", "4", "--env-config.horizon", "6"]
    assert main(args) == 0
    assert str(out) in capsys.readouterr().out
    dataset = load_dataset(out, verify=True)
    assert dataset.num_episodes == 4 and len(dataset.transitions.action) == 24
    assert dataset.info.obs_shape == (4,)
    assert dataset.info.env_params["horizon"] == 6
    assert dataset.info.behaviour_return == 3.0  # 6 - 4 + 1
    assert dataset.info.extra["normalised_score"] == pytest.approx(100.0, abs=1e-3)

    assert main(args) == 2  # exists, no --overwrite
    err = capsys.readouterr().err
    assert err.startswith("error: --out:") and "--overwrite" in err and err.count("\n") == 1
    assert load_dataset(out).num_episodes == 4  # untouched

    assert main([*args, "--overwrite", "--epsilon", "1", "--seed", "1"]) == 0
    replaced = load_dataset(out, verify=True)
    assert replaced.info.extra["seed"] == 1
    assert replaced.info.behaviour_policy == "mixture(epsilon=1) of optimal"


@pytest.mark.parametrize("args, needle", [
    (["--env", "chian", "--policy", "random"], "Did you mean 'chain'"),
    (["--env", "gym:CartPole-v1", "--policy", "optimal"], "--policy: optimal needs an env with"),
    (["--env", "chain", "--policy", "mixture"], "--checkpoint: --policy mixture needs an expert"),
    (["--env", "gym:CartPole-v1", "--policy", "mixture", "--checkpoint", "optimal"],
     "--checkpoint: optimal needs an env with an exact model"),
    (["--env", "chain", "--policy", "random", "--checkpoint", "optimal"], "--checkpoint:"),
    (["--env", "chain", "--policy", "optimal", "--epsilon", "1.5"], "--epsilon:"),
    (["--env", "chain", "--policy", "optimal", "--epsilon", "-0.1"], "--epsilon:"),
    (["--env", "chain", "--policy", "optimal", "--episodes", "0"], "--episodes: must be at least"),
    (["--env", "chain", "--policy", "optimal", "--num-envs", "0"], "--num-envs:"),
    (["--env", "chain", "--policy", "/no/such/run"], "--policy: '/no/such/run' is not"),
    (["--env", "chain", "--policy", "mixture", "--checkpoint", "/no/such/run"], "--checkpoint:"),
    (["--policy", "random"], "--env: is required"),
    (["--env", "chain"], "--policy: is required"),
    (["--env", "chain", "--policy", "random", "--env-config.length", "1"],
     "--env-config.length: must be >= 2"),
    (["--env", "chain", "--policy", "random", "--epsilom", "0.1"], "did you mean --epsilon?"),
    (["--env", "chain", "--policy", "random", "--episodes", "many"], "--episodes"),
    (["--env", "chain", "--policy", "random", "--seed", "-1"],
     "--seed: must be in [0, 2**32), got -1"),
])
def test_bad_input_gives_one_clear_line_and_exit_2(args, needle, tmp_path, capsys):
    if "--episodes" not in args:
        args = [*args, "--episodes", "3"]
    code = main([*args, "--out", str(tmp_path / "out"), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 2, captured
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1, captured.err
    assert needle in captured.err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("out", ["", "  "])
def test_an_empty_out_is_one_line(out, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(["--env", "chain", "--policy", "random", "--episodes", "2", "--out", out,
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert err == ("error: --out: is empty; pass the dataset directory to write, e.g. --out "
                   "data/my-dataset\n")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("code", [errno.EROFS, errno.ENOSPC])
def test_a_read_only_or_full_file_system_is_one_line_and_exit_2(code, tmp_path, capsys,
                                                                monkeypatch):
    # As root a chmod'ed directory stops no write, so the refusal is simulated at the rename.
    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "rename", refuse)
    out = tmp_path / "out"
    status = main(["--env", "chain", "--policy", "random", "--episodes", "2", "--out", str(out),
                   "--no-progress"])
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith(f"error: {out}: cannot write it ({os.strerror(code)}): ")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # no partial directory left behind


def test_an_unwritable_out_is_refused_before_collecting(tmp_path, capsys, monkeypatch):
    # access(2) reports a read-only file system even to root: checked before any rollout.
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    monkeypatch.setattr("rlkit.collect.collect", lambda *args, **kwargs: pytest.fail("ran"))
    status = main(["--env", "chain", "--policy", "random", "--episodes", "2", "--out",
                   str(tmp_path / "new" / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert status == 2
    assert err == (f"error: --out: cannot write into {tmp_path} (read-only, or no permission); "
                   "choose a writable directory\n")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_directory_is_one_line_and_exit_2(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        status = main(["--env", "chain", "--policy", "random", "--episodes", "2", "--out",
                       str(locked / "out"), "--no-progress"])
    finally:
        locked.chmod(0o755)
    err = capsys.readouterr().err
    assert status == 2 and "permission denied" in err and err.count("\n") == 1


def test_cli_error_in_a_subprocess_has_no_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "rlkit.collect", "--env", "chian", "--policy", "optimal",
         "--episodes", "3", "--out", str(tmp_path / "out")],
        cwd=ROOT, env=_subprocess_env(), capture_output=True, text=True,
        timeout=120)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: unknown env")
    assert "Traceback" not in result.stderr


def test_help_lists_envs_and_fields(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "medium" in text and "chain" in text and "gym:ID" in text
    assert main(["--env", "chain", "--help"]) == 0
    text = capsys.readouterr().out
    for flag in ("--policy", "--episodes", "--epsilon", "--checkpoint", "--env-config.length"):
        assert flag in text


# --------------------------------------------------------------------------------------------
# A trained policy
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dqn_run(tmp_path_factory):
    from rlkit.train import main as train

    run_dir = tmp_path_factory.mktemp("runs") / "dqn-chain"
    code = train(["dqn", "--env", "chain", "--total-steps", "512", "--run-dir", str(run_dir),
                  "--no-progress", "--num-logs", "1", "--eval-episodes", "1",
                  "--agent.learning-starts", "64", "--agent.batch-size", "32",
                  "--agent.buffer-size", "512", "--agent.hidden-sizes", "16"])
    assert code == 0
    return run_dir


def test_checkpoint_policy_dataset(dqn_run, tmp_path, capsys):
    from rlkit.train import load_policy

    out = tmp_path / "dqn-data"
    # No --env: the run's env and env config.
    assert main(["--policy", str(dqn_run), "--episodes", "6", "--out", str(out),
                 "--no-progress"]) == 0
    dataset = load_dataset(out, verify=True)
    _check_chain_rows(dataset, 6)
    info = dataset.info
    assert info.behaviour_policy == f"{dqn_run} seed 0"
    assert info.extra["expert"] == str(dqn_run)
    # The agent's exact J, computed here from its own policy table.
    _, agent, agent_state = load_policy(dqn_run, 0)
    model = chain_model(ChainConfig())
    table = planning.policy_table(agent.policy, agent_state, model)
    exact = float(planning.expected_return(model, table))
    assert info.extra["exact_return"] == pytest.approx(exact, abs=1e-5)
    # DQN's policy is greedy and the chain deterministic: every episode earns exactly J(pi).
    assert info.behaviour_return == pytest.approx(exact, abs=1e-5)
    assert info.behaviour_return_std == pytest.approx(0.0, abs=1e-6)
    greedy = np.asarray(table).argmax(1)
    position = np.asarray(dataset.transitions.obs).argmax(1)
    np.testing.assert_array_equal(dataset.transitions.action, greedy[position])

    mixture = collect(None, None, "mixture", 4, seed=0, epsilon=0.25, checkpoint=str(dqn_run))
    assert mixture.info.behaviour_policy == f"mixture(epsilon=0.25) of {dqn_run} seed 0"
    mixed = 0.75 * table + 0.25 * planning.uniform_policy(model)
    assert mixture.info.extra["exact_return"] == pytest.approx(
        float(planning.expected_return(model, mixed)), abs=1e-5)

    assert main(["--env", "riverswim", "--policy", str(dqn_run), "--episodes", "2",
                 "--out", str(tmp_path / "x")]) == 2
    assert "--env: 'riverswim' differs from 'chain'" in capsys.readouterr().err
    assert main(["--policy", str(dqn_run), "--episodes", "2", "--out", str(tmp_path / "x"),
                 "--env-config.length", "5"]) == 2
    err = capsys.readouterr().err
    assert "--policy:" in err and "observations (8,)" in err


def test_action_count_mismatch_is_caught_before_loading(tmp_path, capsys):
    # A run directory's config.yaml is all the check needs: no training, nothing compiled.
    run_dir = tmp_path / "lock-run"
    (run_dir / "checkpoints" / "0").mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(
        {"agent": "dqn", "env": "combination-lock", "env_config": {"num_actions": 4}}))
    code = main(["--policy", "mixture", "--checkpoint", str(run_dir), "--epsilon", "0.5",
                 "--episodes", "2", "--out", str(tmp_path / "out"),
                 "--env-config.num-actions", "3"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("error: --checkpoint:") and "4 actions" in err and "has 3" in err


# --------------------------------------------------------------------------------------------
# Kill safety
# --------------------------------------------------------------------------------------------


def test_killed_collection_leaves_nothing_loadable(tmp_path):
    """SIGKILL before, at the start of and during the write: nothing loadable at --out."""
    # About 50k rows of 1 KiB observations: the save takes long enough to be hit (about 0.4 s
    # from its third file to its end, mostly fsync, measured on 2 cores; 0.5 s at 100k rows).
    args = ["--env", "chain", "--env-config.length", "256", "--env-config.horizon", "256",
            "--policy", "random", "--episodes", "200", "--num-envs", "200", "--no-progress"]
    env = _subprocess_env()

    def partial_files(parent: Path) -> int | None:
        partials = [p for p in parent.iterdir() if ".partial-" in p.name]
        return len(list(partials[0].iterdir())) if partials else None

    moments = {
        "early": lambda parent, elapsed: elapsed > 3.0,
        "write starts": lambda parent, elapsed: partial_files(parent) is not None,
        "mid write": lambda parent, elapsed: (partial_files(parent) or 0) >= 3,
    }
    trials = {}
    for name in moments:
        parent = tmp_path / name.replace(" ", "-")
        parent.mkdir()
        process = subprocess.Popen(
            [sys.executable, "-m", "rlkit.collect", *args, "--out", str(parent / "out")],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        trials[name] = (parent, process, time.monotonic())
    pending = dict(trials)
    deadline = time.monotonic() + 120
    while pending and time.monotonic() < deadline:
        for name, (parent, process, start) in list(pending.items()):
            if process.poll() is not None:
                pytest.fail(f"{name}: finished before it was killed "
                            f"({process.stderr.read().decode()[-500:]})")
            if moments[name](parent, time.monotonic() - start):
                process.send_signal(signal.SIGKILL)
                process.wait()
                del pending[name]
        time.sleep(0.002)
    assert not pending, f"never reached: {list(pending)}"
    for name, (parent, process, _) in trials.items():
        process.stderr.close()
        assert process.returncode == -signal.SIGKILL, name
        out = parent / "out"
        if out.exists():
            with pytest.raises(DatasetError):
                load_dataset(out)
        assert all(p.name.startswith(".") for p in parent.iterdir()), name
        shutil.rmtree(parent)  # about 100 MB of leftovers each


def test_a_dataset_that_will_not_fit_in_memory_is_refused_in_one_line(tmp_path, capsys,
                                                                       monkeypatch):
    import rlkit.collect

    # A chain episode always lasts its horizon of 16 steps; a transition holds obs and next_obs
    # (8 float32 each), an int32 action, a float32 reward and two bool flags: 74 bytes. 1,000
    # episodes are 1.184 MB, held twice while assembled: 2.368 MB, against 1 MB available.
    monkeypatch.setattr(rlkit.collect, "available_memory", lambda: 1_000_000)
    out = tmp_path / "big"
    assert main(["--env", "chain", "--policy", "random", "--episodes", "1000", "--out", str(out),
                 "--num-envs", "100", "--no-progress"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [
        "error: --episodes: 1,000 episodes of chain would need about 2.37 MB of memory "
        "(1.18 MB of transitions, 16 per episode over the first 100, held 2 times while "
        "assembled), more than the 1 MB available; collect at most 422 episodes per dataset "
        "(several datasets with different --seed), or free memory"], lines
    assert not out.exists()
    # 422 episodes (2368 * 422 = 999,296 bytes) fit; 423 do not.
    assert collect("chain", None, "random", 422, seed=0, num_envs=100).num_episodes == 422
    with pytest.raises(rlkit.errors.RlkitError, match="collect at most 422 episodes"):
        collect("chain", None, "random", 423, seed=0, num_envs=100)


def test_available_memory_is_the_lower_of_meminfo_and_the_cgroup_limit(monkeypatch):
    import rlkit.collect

    files = {"/proc/meminfo": "MemTotal: 100 kB\nMemAvailable:  2000 kB\n",
             "/sys/fs/cgroup/memory.max": "1500000\n",
             "/sys/fs/cgroup/memory.current": "500000\n"}

    def read_text(self, *args, **kwargs):
        if str(self) not in files:
            raise FileNotFoundError(str(self))
        return files[str(self)]

    monkeypatch.setattr(Path, "read_text", read_text)
    assert rlkit.collect.available_memory() == 1_000_000  # 1.5 MB limit - 0.5 MB used
    files["/sys/fs/cgroup/memory.max"] = "max\n"
    assert rlkit.collect.available_memory() == 2000 * 1024
    del files["/proc/meminfo"]
    assert rlkit.collect.available_memory() is None


def test_an_out_below_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "dataset"
    assert main(["--env", "chain", "--policy", "random", "--episodes", "2", "--out", str(out),
                 "--no-progress"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: --out: {tmp_path / 'file'} is a file, so {out} cannot be a directory inside "
        "it; choose another path"]


def test_a_policy_whose_state_holds_typed_keys_loads_and_collects(tmp_path, capsys):
    """GLOW's agent state holds typed PRNG keys: the partial restore must re-wrap them from
    their shapes (it once failed: "unexpected PRNG key type ShapeDtypeStruct")."""
    import jax

    from rlkit.train import load_policy
    from rlkit.train import main as train

    run_dir = tmp_path / "glow"
    assert train(["glow", "--env", "combination-lock", "--total-steps", "100", "--run-dir",
                  str(run_dir), "--no-progress"]) == 0
    _, _, agent_state = load_policy(run_dir, 0)
    keys = [x for x in jax.tree.leaves(agent_state)
            if jax.numpy.issubdtype(x.dtype, jax.dtypes.prng_key)]
    assert keys, "GLOW's state no longer holds typed keys: this test checks nothing"
    out = tmp_path / "glow-data"
    assert main(["--policy", str(run_dir), "--epsilon", "0.3", "--episodes", "4", "--out",
                 str(out), "--no-progress"]) == 0
    assert load_dataset(out, verify=True).transitions.obs.shape[0] > 0
