"""The runs whose evaluations tests/data/pinned_evals.json pins (tests/test_architecture.py).

    python tests/data/pin_evals.py OUT_DIR > tests/data/pinned_evals.json
"""

import contextlib
import io
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from metrics import evallog  # noqa: E402

JOBS = {
    "multitask": ["--suite", "pointmass", "--backend", "single", "--steps", 2000, "--eval-every", 1000, "--seed", 0,
                  "--set", "eval.goals=5", "--set", "run.threads=1"],
    "continual": ["--suite", "pointmass", "--sequence", "PM2", "--steps-per-task", 600, "--method", "ewc",
                  "--backend", "single", "--seed", 0, "--set", "eval.goals=5", "--set", "run.threads=1"],
}


def evaluations(run_dir) -> list:
    return [[r["step"], r["task"], r["success"], r["return"]] for r in evallog.read(Path(run_dir) / "evals.jsonl")]


if __name__ == "__main__":
    from launch.train import main
    out = {}
    for name, args in JOBS.items():
        with contextlib.redirect_stdout(io.StringIO()):
            assert main([*map(str, args), "--run-dir", f"{sys.argv[1]}/{name}"]) == 0
        out[name] = evaluations(f"{sys.argv[1]}/{name}")
    print(json.dumps(out))
