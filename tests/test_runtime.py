"""The actor-learner runtime on real processes: local actor processes, Ray actors, torchrun
learners, an actor killed mid-run, and Ctrl-C."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from metrics import evallog
from tests.conftest import REPO, TRAIN, run_train, scalars, train_in_process

PM4 = ["reach-e", "reach-n", "reach-s", "reach-w"]


class _Lines:
    """Collects a process's stdout lines in the background."""

    def __init__(self, stream):
        self.lines: list[str] = []
        self.thread = threading.Thread(target=lambda: self.lines.extend(iter(stream.readline, "")), daemon=True)
        self.thread.start()

    def wait_for(self, predicate, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            found = [line for line in list(self.lines) if predicate(line)]
            if found:
                return found
            time.sleep(0.1)
        raise AssertionError(f"timed out; output so far: {self.lines[-10:]}")


def _start(args, env=None, **kwargs):
    proc = subprocess.Popen([sys.executable, str(TRAIN), *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env or os.environ.copy(), **kwargs)
    return proc, _Lines(proc.stdout)


def _actor_pid(lines, actor):
    line = lines.wait_for(lambda s: s.startswith(f"actor {actor} started"))[0]
    return int(line.split("pid ")[1].split(",")[0].rstrip(")"))


def _final_success(run) -> float:
    rows = evallog.read(run / "evals.jsonl")
    last = max(r["step"] for r in rows)
    return sum(r["success"] for r in rows if r["step"] == last) / 4


def _assert_learned_with_two_actors(run, proc):
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((run / "learners.json").read_text())
    by_actor = summary["ranks"][0]["steps_by_actor"]
    assert sorted(by_actor) == ["0", "1"] and min(by_actor.values()) > 0, by_actor
    assert sum(by_actor.values()) == summary["step"]
    assert summary["actor_restarts"] == 0
    # Each actor's experience reaches the learner and TensorBoard.
    for actor in (0, 1):
        assert scalars(run / "tb", f"actors/steps/actor{actor}")[-1][1] == by_actor[str(actor)]
    rows = evallog.read(run / "evals.jsonl")
    assert rows[0]["step"] == 0 and all("policy_version" in r for r in rows)
    assert sum(r["success"] for r in rows if r["step"] == 0) / 4 <= 0.2
    assert _final_success(run) >= 0.8, rows[-4:]


def test_local_actor_processes_learn(tmp_path):
    run = tmp_path / "run"
    proc = run_train("--suite", "pointmass", "--backend", "local", "--actors", 2, "--steps", 8000,
                     "--eval-every", 4000, "--seed", 1, "--run-dir", run, "--set", "eval.goals=20")
    _assert_learned_with_two_actors(run, proc)


def test_ray_actors_learn_survive_a_lost_actor_and_write_nothing_outside_temp_dirs(tmp_path):
    # Short paths: Ray's unix sockets live under TMPDIR and must stay under ~100 characters.
    with tempfile.TemporaryDirectory(prefix="pt-", dir="/tmp") as scratch:
        home, tmp = Path(scratch) / "home", Path(scratch) / "t"
        home.mkdir(), tmp.mkdir()
        run = tmp_path / "run"
        proc, lines = _start(["--suite", "pointmass", "--backend", "ray", "--actors", 2, "--steps", 12000,
                              "--eval-every", 4000, "--seed", 1, "--run-dir", run, "--set", "eval.goals=20",
                              "--set", "run.log_every=500"], env={**os.environ, "HOME": str(home), "TMPDIR": str(tmp)})
        pid = _actor_pid(lines, 1)
        lines.wait_for(lambda s: s.startswith("step ") and " 0.0 updates/s" not in s)
        os.kill(pid, signal.SIGKILL)  # the Ray actor's worker process is lost
        proc.wait(timeout=400)
        lines.thread.join(timeout=10)
        assert proc.returncode == 0, proc.stderr.read()[-3000:]
        assert any(s.startswith("actor 1 died") for s in lines.lines)
        summary = json.loads((run / "learners.json").read_text())
        assert summary["actor_restarts"] == 1
        by_actor = summary["ranks"][0]["steps_by_actor"]
        assert sorted(by_actor) == ["0", "1"] and min(by_actor.values()) > 0
        assert _final_success(run) >= 0.8
        assert list(home.iterdir()) == []  # no ~/.ray


def test_actors_block_when_the_learner_does_not_read():
    """Backpressure: experience waiting for the learner stays bounded (a pipe's worth per actor)."""
    from agents.sac.config import SACConfig
    from launch.actor import ActorSpec
    from launch.local_actors import LocalActorPool

    sac = SACConfig(hidden_sizes=(8,))
    specs = [ActorSpec(a, "pointmass", "PM4", 0, (a, a + 2), 2, sac, 4) for a in range(2)]
    pool = LocalActorPool(specs, num_params=1, chunk_steps=64, max_policy_lag=10**9, log=lambda *a: None)
    try:
        first = pool.poll(None)  # the actors are stepping (~10^4 steps/s each when unblocked)
        time.sleep(3)            # the learner reads nothing for 3 s
        pool.stop.set()          # actors exit after the send they are blocked in
        waiting = 0
        for worker in pool.workers.values():  # everything that was buffered, pipe by pipe
            try:
                while worker.conn.poll(5):
                    worker.conn.recv()
                    waiting += 1
            except EOFError:
                pass
        # A 64 KiB pipe holds ~20 of these ~3 KiB chunks; unbounded actors would have made ~900.
        assert first and waiting <= 2 * 30, waiting
    finally:
        pool.close()


def _torchrun(*args, timeout=400, script=TRAIN):
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           str(script), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env=os.environ.copy(), cwd=REPO)


def _updates(run) -> int:
    from launch import checkpoint
    return checkpoint.load_latest(run / "checkpoints")["learner"]["num_updates"]


def test_torchrun_two_learner_ranks(tmp_path):
    run, single = tmp_path / "run", tmp_path / "single"
    flags = ["--suite", "pointmass", "--backend", "single", "--steps", 2000, "--eval-every", 1000,
             "--set", "eval.goals=2", "--set", "run.checkpoint_every=1000"]
    proc = _torchrun(*flags, "--run-dir", run)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run / "learners.json").read_text())
    assert summary["world_size"] == 2
    shards = [r["tasks"] for r in summary["ranks"]]
    assert sorted(shards[0] + shards[1]) == PM4 and not set(shards[0]) & set(shards[1])
    assert all(r["env_steps"] > 0 for r in summary["ranks"])
    assert summary["max_parameter_difference_across_ranks"] == 0.0
    # The update-to-data ratio does not depend on the ranks: one learner on the same global env
    # steps does exactly as many updates ((2000 - 4 x 300 warm-up) / 4 envs = 200).
    assert train_in_process(*flags, "--run-dir", single).returncode == 0
    assert _updates(run) == _updates(single) == 200
    # Rank 0 alone writes: one event file, one row per (step, task), rank 0's files only.
    assert len(list((run / "tb").glob("events.out.tfevents.*"))) == 1
    rows = evallog.read(run / "evals.jsonl")
    keys = [(r["step"], r["task"]) for r in rows]
    assert len(keys) == len(set(keys)) and {r["task"] for r in rows} == set(PM4)
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "config.yaml", "episodes.jsonl", "evals.jsonl",
                                                     "learners.json", "tb"]

    # --resume works for the multi-rank run.
    resumed = _torchrun("--resume", run, "--steps", 3000)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stdout
    summary = json.loads((run / "learners.json").read_text())
    assert summary["step"] >= 3000 and summary["max_parameter_difference_across_ranks"] == 0.0
    steps = sorted({r["step"] for r in evallog.read(run / "evals.jsonl")})
    assert steps[0] == 0 and steps[-1] >= 3000 and len(steps) == len(set(steps))


