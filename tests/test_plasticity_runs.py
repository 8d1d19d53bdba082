"""Plasticity diagnostics and remedies in real training runs (launch/train.py) on the rotation sequence."""

import json

import numpy as np
import pytest

from launch import checkpoint
from metrics import evallog
from tests.conftest import kill_after_checkpoint, run_train, scalars, start_train, train_many

ROTATIONS = "reach-e@0,reach-e@120,reach-e@-120,reach-e@60"  # four stages: only the action's mapping changes
COMMON = ["--suite", "pointmass", "--sequence", ROTATIONS, "--steps-per-task", 600, "--backend", "single",
          "--seed", 0, "--set", "run.threads=1", "--set", "sac.head=single", "--set", "sac.task_input=false",
          "--set", "run.log_every=300", "--set", "eval.goals=2", "--set", "eval.every=600"]
MEASURES = ("dormant", "dormant_0.1", "srank", "weight_norm", "grad_norm", "update_norm")


@pytest.mark.integration
def test_the_diagnostics_show_fine_tuning_grow_its_weights_and_a_reset_hold_them(tmp_path):
    """The learning-speed fall the issue asks about does not show at a budget a test affords (BENCHMARKS.md,
    "Plasticity": not at 20 x 1,000 steps either), so the test checks the diagnostics instead: every measure
    of both networks at every log point, in plasticity.jsonl and TensorBoard, and the weight norms, which
    fine-tuning grows over four rotations while a full reset at each stage start keeps them at their start."""
    results = train_many({name: [*COMMON, *flags, "--run-dir", tmp_path / name]
                          for name, flags in {"finetune": [], "reset": ["--set", "plasticity.reset=99"]}.items()})
    for name, result in results.items():
        assert result.returncode == 0, (name, result.stderr[-2000:])
    rows = {name: evallog.read(tmp_path / name / "plasticity.jsonl") for name in results}
    assert [r["step"] for r in rows["finetune"]] == list(range(600, 2401, 300))
    for row in rows["finetune"]:  # each stage's first 300 steps are its random warm-up: no update, no norms
        updated = row["step"] % 600 == 0
        for net in ("actor", "critic"):
            assert all(f"{net}/{m}" in row for m in MEASURES[:4]), row
            assert all((f"{net}/{m}" in row) == updated for m in ("grad_norm", "update_norm")), row
        assert 0 <= row["actor/dormant"] <= row["actor/dormant_0.1"] <= 1 and np.isfinite(row["actor/entropy"])
    tb = dict(scalars(tmp_path / "finetune" / "tb", "plasticity/critic/weight_norm"))
    assert tb[2400] == pytest.approx(rows["finetune"][-1]["critic/weight_norm"], rel=1e-6)
    for net in ("actor", "critic"):
        grown = rows["finetune"][-1][f"{net}/weight_norm"] / rows["finetune"][0][f"{net}/weight_norm"]
        held = rows["reset"][-1][f"{net}/weight_norm"] / rows["reset"][0][f"{net}/weight_norm"]
        assert grown > held + 0.05 and abs(held - 1) < 0.05, (net, grown, held)


@pytest.mark.integration
@pytest.mark.multiproc
def test_a_run_with_every_remedy_resumes_with_their_state(tmp_path):
    """Every remedy at once (ReDo every 50 updates, CBP, shrink and perturb, L2 Init, Parseval, a reset of
    the last layer), SIGKILL after the checkpoint at 1,200 (a stage start), resume: the checkpoint holds
    their state (CBP's ages, the fresh draws made), the finished run logs each step once, and what does
    not depend on the data ends as in the uninterrupted run: CBP's replacements (its ages and its
    rounding draws) and the fresh draws made (stage starts and ReDo's recyclings). (The weights do not:
    a resume restarts the envs' episodes.)"""
    run, uninterrupted = tmp_path / "run", tmp_path / "uninterrupted"
    remedies = ["--set", "plasticity.redo=true", "--set", "plasticity.redo_every=50", "--set", "plasticity.cbp=0.01",
                "--set", "plasticity.shrink_perturb=true", "--set", "plasticity.l2_init=1e-3",
                "--set", "plasticity.parseval=1e-4", "--set", "plasticity.reset=1",
                "--set", "run.checkpoint_every=1200", "--set", "replay.save_in_checkpoint=true"]
    three = [*COMMON[:3], ",".join(ROTATIONS.split(",")[:3]), *COMMON[4:]]  # three stages: 1,800 steps
    proc = start_train(*three, *remedies, "--run-dir", run)
    kill_after_checkpoint(proc, run, 1200)
    whole = run_train(*three, *remedies, "--run-dir", uninterrupted)
    assert whole.returncode == 0, whole.stderr[-2000:]
    saved = checkpoint.load_latest(run / "checkpoints")["remedies"]
    ages = saved["remedies"][-1]["state"]["actor"][0]["age"]  # CBP, the last remedy: its actor's first layer
    assert saved["draws"] >= 1 and int(ages.max()) > 0
    finished = run_train("--resume", run)
    assert finished.returncode == 0, finished.stderr[-2000:]
    rows = evallog.read(run / "plasticity.jsonl")
    assert [r["step"] for r in rows] == list(range(600, 1801, 300))  # the killed run's rows after 1,200 dropped
    before = next(r for r in rows if r["step"] == 1200)
    assert rows[-1]["redo/recycled"] >= before["redo/recycled"] and rows[-1]["cbp/replaced"] > before["cbp/replaced"]
    final = checkpoint.load_latest(run / "checkpoints")["remedies"]
    assert final["draws"] > saved["draws"]  # the later stage starts drew on from the saved count
    assert final["draws"] == checkpoint.load_latest(uninterrupted / "checkpoints")["remedies"]["draws"]
    assert rows[-1]["cbp/replaced"] == evallog.read(uninterrupted / "plasticity.jsonl")[-1]["cbp/replaced"]
    assert json.loads((run / "learners.json").read_text())["step"] == 1800
    assert np.isfinite([r["critic/weight_norm"] for r in rows]).all()
