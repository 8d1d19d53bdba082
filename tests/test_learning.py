"""Multi-task SAC learns the pointmass suite: mean eval success rises from ~0 to >= 0.8."""

import pytest

from metrics import evallog
from tests.conftest import scalars, train_in_process


@pytest.mark.integration
def test_pointmass_multitask_success_rises(tmp_path):
    run = tmp_path / "run"
    proc = train_in_process("--suite", "pointmass", "--backend", "single", "--steps", 6000, "--eval-every", 2000,
                     "--seed", 1, "--run-dir", run, "--set", "eval.goals=20")
    assert proc.returncode == 0, proc.stderr
    rows = evallog.read(run / "evals.jsonl")
    by_step = {}
    for row in rows:
        by_step.setdefault(row["step"], []).append(row["success"])
    assert sorted(by_step) == [0, 2000, 4000, 6000]
    assert all(len(v) == 4 for v in by_step.values())  # PM4: four tasks per evaluation
    first, last = sum(by_step[0]) / 4, sum(by_step[6000]) / 4
    assert first <= 0.2, f"untrained policy should rarely succeed, got {first}"
    assert last >= 0.8, f"success after 6000 steps: {last} (curve {by_step})"
    # The same curve reaches TensorBoard.
    assert [s for s, _ in scalars(run / "tb", "eval/success_mean")] == [0, 2000, 4000, 6000]
    assert "step 6,000/6,000" in proc.stdout and "env-steps/s" in proc.stdout and "ETA" in proc.stdout
