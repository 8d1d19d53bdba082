"""Continual-learning method table: every method on one sequence, several seeds, with the
single-task reference runs that forward transfer needs; Continual World's metrics with 90%
bootstrap CIs over seeds (metrics/continual.py).

    python benchmarks/continual_methods.py --suite pointmass --sequence PM2 --steps-per-task 1500
    python benchmarks/continual_methods.py --suite metaworld \
        --sequence faucet-close-v3,handle-press-side-v3,window-close-v3 --steps-per-task 20000 \
        --methods none ewc packnet replay bc --workers 15 --set sac.hidden_sizes=[256,256]

Runs go to --out (one folder per method and seed, references under refs/); finished runs are
reused, so an interrupted benchmark continues. --summarize-only tabulates what is there.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from continual.strategies import METHODS  # noqa: E402
from metrics import continual  # noqa: E402
from metrics.runs import read_run  # noqa: E402


def method_flags(method: str, suite: str) -> list[str]:
    """hnet needs generated weights; on the small pointmass nets hypernetworks generate the whole
    policy (trunk and head: von Oswald's setting), on Meta-World only the heads."""
    if method != "hnet":
        return ["--method", method]
    trunk = "hyper" if suite == "pointmass" else "mlp"
    return ["--method", "hnet", "--set", "sac.head=hyper", "--set", f"sac.trunk={trunk}"]


def train(args_list: list[str], log: Path) -> int:
    with open(log, "w") as f:
        return subprocess.run([sys.executable, str(ROOT / "launch" / "train.py"), *args_list],
                              stdout=f, stderr=subprocess.STDOUT).returncode


def finished(run_dir: Path) -> bool:
    return (run_dir / "learners.json").exists()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", default="pointmass")
    p.add_argument("--sequence", default="PM2")
    p.add_argument("--steps-per-task", type=int, default=1500)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--workers", type=int, default=2, help="runs trained at once (one core each)")
    p.add_argument("--set", action="append", default=[], help="config override for every run")
    p.add_argument("--out", default="runs/bench-continual")
    p.add_argument("--last-k", type=int, default=5, help="evaluations averaged at a window's end (CW: 5)")
    p.add_argument("--summarize-only", action="store_true")
    p.add_argument("--no-references", action="store_true",
                   help="skip the single-task reference runs (forward transfer then reads only what is there)")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    common = ["--suite", args.suite, "--sequence", args.sequence, "--steps-per-task", str(args.steps_per_task),
              "--backend", "single", "--set", "run.threads=1"] + [x for s in args.set for x in ("--set", s)]

    jobs = []
    for seed in args.seeds:
        for method in args.methods:
            run_dir = out / f"{method}-seed{seed}"
            if not finished(run_dir):
                flags = method_flags(method, args.suite) + ["--seed", str(seed), "--run-dir", str(run_dir)]
                jobs.append((common + flags,
                             out / f"{method}-seed{seed}.log"))
        ref_dir = out / "refs" / f"seed{seed}"
        if args.no_references:
            continue
        if not all(finished(d) for d in ref_dir.glob("*")) or not ref_dir.exists():
            jobs.append((common + ["--mode", "single-task", "--seed", str(seed), "--run-dir", str(ref_dir)],
                         out / f"refs-seed{seed}.log"))
    if not args.summarize_only and jobs:
        print(f"training {len(jobs)} jobs, {args.workers} at a time", flush=True)
        with ThreadPoolExecutor(args.workers) as pool:
            codes = list(pool.map(lambda job: train(*job), jobs))
        for (_, log), code in zip(jobs, codes):
            if code:
                print(f"failed ({code}): see {log}", flush=True)

    refs = [read_run(d) for d in sorted((out / "refs").glob("seed*/*")) if finished(d)]
    rows, summary = [], {}
    for method in args.methods:
        runs = [read_run(out / f"{method}-seed{s}") for s in args.seeds if finished(out / f"{method}-seed{s}")]
        if not runs:
            continue
        summary[method] = continual.summarize(runs, refs or None, last_k=args.last_k)
        rows.append((method, len(runs), summary[method]))
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")

    def cell(entry):
        if entry is None or entry["mean"] is None:
            return "n/a"
        return f"{entry['mean']:.2f} [{entry['lower']:.2f}, {entry['upper']:.2f}]"

    print(f"\n{args.suite} sequence {args.sequence}, {args.steps_per_task:,} steps per task; "
          f"mean over seeds [90% bootstrap CI]; forward transfer vs {len(refs)} single-task runs")
    print("| method | seeds | average performance | forgetting | forward transfer |")
    print("|---|---|---|---|---|")
    for method, n, s in rows:
        print(f"| {method} | {n} | {cell(s['performance'])} | {cell(s['forgetting'])} | "
              f"{cell(s.get('forward_transfer'))} |")


if __name__ == "__main__":
    main()
