"""Recurrent SAC (`sac.memory`, agents/recurrent.py, agents/context.py) against the MLP, side by side.

    python benchmarks/memory.py pm4 [--steps 30000] [--seeds 0 1 2 3 4] [--variants mlp gru lstm context]
                                    # final success on task-hidden PM4 (no task input, one head)
    python benchmarks/memory.py continual [--sequence PM3] [--steps-per-task 1500] [--seeds 0 1 2 3 4]
                                    # a continual sequence of task-hidden pointmass tasks, GRU policies:
                                    # fine-tuning, EWC, hnet with mlp / chunked / rnn (and rnn + growth)
    python benchmarks/memory.py metaworld [--seeds 0 1 2] [--settings reach-v3 mt3]
                                    # goal-hidden Meta-World at a CPU budget: MLP vs GRU (and the MLP with the
                                    # goal visible, for reference)
    python benchmarks/memory.py cost [--repeats 3]
                                    # learner updates/s, batch sampling time, replay bytes per transition

pm4: pointmass PM4 with the task hidden (sac.task_input=false, sac.head=single): an agent tells
reach-e from reach-w only by the rewards it has seen. Every variant trains with the same seeds and
budget (--backend single, one thread each, --workers at a time); run directories stay under --out,
so the table re-prints without training. Final success of every task, mean over seeds x tasks
[95% stratified bootstrap CI].

continual: pointmass tasks one after another with the task hidden from the observation (no task
input), every policy a GRU (sac.memory_hidden 64, 16 windows a batch): fine-tuning and EWC with one
shared head; the hypernetwork regulariser (--method hnet) with the memory, trunk and head generated
by an mlp, chunked or rnn hypernetwork (those know the task through its generated weights, as in
Ehret et al.; the others must tell it from the rewards). Continual World's metrics (metrics/continual.py):
average performance, forgetting, forward transfer against single-task GRU runs of the fine-tuning
configuration; 90% bootstrap CIs over seeds.

metaworld: Meta-World with the goal hidden (env.goal_observable=false: the 3 goal coordinates read 0,
as Meta-World's ML benchmarks hide them), at a CPU budget: reach-v3 alone (20k env steps, one
head, no task input) and an MT10 subset of three tasks (reach-v3, window-open-v3,
button-press-topdown-v3; 10k env steps each, task one-hot and per-task heads, as MT10 runs). 256x256
networks, fp32, one update per env step of each task, 256 transitions per task in a batch for every
variant (the GRU: 8 windows of 32 steps, memory 128); the final evaluation over 50 goals per task.
MLP and GRU with the goal hidden, and the MLP with it visible (what the hidden goal costs).

cost: for each variant at the pointmass preset's width (64x64 networks; memory 128, 4 tasks x 16
windows; context GRU 30, 4 x 64 transitions; the MLP 4 x 64 transitions): learner updates/s (fresh
process, median of --repeats), the time to sample one batch as a fraction of an update, replay bytes
per stored transition against flat replay, and the process's peak resident memory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import median, table, train_missing  # noqa: E402

HIDDEN = ["--set", "sac.task_input=false", "--set", "sac.head=single"]
VARIANTS = {  # name: --set overrides on top of the task-hidden pointmass run
    "mlp": [],
    "gru": ["--set", "sac.memory=gru", "--set", "sac.batch_size_per_task=16"],
    "lstm": ["--set", "sac.memory=lstm", "--set", "sac.batch_size_per_task=16"],
    "context": ["--set", "sac.memory=gru", "--set", "sac.memory_context=15", "--set", "sac.memory_hidden=30"],
}


METAWORLD = {  # setting: train.py arguments shared by every variant
    "reach-v3": ["--suite", "metaworld", "--tasks", "reach-v3", "--steps", "20000", "--set", "sac.head=single",
                 "--set", "sac.task_input=false"],
    "mt3": ["--suite", "metaworld", "--tasks", "reach-v3,window-open-v3,button-press-topdown-v3",
            "--steps", "30000"],
}
METAWORLD_VARIANTS = {  # name: overrides (256 transitions per task in every batch)
    "mlp-goal-visible": ["--set", "sac.batch_size_per_task=256"],
    "mlp": ["--set", "env.goal_observable=false", "--set", "sac.batch_size_per_task=256"],
    "gru": ["--set", "env.goal_observable=false", "--set", "sac.memory=gru", "--set", "sac.batch_size_per_task=8",
            "--set", "sac.memory_sequence=32"],
}


def metaworld(args) -> None:
    from metrics import multitask
    from metrics.runs import read_run

    out = Path(args.out)
    common = ["--eval-every", "0", "--set", "eval.goals=50", "--set", "sac.hidden_sizes=[256,256]",
              "--set", "sac.precision=fp32", "--set", "sac.warmup_steps_per_task=1000",
              "--backend", "single", "--set", "run.threads=1"]
    train_missing(out, {f"{s}-{v}-seed{seed}": [*METAWORLD[s], *common, *METAWORLD_VARIANTS[v], "--seed", str(seed)]
                        for s in args.settings for v in METAWORLD_VARIANTS for seed in args.seeds}, args.workers)
    rows = []
    for setting in args.settings:
        for variant in METAWORLD_VARIANTS:
            dirs = [d for seed in args.seeds
                    if ((d := out / f"{setting}-{variant}-seed{seed}") / "learners.json").exists()]
            if not dirs:
                continue
            scores = multitask.score_matrix([read_run(d) for d in dirs], "success", last_k=1)
            low, high = multitask.stratified_bootstrap_ci(scores, multitask.mean, reps=args.reps)
            rates = [json.loads((d / "learners.json").read_text())["train_env_steps_per_s"] for d in dirs]
            rows.append([setting, variant, len(dirs), f"{multitask.mean(scores):.2f} [{low:.2f}, {high:.2f}]",
                         f"{median(rates):.0f}"])
    print("Meta-World, goal hidden unless the variant says visible; 256x256, fp32, 256 transitions per task a "
          "batch; final success over 50 goals per task, mean over seeds x tasks [95% stratified bootstrap CI]")
    print(table(["setting", "variant", "seeds", "final success", "env-steps/s (median)"], rows))


# cost only: the generated memories (sac.trunk=hyper, sac.head=hyper) of each hypernetwork kind
COST = {**VARIANTS, **{f"gru-hyper-{kind}": [*VARIANTS["gru"], "--set", "sac.trunk=hyper", "--set", "sac.head=hyper",
                                              "--set", f"sac.hypernet={kind}"] for kind in ("mlp", "chunked", "rnn")}}


def pm4(args) -> None:
    from metrics import multitask
    from metrics.runs import read_run

    out = Path(args.out)
    train_missing(out, {f"{v}-seed{seed}": [
        "--suite", "pointmass", "--tasks", "PM4", "--steps", str(args.steps), "--eval-every", str(args.steps // 4),
        "--set", "eval.goals=20", *HIDDEN, *VARIANTS[v], "--backend", "single", "--seed", str(seed),
        "--set", "run.threads=1"] for v in args.variants for seed in args.seeds}, args.workers)
    rows = []
    for variant in args.variants:
        runs = [read_run(d) for s in args.seeds if ((d := out / f"{variant}-seed{s}") / "learners.json").exists()]
        if not runs:
            continue
        scores = multitask.score_matrix(runs, "success", last_k=1)
        low, high = multitask.stratified_bootstrap_ci(scores, multitask.mean, reps=args.reps)
        rates = [json.loads((out / f"{variant}-seed{s}" / "learners.json").read_text())["train_env_steps_per_s"]
                 for s in args.seeds if (out / f"{variant}-seed{s}" / "learners.json").exists()]
        success = f"{multitask.mean(scores):.2f} [{low:.2f}, {high:.2f}]"
        rows.append([variant, len(runs), success, f"{median(rates):.0f}"])
    print(f"task-hidden PM4, {args.steps} env steps, final success (the last evaluation, 20 goals per task; "
          "mean policy), mean over seeds x tasks [95% stratified bootstrap CI]")
    print(table(["variant", "seeds", "final success", "env-steps/s (median)"], rows))


CONTINUAL = {  # name: flags on top of the task-hidden GRU policy
    "finetune": ["--method", "none", "--set", "sac.head=single"],
    "ewc": ["--method", "ewc", "--set", "sac.head=single"],
    **{f"hnet-{kind}": ["--method", "hnet", "--set", "sac.trunk=hyper", "--set", "sac.head=hyper",
                        "--set", f"sac.hypernet={kind}"] for kind in ("mlp", "chunked", "rnn")},
    "hnet-rnn-growth": ["--method", "hnet", "--set", "sac.trunk=hyper", "--set", "sac.head=hyper",
                        "--set", "sac.hypernet=rnn", "--set", "sac.hyper_growth=true"],
}


def continual_runs(args) -> None:
    from metrics import continual
    from metrics.runs import read_run

    out = Path(args.out)
    common = ["--suite", "pointmass", "--sequence", args.sequence, "--steps-per-task", str(args.steps_per_task),
              "--set", "sac.task_input=false", "--set", "sac.memory=gru", "--set", "sac.memory_hidden=64",
              "--set", "sac.batch_size_per_task=16", "--backend", "single", "--set", "run.threads=1"]
    runs = {f"{v}-seed{s}": [*common, *CONTINUAL[v], "--seed", str(s)] for v in args.methods for s in args.seeds}
    refs = {f"refs-seed{s}": [*common, *CONTINUAL["finetune"][2:], "--mode", "single-task", "--seed", str(s)]
            for s in args.seeds}
    refs = {name: a for name, a in refs.items()  # single-task runs: one finished folder per task
            if not ((out / name).exists() and all((d / "learners.json").exists() for d in (out / name).iterdir()
                                                  if d.is_dir()) and any((out / name).iterdir()))}
    train_missing(out, {**refs, **runs}, args.workers)
    references = [read_run(d) for d in sorted(out.glob("refs-seed*/*")) if (d / "learners.json").exists()]

    def cell(entry):
        return "n/a" if entry is None or entry["mean"] is None else \
            f"{entry['mean']:.2f} [{entry['lower']:.2f}, {entry['upper']:.2f}]"
    rows = []
    for v in args.methods:
        done = [read_run(out / f"{v}-seed{s}") for s in args.seeds if (out / f"{v}-seed{s}" / "learners.json").exists()]
        if done:
            summary = continual.summarize(done, references or None, last_k=args.last_k)
            rows.append([v, len(done), cell(summary["performance"]), cell(summary["forgetting"]),
                         cell(summary.get("forward_transfer"))])
    print(f"task-hidden pointmass {args.sequence}, GRU policies, {args.steps_per_task:,} steps per task; mean over "
          f"seeds [90% bootstrap CI]; forward transfer vs {len(references)} single-task GRU runs; success read "
          f"as the mean of the last {args.last_k} evaluations of a window")
    print(table(["variant", "seeds", "average performance", "forgetting", "forward transfer"], rows))


def one(variant: str) -> dict:
    """In this (fresh) process: one variant's updates/s, sampling time and replay bytes per row."""
    import numpy as np
    import torch

    from agents.models import make_replay
    from agents.replay import MultiTaskReplay
    from agents.sac import make_learner
    from launch.config import build_config

    torch.set_num_threads(1)
    sets = [s for s in HIDDEN + COST[variant] if s != "--set"]
    cfg = build_config("pointmass", overrides=sets)
    learner = make_learner(cfg.sac, 2, 2, 4, torch.device("cpu"))
    replay = make_replay(cfg.replay, cfg.sac, 4, 2, 2, torch.device("cpu"))
    rng, episodes = np.random.default_rng(0), 200  # 200 episodes of 30 steps per task
    n = 4 * episodes * 30
    task, step = np.repeat(np.arange(4), n // 4), np.tile(np.arange(30), n // 30)
    columns = (task, rng.uniform(-1, 1, (n, 2)).astype(np.float32), rng.uniform(-1, 1, (n, 2)).astype(np.float32),
               -rng.random(n, np.float32), rng.uniform(-1, 1, (n, 2)).astype(np.float32), np.zeros(n, np.float32))
    replay.add(*columns, stream=task, first=step == 0)
    flat = MultiTaskReplay(4, cfg.replay.capacity_per_task, 2, 2)
    flat.add(*columns)
    size = cfg.sac.batch_size_per_task
    for _ in range(5):
        learner.update(replay.sample(size, rng))
    start, updates = time.perf_counter(), 30
    for _ in range(updates):
        learner.update(replay.sample(size, rng))
    update_s = (time.perf_counter() - start) / updates
    start = time.perf_counter()
    for _ in range(50):
        replay.sample(size, rng)
    sample_s = (time.perf_counter() - start) / 50
    import resource
    return {"updates_per_s": 1 / update_s, "sample_fraction": sample_s / update_s,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "bytes_per_row": replay.nbytes() / replay.allocated_rows(0) / 4,
            "flat_bytes_per_row": flat.nbytes() / flat.allocated_rows(0) / 4}


def cost(args) -> None:
    rows = []
    for variant in COST:
        results = []
        for _ in range(args.repeats):
            proc = subprocess.run([sys.executable, __file__, "_one", variant], capture_output=True, text=True,
                                  env={**os.environ, "OMP_NUM_THREADS": "1"})
            if proc.returncode:
                raise SystemExit(proc.stderr[-3000:])
            results.append(json.loads(proc.stdout.splitlines()[-1]))
        r = results[0]
        rows.append([variant, f"{median([x['updates_per_s'] for x in results]):.1f}",
                     f"{median([x['sample_fraction'] for x in results]):.1%}",
                     f"{r['bytes_per_row']:.0f} ({r['bytes_per_row'] / r['flat_bytes_per_row']:.2f}x)",
                     f"{median([x['peak_rss_mb'] for x in results]):.0f}"])
    print(f"pointmass preset widths (64x64; memory 128, context GRU 30; gru-hyper-*: memory, trunk and head "
          f"generated by each hypernetwork kind), 4 tasks, 1 thread, median of {args.repeats} "
          "fresh processes")
    print(table(["variant", "updates/s", "sampling / update", "replay bytes per transition (vs flat)",
                 "peak RSS MB"], rows))


def main() -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=["pm4", "continual", "metaworld", "cost", "_one"])
    p.add_argument("--settings", nargs="+", default=list(METAWORLD), choices=list(METAWORLD))
    p.add_argument("variant", nargs="?")
    p.add_argument("--steps", type=int, default=30_000)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--reps", type=int, default=10_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="runs/bench-memory")
    p.add_argument("--sequence", default="PM3")
    p.add_argument("--last-k", type=int, default=1, help="evaluations averaged at a window's end (CW: 5; a "
                   "1,500-step stage evaluated every 300 steps has 5 in all)")
    p.add_argument("--steps-per-task", type=int, default=1500)
    p.add_argument("--methods", nargs="+", default=list(CONTINUAL), choices=list(CONTINUAL))
    args = p.parse_args()
    if args.mode == "_one":
        print(json.dumps(one(args.variant)))
    else:
        {"pm4": pm4, "continual": continual_runs, "metaworld": metaworld, "cost": cost}[args.mode](args)


if __name__ == "__main__":
    main()
