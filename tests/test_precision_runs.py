"""Learning under sac.precision=bf16 (agents/sac/precision.py): a multi-task pointmass run learns
as the fp32 run does (tests/test_learning.py: success >= 0.8 after 6,000 steps), and so do
continual PM2 runs with EWC (its importances and penalty) and with PackNet (its masks, pruning
and retraining): every task solved at the end, nothing forgotten. The run records the precision
it trained in (config.yaml's launch section) and the start line says it."""

import pytest
import yaml

from metrics import evallog
from tests.conftest import train_many

COMMON = ["--backend", "single", "--seed", 1, "--set", "run.threads=1", "--set", "sac.precision=bf16"]


def _final(run_dir) -> dict[str, float]:
    rows = evallog.read(run_dir / "evals.jsonl")
    last = max(row["step"] for row in rows)
    return {row["task"]: row["success"] for row in rows if row["step"] == last}


@pytest.mark.integration
@pytest.mark.multiproc
def test_bf16_runs_learn_multitask_and_continual(tmp_path):
    jobs = {"pm4": ["--suite", "pointmass", "--steps", 6000, "--eval-every", 2000, "--set", "eval.goals=20"],
            **{m: ["--suite", "pointmass", "--sequence", "PM2", "--method", m] for m in ("ewc", "packnet")}}
    results = train_many({name: [*args, *COMMON, "--run-dir", tmp_path / name] for name, args in jobs.items()})
    for name, result in results.items():
        assert result.returncode == 0, f"{name}: {result.stderr[-2000:]}"
        assert " in bf16, backend single" in result.stdout, name
        launch = yaml.safe_load((tmp_path / name / "config.yaml").read_text())["launch"]
        assert launch["precision"] == "bf16", name
    pm4 = _final(tmp_path / "pm4")
    assert len(pm4) == 4 and sum(pm4.values()) / 4 >= 0.8, pm4
    for method in ("ewc", "packnet"):
        final = _final(tmp_path / method)
        assert set(final) == {"reach-e", "reach-w"} and min(final.values()) >= 0.8, (method, final)
