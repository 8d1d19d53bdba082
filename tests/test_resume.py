"""A run killed with SIGKILL resumes from its latest checkpoint: step counter, evals.jsonl and
TensorBoard continue with no duplicate and no missing steps."""

import math
import re
import signal
import time

import pytest
import torch

from launch import checkpoint
from metrics import evallog
from tests.conftest import run_train, scalars, start_train, train_in_process

STEPS, EVAL_EVERY, CKPT_EVERY = 4000, 400, 1000


def _eval_steps(run):
    return [r["step"] for r in evallog.read(run / "evals.jsonl")]


@pytest.mark.multiproc
@pytest.mark.integration
def test_resume_after_sigkill_continues_without_gaps_or_duplicates(tmp_path):
    run = tmp_path / "run"
    proc = start_train("--suite", "pointmass", "--backend", "single", "--steps", STEPS, "--eval-every", EVAL_EVERY,
                       "--run-dir", run, "--set", f"run.checkpoint_every={CKPT_EVERY}",
                       "--set", "run.log_every=200", "--set", "eval.goals=2")
    # Kill once a checkpoint past the start exists and evaluations ran after it, so the
    # resumed run must drop them and evaluate those steps again.
    deadline = time.time() + 240
    killed_at = None
    while time.time() < deadline and proc.poll() is None:
        ckpts = checkpoint.list_checkpoints(run / "checkpoints")
        latest = int(re.search(r"\d+", ckpts[-1].name).group()) if ckpts else 0
        evaluated = _eval_steps(run)
        if latest >= CKPT_EVERY and evaluated and max(evaluated) > latest:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            killed_at = max(evaluated)
            break
        time.sleep(0.05)
    assert killed_at is not None, "run finished or stalled before it could be killed"

    saved = checkpoint.load_latest(run / "checkpoints")["step"]
    assert killed_at - saved <= CKPT_EVERY  # lost at most one checkpoint interval
    resumed = run_train("--resume", run)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {run} from step {saved:,}" in resumed.stdout

    expected = list(range(0, STEPS + 1, EVAL_EVERY))
    rows = evallog.read(run / "evals.jsonl")
    assert sorted({r["step"] for r in rows}) == expected
    for step in expected:  # every task exactly once per evaluation: no duplicates
        assert sorted(r["task"] for r in rows if r["step"] == step) == ["reach-e", "reach-n", "reach-s", "reach-w"]
    assert [s for s, _ in scalars(run / "tb", "eval/success_mean")] == expected
    train_steps = [s for s, _ in scalars(run / "tb", "perf/env_steps_per_s")]
    assert train_steps == sorted(set(train_steps)) and train_steps[-1] == STEPS
    final = checkpoint.load_latest(run / "checkpoints")
    assert final["step"] == STEPS
    assert final["learner"]["num_updates"] > 0


@pytest.mark.integration
def test_resume_refills_the_replay_before_updating(tmp_path):
    """The replay buffer is not checkpointed: after --resume, updates wait until every task holds
    its warm-up's worth again (300 transitions each, 1,200 env steps on PM4), then go on at the
    same ratio (1 update per 4 env steps)."""
    run = tmp_path / "run"
    assert train_in_process("--suite", "pointmass", "--backend", "single", "--steps", 1600, "--eval-every", 800,
                            "--run-dir", run, "--set", "eval.goals=1").returncode == 0
    updates = checkpoint.load_latest(run / "checkpoints")["learner"]["num_updates"]
    assert updates == (1600 - 1200) // 4
    proc = train_in_process("--resume", run, "--steps", 3200)
    assert proc.returncode == 0, proc.stderr
    state = checkpoint.load_latest(run / "checkpoints")
    assert state["step"] == 3200
    assert state["learner"]["num_updates"] == updates + (3200 - 1600 - 1200) // 4  # refill first, then 100 more
    assert sorted({r["step"] for r in evallog.read(run / "evals.jsonl")}) == [0, 800, 1600, 2400, 3200]
    assert "steps: 3200" in (run / "config.yaml").read_text()


@pytest.mark.integration
def test_a_diverging_run_stops_and_keeps_its_last_good_checkpoint(tmp_path):
    run = tmp_path / "run"
    proc = train_in_process("--suite", "pointmass", "--backend", "single", "--steps", 6000, "--run-dir", run,
                            "--set", "sac.critic_lr=100000000.0", "--set", "run.checkpoint_every=1000",
                            "--set", "eval.goals=1")
    assert proc.returncode == 3, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "training diverged" in lines[0] and "Traceback" not in proc.stderr
    saved = checkpoint.list_checkpoints(run / "checkpoints")
    assert saved and saved[-1].name in lines[0]  # the line names the last good checkpoint
    state = checkpoint.load_latest(run / "checkpoints")
    assert state["step"] < 6000
    for network in ("actor", "critic"):
        assert all(bool(torch.isfinite(v).all()) for v in state["learner"][network].values())
    rows = evallog.read(run / "evals.jsonl")  # no evaluation of the diverged policy was written
    assert rows and all(math.isfinite(r["return"]) for r in rows)


@pytest.mark.integration
def test_checkpoint_holds_everything_to_resume(tmp_path):
    run = tmp_path / "run"
    assert train_in_process("--suite", "pointmass", "--backend", "single", "--steps", 400, "--run-dir", run,
                     "--set", "eval.goals=1",
                     "--set", "replay.save_in_checkpoint=true").returncode == 0
    (path,) = checkpoint.list_checkpoints(run / "checkpoints")[-1:]
    state = torch.load(path, weights_only=True)
    assert set(state["learner"]) >= {"actor", "critic", "critic_target", "log_alpha", "actor_optimizer",
                                     "critic_optimizer", "alpha_optimizer", "num_updates"}
    assert [set(r) for r in state["rng"]] == [{"torch", "numpy"}] and state["step"] == 400
    assert sum(t["size"] for t in state["replay"]["tasks"]) == 400
    assert not list((run / "checkpoints").glob("*.tmp"))
