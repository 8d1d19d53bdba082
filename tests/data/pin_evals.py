"""The runs whose evaluations tests/data/pinned_evals.json pins (tests/test_architecture.py), per
kind of CPU: float32 matmul kernels differ between CPUs (AVX2 and AVX-512 builds of the same
sums), so the bit-for-bit numbers do too. To pin a new CPU, on the code *before* a change:

    python tests/data/pin_evals.py OUT_DIR    # prints {cpu_key: {job: evaluations}}; merge it in
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
                  "--set", "eval.goals=5", "--set", "run.threads=1", "--device", "cpu"],
    "continual": ["--suite", "pointmass", "--sequence", "PM2", "--steps-per-task", 600, "--method", "ewc",
                  "--backend", "single", "--seed", 0, "--set", "eval.goals=5", "--set", "run.threads=1",
                  "--device", "cpu"],
}


def cpu_key() -> str:
    """The CPU vendor and the kernels torch dispatches to, e.g. GenuineIntel-AVX512."""
    import torch
    vendor = next((line.split(":")[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("vendor_id")), "unknown") if Path("/proc/cpuinfo").exists() else "unknown"
    return f"{vendor}-{torch.backends.cpu.get_cpu_capability()}"


def matches_pinned(got: list, pinned: dict, job: str) -> bool:
    """Bit for bit on a CPU that has pinned numbers; on another CPU the same steps, tasks and
    successes, and returns within 1% (this CPU's sums differ in their last bits, and EWC's
    importances amplify that to ~0.1% by the end of the continual job)."""
    if cpu_key() in pinned:
        return got == pinned[cpu_key()][job]
    reference = next(iter(pinned.values()))[job]
    return len(got) == len(reference) and all(
        g[:3] == r[:3] and abs(g[3] - r[3]) <= 0.01 * max(abs(r[3]), 1.0) for g, r in zip(got, reference))


def evaluations(run_dir) -> list:
    return [[r["step"], r["task"], r["success"], r["return"]] for r in evallog.read(Path(run_dir) / "evals.jsonl")]


if __name__ == "__main__":
    from launch.train import main
    out = {}
    for name, args in JOBS.items():
        with contextlib.redirect_stdout(io.StringIO()):
            assert main([*map(str, args), "--run-dir", f"{sys.argv[1]}/{name}"]) == 0
        out[name] = evaluations(f"{sys.argv[1]}/{name}")
    print(json.dumps({cpu_key(): out}))
