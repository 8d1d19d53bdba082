"""torchrun learners on real processes: two ranks on one node, two "nodes" (torchrun agents) on
loopback through the c10d rendezvous, an elastic restart after a killed rank, and preemption by
SIGTERM. Every run: pointmass PM4, 2 ranks, the single-process backend (deterministic), with two
auxiliary tasks (reward prediction, PVN with its target heads): heads drawn on each rank that
must still agree."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from launch import checkpoint
from metrics import evallog
from tests.conftest import REPO, TRAIN, Lines, env_with_tmpdir, train_in_process

pytestmark = [pytest.mark.multiproc, pytest.mark.integration]

PM4 = ["reach-e", "reach-n", "reach-s", "reach-w"]
# run.threads=1: one torchrun agent with 2 ranks and two agents with 1 rank each would otherwise size
# the learner's threads differently (1 vs 2), and a reduction split over 2 threads rounds differently.
FLAGS = ["--suite", "pointmass", "--backend", "single", "--steps", 2000, "--eval-every", 1000,
         "--set", "eval.goals=2", "--set", "run.checkpoint_every=1000", "--set", "run.threads=1",
         "--set", "aux.reward=0.5", "--set", "aux.pvn=0.5", "--set", "aux.hidden=32", "--set", "aux.pvn_tasks=8"]


def _torchrun_command(*args, launcher=("--standalone", "--nproc-per-node=2"), script=TRAIN):
    return [sys.executable, "-m", "torch.distributed.run", *launcher, str(script), *map(str, args)]


def _torchrun(*args, tmp: Path, timeout=400, **kwargs):
    """torchrun to its end; its log directories go under `tmp`."""
    return subprocess.run(_torchrun_command(*args, **kwargs), capture_output=True, text=True, timeout=timeout,
                          env=env_with_tmpdir(tmp), cwd=REPO)


def _latest(run) -> dict:
    return checkpoint.load_latest(run / "checkpoints")


def _ranks_agree(summary: dict) -> bool:
    """Every learned tensor (networks, targets, temperatures, auxiliary heads and PVN's targets)
    the same on every rank: no difference, one state digest."""
    digests = {r["state_digest"] for r in summary["ranks"]}
    return summary["max_parameter_difference_across_ranks"] == 0.0 and len(digests) == 1 and len(digests.pop()) == 64


def _eval_steps(run) -> list[int]:
    rows = evallog.read(run / "evals.jsonl")
    keys = [(r["step"], r["task"]) for r in rows]
    assert len(keys) == len(set(keys)), "duplicate evaluation rows"
    steps = sorted({r["step"] for r in rows})
    assert all(sorted(r["task"] for r in rows if r["step"] == s) == PM4 for s in steps), "missing evaluation rows"
    return steps


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def standalone(tmp_path_factory):
    """`torchrun --standalone --nproc-per-node=2` on PM4: (run dir, its final checkpoint)."""
    tmp = tmp_path_factory.mktemp("standalone")
    run = tmp / "run"
    proc = _torchrun(*FLAGS, "--run-dir", run, tmp=tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list(tmp.glob("torchelastic_*"))  # torchrun's log directory, in the test's own
    return run, _latest(run)


def test_torchrun_two_learner_ranks(standalone, tmp_path):
    run, final = standalone
    summary = json.loads((run / "learners.json").read_text())
    assert summary["world_size"] == 2 and summary["sync"] == "step"
    shards = [r["tasks"] for r in summary["ranks"]]
    assert sorted(shards[0] + shards[1]) == PM4 and not set(shards[0]) & set(shards[1])
    assert all(r["env_steps"] > 0 for r in summary["ranks"])
    assert _ranks_agree(summary)
    # One all-reduce per network per update on each rank (critic, actor, temperatures).
    assert all(r["sync"]["allreduces"] == 3 * r["updates"] for r in summary["ranks"])
    # The update-to-data ratio does not depend on the ranks: one learner on the same global env
    # steps does exactly as many updates ((2000 - 4 x 300 warm-up) / 4 envs = 200).
    single = tmp_path / "single"
    assert train_in_process(*FLAGS, "--run-dir", single).returncode == 0
    assert final["learner"]["num_updates"] == _latest(single)["learner"]["num_updates"] == 200
    # Rank 0 alone writes: one event file, one row per (step, task), rank 0's files only.
    assert len(list((run / "tb").glob("events.out.tfevents.*"))) == 1
    assert _eval_steps(run) == [0, 1000, 2000]
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "config.yaml", "episodes.jsonl", "evals.jsonl",
                                                     "learners.json", "plasticity.jsonl", "tb"]
    rows = [json.loads(line) for line in (run / "plasticity.jsonl").read_text().splitlines()]
    assert len({r["step"] for r in rows}) == len(rows)  # rank 0 alone logs the diagnostics, once per log point


def test_torchrun_two_ranks_in_bf16_keep_fp32_weights_and_agree(standalone, tmp_path):
    """sac.precision=bf16 on 2 ranks: the passes run in bf16 (the networks end unlike the fp32 run's),
    one all-reduce per network per update (of fp32 gradients: the master weights are fp32), everything
    learned stays fp32, and the ranks still agree bit for bit."""
    run = tmp_path / "run"
    proc = _torchrun(*FLAGS, "--run-dir", run, "--set", "sac.precision=bf16", tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert " in bf16, " in proc.stdout
    summary = json.loads((run / "learners.json").read_text())
    assert summary["world_size"] == 2 and _ranks_agree(summary)
    assert all(r["sync"]["allreduces"] == 3 * r["updates"] for r in summary["ranks"])
    learner = _latest(run)["learner"]
    networks = [t for net in ("actor", "critic", "critic_target") for t in learner[net].values()]
    assert {t.dtype for t in networks} == {torch.float32}
    assert not _same_networks(learner, standalone[1]["learner"])


def test_torchrun_two_ranks_train_a_recurrent_agent_and_agree(tmp_path):
    """sac.memory=gru on 2 ranks (task-hidden PM4, tasks sharded): both memories are all-reduced
    with the rest, so every learned tensor ends the same on both ranks."""
    run = tmp_path / "run"
    flags = FLAGS[:14] + ["--set", "sac.memory=gru", "--set", "sac.memory_hidden=16",
                                       "--set", "sac.batch_size_per_task=8", "--set", "sac.task_input=false",
                                       "--set", "sac.head=single"]
    proc = _torchrun(*flags, "--run-dir", run, tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run / "learners.json").read_text())
    assert summary["world_size"] == 2 and _ranks_agree(summary)
    assert all(r["updates"] > 0 and r["sync"]["allreduces"] == 3 * r["updates"] for r in summary["ranks"])
    assert any(k.startswith("memory.rnn") for k in _latest(run)["learner"]["critic"])


def _two_agents(run, port, extra=((), ())):
    """Two torchrun agents, one rank each, meeting at a c10d rendezvous on loopback."""
    procs = []
    for node in (0, 1):
        launcher = ("--nnodes=2", "--nproc-per-node=1", f"--node-rank={node}", "--rdzv-backend=c10d",
                    f"--rdzv-endpoint=127.0.0.1:{port}", f"--rdzv-id=pm4-{port}")
        procs.append(subprocess.Popen(_torchrun_command(*FLAGS, "--run-dir", run, *extra[node], launcher=launcher),
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      env=env_with_tmpdir(run.parent), cwd=REPO))
    return [(p.wait(timeout=400), *p.communicate()) for p in procs]


def _same_tree(a, b) -> bool:
    """Nested dicts/lists of tensors and numbers, equal everywhere."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_tree(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same_tree(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    return a == b


def _same_networks(a: dict, b: dict) -> bool:
    return all(torch.equal(a[net][k], b[net][k]) for net in ("actor", "critic", "critic_target") for k in a[net])


def test_two_nodes_on_loopback_train_as_one_node(standalone, tmp_path):
    """Two agents with --nnodes=2 on 127.0.0.1 (ranks assigned by the rendezvous) end with the very
    networks of the standalone two-rank run; only the rank-0 process writes the run directory."""
    run = tmp_path / "run"
    results = _two_agents(run, _free_port())
    assert all(code == 0 for code, _, _ in results), [err[-2000:] for _, _, err in results]
    assert len(list(tmp_path.glob("torchelastic_*"))) == 2  # each agent's log directory, in the test's own
    assert _same_networks(_latest(run)["learner"], standalone[1]["learner"])
    summary = json.loads((run / "learners.json").read_text())
    assert summary["world_size"] == 2 and _ranks_agree(summary)
    assert summary["ranks"][0]["state_digest"] == json.loads((standalone[0] / "learners.json").read_text())[
        "ranks"][0]["state_digest"]
    assert len(list((run / "tb").glob("events.out.tfevents.*"))) == 1
    assert sum("polytask: training" in out for _, out, _ in results) == 1  # one rank 0, whichever node it is on
    assert _eval_steps(run) == [0, 1000, 2000]

    # Nodes started with different arguments stop at once with one line, not a hang.
    mismatched = _two_agents(tmp_path / "mismatch", _free_port(), extra=((), ("--seed", 1)))
    assert all(code != 0 for code, _, _ in mismatched)
    lines = [line for _, _, err in mismatched for line in err.splitlines() if line.startswith("train.py: error")]
    assert lines and all("started with different arguments or versions" in line for line in lines), lines


def _worker_pid(run, rank: int, restart: int, timeout=120) -> int:
    """The pid of the training process of `rank` in torchrun attempt `restart` of the run."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for entry in Path("/proc").iterdir():
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
                env = dict(kv.split(b"=", 1) for kv in (entry / "environ").read_bytes().split(b"\0") if b"=" in kv)
            except (OSError, ValueError):
                continue
            if (str(run).encode() in cmdline and env.get(b"RANK") == str(rank).encode()
                    and env.get(b"TORCHELASTIC_RESTART_COUNT") == str(restart).encode()):
                return int(entry.name)
        time.sleep(0.2)
    raise AssertionError(f"no rank {rank} process found")


def test_elastic_restarts_after_killed_ranks(tmp_path):
    """--max-restarts 2, local SGD. Rank 1 is killed once the run dir exists (no checkpoint yet):
    torchrun starts both ranks again and they start the run again, its first logs discarded. Then
    rank 1 of the new attempt is killed after the first checkpoint: they resume from it. The job
    finishes with every evaluation logged once and identical networks on both ranks."""
    run = tmp_path / "run"
    flags = [*FLAGS, "--steps", 4000, "--sync", "local", "--sync-period", 4, "--run-dir", run]
    proc = subprocess.Popen(_torchrun_command(*flags, launcher=("--standalone", "--nproc-per-node=2",
                                                                "--max-restarts=2")),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env_with_tmpdir(tmp_path),
                            cwd=REPO)
    lines = Lines(proc.stdout)
    first = _worker_pid(run, 1, restart=0)
    lines.wait_for(lambda s: s.startswith("polytask: training"))  # config.yaml is written
    os.kill(first, signal.SIGKILL)
    second = _worker_pid(run, 1, restart=1)
    deadline = time.time() + 200
    while not checkpoint.list_checkpoints(run / "checkpoints") and time.time() < deadline:
        time.sleep(0.05)
    os.kill(second, signal.SIGKILL)
    assert proc.wait(timeout=400) == 0, proc.stderr.read()[-3000:]
    lines.thread.join(timeout=10)
    assert sum(line.startswith("polytask: training") for line in lines.lines) == 3, lines.lines
    resumed = [line for line in lines.lines if line.startswith("polytask: resuming")]
    assert len(resumed) == 1 and "from step 1,000" in resumed[0], lines.lines
    summary = json.loads((run / "learners.json").read_text())
    assert summary["step"] == 4000 and _ranks_agree(summary)
    assert _eval_steps(run) == [0, 1000, 2000, 3000, 4000]
    # Local SGD: 3 all-reduces (one per network) per average, far fewer than 3 per update; at
    # least one average per 4 updates (none were made before the resume at step 1,000: the
    # warm-up lasts 1,200 steps), sync points add a few.
    sync, updates = summary["ranks"][0]["sync"], summary["ranks"][0]["updates"]
    assert sync["allreduces"] == 3 * sync["averages"] and updates // 4 <= sync["averages"] < updates / 3


def test_sigterm_checkpoints_the_current_step_and_resume_finishes_like_an_uninterrupted_run(standalone, tmp_path):
    """SIGTERM to the torchrun agent (a cluster's preemption): every rank ends its update round,
    rank 0 writes a checkpoint at the current step, the job stops with one line per rank; --resume
    then ends with the step counts and evaluations of the uninterrupted run."""
    run = tmp_path / "run"
    proc = subprocess.Popen(_torchrun_command(*FLAGS, "--run-dir", run, "--set", "run.log_every=100",
                                              "--balancer", "uncertainty"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env_with_tmpdir(tmp_path),
                            cwd=REPO)
    lines = Lines(proc.stdout)
    lines.wait_for(lambda s: s.startswith("step ") and " 0.0 updates/s" not in s and "updates/s" in s)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    stderr = proc.stderr.read()
    stopped = [line for line in stderr.splitlines() if line.startswith("train.py: stopped by SIGTERM")]
    assert len(stopped) == 2 and not any(f"[rank{r}]: Traceback" in stderr for r in (0, 1)), stderr[-3000:]
    state = _latest(run)
    assert 1200 < state["step"] < 2000  # mid-run, after learning started
    assert f"at env step {state['step']:,}" in stopped[0]

    # Each rank learns its own tasks' uncertainty weights (rank r: tasks r and r + 2), kept per rank.
    learned = [ranks["critic"]["learned"] for ranks in state["rank_balancers"]]
    assert all(learned[r][r] != 0 and learned[r][r + 2] != 0 and learned[r][1 - r] == 0 for r in (0, 1)), learned

    resumed = _torchrun("--resume", run, tmp=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary, uninterrupted = (json.loads((r / "learners.json").read_text()) for r in (run, standalone[0]))
    assert summary["step"] == uninterrupted["step"]
    assert [r["env_steps"] for r in summary["ranks"]] == [r["env_steps"] for r in uninterrupted["ranks"]]
    assert _eval_steps(run) == _eval_steps(standalone[0])
    # The resume refills replay (1,200 steps) until the end: no update, so everything restored
    # (networks, optimizers, auxiliary heads, every rank's balancer) is saved again as it was.
    final = _latest(run)
    assert final["learner"]["num_updates"] == state["learner"]["num_updates"] > 0
    for key in ("learner", "auxiliary", "rank_balancers"):
        assert _same_tree(final[key], state[key]), key
