"""Continual learning without task boundaries (continual.boundaries=hidden), side by side with the
task-aware references, on the same seeds and budgets.

    python benchmarks/task_free.py pointmass [--sequence PM2] [--steps-per-task 6000] [--seeds 0 1 2 3 4]
                                    [--memory 1000]
                                    # the target visible (env.target_visible): every method, abrupt and
                                    # blended switches (hidden), task-aware EWC and PackNet (given)
    python benchmarks/task_free.py task-hidden --steps-per-task 20000 [--seeds 0 1 2 3 4] [--train 3rl-change]
                                    # the target hidden: 3rl, without and with a change detector
    python benchmarks/task_free.py metaworld [--sequence A,B] [--steps-per-task 10000] [--seeds 0 1 2]
                                    # the pointmass rows on a short Meta-World sequence, at a CPU budget

Rows: the task-aware references (EWC and PackNet told every boundary, with their per-task heads and
task one-hot, the continual defaults), then with hidden boundaries: fine-tuning (a FIFO replay of
replay.capacity_per_task: 50,000 rows, the whole stream), reservoir, mir, clear, tfmas, 3rl, and EWC
with each detector; on pointmass also fine-tuning, reservoir and MIR with a memory smaller than the
stream (--memory); the hidden rows abrupt and with blended switches (continual.blend_steps, --blend).
Columns: Continual World's average performance, forgetting and forward transfer (against single-task
runs of the fine-tuning configuration), anytime average performance, and the detection delay
(env steps after a switch; false alarms and missed switches per run) for runs with a detector;
mean over seeds [90% bootstrap CI] (metrics/continual.py, metrics/task_free.py). Runs stay under
--out, so the table re-prints without training.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import table, train_missing  # noqa: E402

HIDDEN = ["--set", "continual.boundaries=hidden"]
REFERENCES = {"ewc (given)": ["--method", "ewc"], "packnet (given)": ["--method", "packnet"]}
MW_SEQUENCE = "window-close-v3,handle-press-side-v3"  # CW tasks SAC starts on soonest (single-task probes)
TASK_FREE = {  # hidden boundaries
    "finetune": [], "reservoir": ["--method", "reservoir"], "mir": ["--method", "mir"],
    "clear": ["--method", "clear"], "tfmas": ["--method", "tfmas"], "3rl": ["--method", "3rl"],
    "ewc + plateau": ["--method", "ewc", "--set", "continual.detector=plateau"],
    "ewc + change": ["--method", "ewc", "--set", "continual.detector=change"],
}


def slug(name: str) -> str:
    return name.replace(" + ", "-").replace(" (given)", "-given").replace(", ", "-").replace(" ", "-")


def cell(entry, digits: int = 2) -> str:
    if entry is None or entry.get("mean") is None:
        return "n/a"
    return f"{entry['mean']:.{digits}f} [{entry['lower']:.{digits}f}, {entry['upper']:.{digits}f}]"


def summarize(out: Path, variants: dict[str, str], seeds: list[int], refs: str, title: str) -> None:
    """variants: row label -> run name prefix under out."""
    from metrics import continual
    from metrics.runs import read_run
    from metrics.summary import ReportSettings, task_free_metrics

    references = [read_run(d) for d in sorted(out.glob(f"{refs}-seed*/*")) if (d / "learners.json").exists()]
    settings = ReportSettings(last_k=1)
    rows = []
    for label, prefix in variants.items():
        runs = [read_run(d) for s in seeds if ((d := out / f"{prefix}-seed{s}") / "learners.json").exists()]
        if not runs:
            continue
        cw = continual.summarize(runs, references or None, last_k=1)
        free = task_free_metrics(runs, settings)
        detection = free.get("detection")
        rows.append([label, len(runs), cell(cw["performance"]), cell(cw["forgetting"]),
                     cell(cw.get("forward_transfer")), cell(free["anytime_performance"]),
                     "n/a" if detection is None else
                     f"{cell(detection['delay'], 0)}; {detection['false_alarms']['mean']:.1f} false, "
                     f"{detection['missed']['mean']:.1f} missed"])
    print(title)
    print(table(["method", "seeds", "average performance", "forgetting", "forward transfer", "anytime performance",
                 "detection delay (steps); per run"], rows))


def method_grid(common: list[str], seeds: list[int], blend: int, memory: int = 0) -> tuple[dict, dict]:
    """Every row's runs ({run name: train.py arguments}) and the rows ({label: run name prefix}), with
    the single-task references (refs-seedN: a folder of single-task runs) forward transfer is read against.
    memory > 0 adds fine-tuning, reservoir and MIR with a memory of that many rows, smaller than the stream."""
    rows = dict(TASK_FREE)
    if memory:
        rows.update({f"{m}, memory {memory}": [*rows[m], "--set", f"replay.capacity_per_task={memory}"]
                     for m in ("finetune", "reservoir", "mir")})
    runs, variants = {}, {}
    for seed in seeds:
        s = ["--seed", str(seed)]
        for label, flags in REFERENCES.items():
            runs[f"{slug(label)}-seed{seed}"] = [*common, *flags, *s]
            variants[label] = slug(label)
        for label, flags in rows.items():
            runs[f"{slug(label)}-seed{seed}"] = [*common, *HIDDEN, *flags, *s]
            variants[label] = slug(label)
            if blend:
                runs[f"{slug(label)}-blend-seed{seed}"] = [*common, *HIDDEN, *flags, "--set",
                                                           f"continual.blend_steps={blend}", *s]
                variants[f"{label}, blended"] = f"{slug(label)}-blend"
        runs[f"refs-seed{seed}"] = [*common, "--set", "sac.task_input=false", "--set", "sac.head=single",
                                    "--mode", "single-task", *s]
    return runs, variants


def train_grid(out: Path, runs: dict, workers: int) -> None:
    """train_missing, with a seed's single-task references (a folder of finished runs) skipped once done."""
    runs = {name: a for name, a in runs.items()
            if not (name.startswith("refs-") and (out / name).is_dir() and any((out / name).iterdir())
                    and all((d / "learners.json").exists() for d in (out / name).iterdir() if d.is_dir()))}
    train_missing(out, runs, workers)