def test_torchrun_gradient_is_the_task_balanced_mean_with_an_uneven_shard(tmp_path):
    """3 tasks on 2 ranks (2 + 1): the synced gradient equals one process's gradient of the mean
    over all tasks; plain averaging of the ranks' means would weight task 1 twice as much.
    Then PCGrad under the same shards (see the script)."""
    proc = _torchrun(tmp_path, script=REPO / "tests" / "scripts" / "torchrun_gradient.py", timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads(path.read_text()) for path in sorted(tmp_path.glob("rank*.json"))]
    assert sorted(r["tasks"] for r in results) == [[0, 2], [1]]
    for r in results:
        assert r["weighted"] < 1e-5, r
        assert r["unweighted"] > 1e-2, r  # the check can tell the two apart
    # PCGrad: each rank combines every task's gathered gradient rows: the ranks stay identical
    # after every update and equal the single-process PCGrad updates on the whole batch.
    assert results[0]["pcgrad_params"] == results[1]["pcgrad_params"]
    for r in results:
        assert r["pcgrad_error"] < 1e-5 and r["pcgrad_bytes"] > 0, r
        assert r["averaged_error"] > 1e-4, r  # not gathering would be caught


def test_killed_actor_is_restarted_and_the_run_finishes(tmp_path):
    run = tmp_path / "run"
    # 8,000 steps: actors run ahead during warm-up (a killed actor's buffered chunks are still
    # used), so the death must come before its share of the budget is collected.
    proc, lines = _start(["--suite", "pointmass", "--backend", "local", "--actors", 2, "--steps", 8000,
                          "--run-dir", run, "--set", "eval.goals=2", "--set", "run.log_every=500"])
    pid = _actor_pid(lines, 1)
    lines.wait_for(lambda s: s.startswith("step ") and "updates/s" in s and " 0.0 updates/s" not in s)
    os.kill(pid, signal.SIGKILL)  # mid-run: learning has started, most of the budget is left
    proc.wait(timeout=300)
    lines.thread.join(timeout=10)
    assert proc.returncode == 0, proc.stderr.read()
    assert any(s.startswith("actor 1 died") for s in lines.lines)
    summary = json.loads((run / "learners.json").read_text())
    assert summary["actor_restarts"] == 1 and summary["step"] >= 8000
    done = [s for s in lines.lines if s.startswith("done:")]
    assert len(done) == 1 and "actor restarts 1" in done[0]
    assert scalars(run / "tb", "actors/restarts")[-1][1] == 1


def _session_processes(sid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[3]) == sid and fields[0] != "Z":  # field 6 of stat: session id
                found.append(int(entry.name))
    return found


def test_ctrl_c_shuts_everything_down(tmp_path):
    run = tmp_path / "run"
    proc, lines = _start(["--suite", "pointmass", "--backend", "local", "--actors", 2, "--steps", 10**7,
                          "--run-dir", run, "--set", "run.log_every=500"], start_new_session=True)
    _actor_pid(lines, 0), _actor_pid(lines, 1)
    lines.wait_for(lambda s: s.startswith("step "))
    assert len(_session_processes(proc.pid)) >= 4  # learner, 2 actors, evaluator
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    proc.wait(timeout=60)
    assert proc.returncode == 130
    assert "Traceback" not in proc.stderr.read()
    deadline = time.time() + 10
    while _session_processes(proc.pid) and time.time() < deadline:
        time.sleep(0.1)
    assert _session_processes(proc.pid) == []  # no orphans