def grid(args, suite: list[str], memory: int, setting: str) -> None:
    """Train and print the method grid on `suite` (train.py's suite flags and overrides)."""
    out = Path(args.out)
    common = [*suite, "--sequence", args.sequence, "--steps-per-task", str(args.steps_per_task),
              "--backend", "single", "--set", "run.threads=1"]
    runs, variants = method_grid(common, args.seeds, args.blend, memory)
    train_grid(out, runs, args.workers)
    summarize(out, variants, args.seeds, "refs",
              f"{setting}, {args.steps_per_task:,} env steps per task; blended: {args.blend:,} steps per switch; "
              "success = the last evaluation of a window (10 goals); mean over seeds [90% bootstrap CI]")


def pointmass(args) -> None:
    grid(args, ["--suite", "pointmass", "--set", "env.target_visible=true"], args.memory,
         f"pointmass {args.sequence}, target visible")


def metaworld(args) -> None:
    """A short Meta-World sequence at a CPU budget: 2x128 networks (CW's 4x256 does not fit 2 cores),
    1,000 random steps at the start, evaluation every half stage on 10 goals."""
    suite = ["--suite", "metaworld", "--set", "sac.hidden_sizes=[128,128]", "--set", "sac.warmup_steps_per_task=1000",
             "--set", "eval.goals=10", "--eval-every", str(args.steps_per_task // 2)]
    grid(args, suite, 0, f"Meta-World {args.sequence}, 2x128")


def task_hidden(args) -> None:
    out = Path(args.out)
    common = ["--suite", "pointmass", "--sequence", args.sequence, "--steps-per-task", str(args.steps_per_task),
              "--backend", "single", "--set", "run.threads=1", "--set", "eval.every=2000", *HIDDEN, "--method", "3rl"]
    variants = {"3rl": "3rl", "3rl + change detector": "3rl-change"}
    detector = {"3rl": [], "3rl-change": ["--set", "continual.detector=change"]}
    train_missing(out, {f"{prefix}-seed{seed}": [*common, *detector[prefix], "--seed", str(seed)]
                        for prefix in variants.values() if prefix in args.train for seed in args.seeds}, args.workers)
    summarize(out, variants, args.seeds, "refs",
              f"pointmass {args.sequence}, target hidden (the same states need opposite actions), hidden boundaries, "
              f"{args.steps_per_task:,} env steps per task; success = the last evaluation of a window")


DEFAULTS = {
    "pointmass": {"sequence": "PM2", "steps_per_task": 6000, "blend": lambda steps: 2000},
    "task-hidden": {"sequence": "PM2", "steps_per_task": 6000, "blend": lambda steps: 0},
    "metaworld": {"sequence": MW_SEQUENCE, "steps_per_task": 10000, "blend": lambda steps: steps // 2},
}


def main() -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=list(DEFAULTS))
    p.add_argument("--sequence", help="default: PM2, or the Meta-World mode's two tasks")
    p.add_argument("--steps-per-task", type=int, help="default: pointmass 6,000, metaworld 10,000")
    p.add_argument("--blend", type=int, help="blended rows' continual.blend_steps (0: none; default: 2,000 "
                   "pointmass, half a stage metaworld)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--memory", type=int, default=1000, help="pointmass: the rows with a memory smaller than the "
                   "stream (replay.capacity_per_task; 0: none; the other rows keep 50,000, the whole stream)")
    p.add_argument("--train", nargs="+", default=["3rl", "3rl-change"], choices=["3rl", "3rl-change"],
                   help="task-hidden: the rows to train (the table shows every row's finished runs)")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    defaults = DEFAULTS[args.mode]
    args.sequence = args.sequence or defaults["sequence"]
    args.steps_per_task = args.steps_per_task or defaults["steps_per_task"]
    args.blend = defaults["blend"](args.steps_per_task) if args.blend is None else args.blend
    args.out = args.out or f"runs/bench-task-free-{args.mode}"
    {"pointmass": pointmass, "task-hidden": task_hidden, "metaworld": metaworld}[args.mode](args)


if __name__ == "__main__":
    main()
