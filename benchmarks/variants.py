"""What the variant benchmarks share (benchmarks/representation.py, benchmarks/balancers.py):
a variant is a list of config overrides on top of the Meta-World defaults.

speed: each variant in a fresh process (so that its peak resident memory is its own) builds the
learner for `num_tasks` tasks (3x400 networks, multi-head, batch num_tasks x 128 by default) with
the variant switched on, fills replay with random transitions, and times `updates` updates after
`warmup` warm-up updates; variants are interleaved over `repeats` rounds, and the medians of
the rates and of each round's ratio to the base variant reported.

quality: trains every variant on the same tasks, seeds and budget (train.py, one process per
run, `workers` at a time) and tabulates the final success: mean and IQM over seeds x tasks with
rliable-style stratified bootstrap 95% CIs (metrics/multitask.py).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import median, table  # noqa: E402


def one_speed(overrides: list[str], updates: int, num_tasks: int, warmup: int) -> dict:
    """In this (fresh) process: updates/s and peak memory of the learner with `overrides`."""
    import numpy as np
    import torch

    from agents.auxiliary import make_auxiliary_tasks
    from agents.replay import MultiTaskReplay
    from agents.sac import SACLearner
    from launch.config import build_config

    torch.set_num_threads(1)
    cfg = build_config("metaworld", overrides=overrides)
    learner = SACLearner(cfg.sac, 39, 4, num_tasks, torch.device("cpu"), balance=cfg.balance)
    hooks = make_auxiliary_tasks(cfg.aux, learner, 39, 4, seed=0)
    learner.add_hook_parameters(hooks)
    n = 2000 * num_tasks
    replay = MultiTaskReplay(num_tasks, 2000, 39, 4, normalize_rewards=cfg.replay.normalize_rewards)
    rng = np.random.default_rng(0)
    replay.add(np.repeat(np.arange(num_tasks), n // num_tasks), rng.standard_normal((n, 39), np.float32),
               rng.uniform(-1, 1, (n, 4)).astype(np.float32), rng.random(n, np.float32),
               rng.standard_normal((n, 39), np.float32), np.zeros(n, np.float32))
    for _ in range(warmup):
        learner.update(replay.sample(cfg.sac.batch_size_per_task, rng), hooks)
    start = time.perf_counter()
    for _ in range(updates):
        learner.update(replay.sample(cfg.sac.batch_size_per_task, rng), hooks)
    rate = updates / (time.perf_counter() - start)
    params = sum(p.numel() for p in [*learner.actor.own_parameters(), *learner.critic.parameters()]) \
        + sum(p.numel() for h in hooks for p in h.parameters(h.rep.network))
    return {"updates_per_s": rate, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "params": params}


def speed(variants: dict[str, list[str]], base: str, updates: int, repeats: int, num_tasks: int = 10,
          warmup: int = 5) -> tuple[list[str], list[list]]:
    """Rows [variant, params, updates/s, vs base, peak RSS MB, vs base], medians over `repeats`
    interleaved rounds of one fresh process per variant (one thread each)."""
    results = {name: [] for name in variants}
    for _ in range(repeats):
        for name, overrides in variants.items():
            proc = subprocess.run([sys.executable, __file__, json.dumps(overrides), str(updates), str(num_tasks),
                                   str(warmup)], capture_output=True, text=True,
                                  env={**os.environ, "OMP_NUM_THREADS": "1"})
            if proc.returncode:
                raise SystemExit(proc.stderr[-2000:])
            results[name].append(json.loads(proc.stdout.splitlines()[-1]))
    rows = []
    for name, runs in results.items():
        rates = [r["updates_per_s"] for r in runs]
        mems = [r["peak_rss_mb"] for r in runs]
        rate_ratio = median([r / b["updates_per_s"] for r, b in zip(rates, results[base])])
        mem_ratio = median([m / b["peak_rss_mb"] for m, b in zip(mems, results[base])])
        rows.append([name, f"{runs[0]['params']:,}", f"{median(rates):.2f}", f"{rate_ratio:.2f}x",
                     median(mems), f"{mem_ratio:.2f}x"])
    return ["variant", "trained params", "updates/s", f"vs {base}", "peak RSS MB", f"vs {base}"], rows


def quality(variants: dict[str, list[str]], args) -> None:
    """Train every (variant, seed) not yet finished under args.out, then print the table."""
    from envs.registry import sequence_presets
    from metrics import multitask
    from metrics.runs import read_run

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tasks = sequence_presets("metaworld").get(args.tasks, args.tasks.split(","))  # a preset (MT10) or names
    steps = args.steps_per_task * len(tasks)
    base = ["--suite", "metaworld", "--tasks", args.tasks, "--steps", str(steps),
            "--backend", "single", "--eval-every", str(args.eval_every), "--set", "run.threads=1",
            "--set", f"eval.goals={args.goals}", "--set", f"sac.hidden_sizes={args.hidden}"]
    base += [x for s in args.set for x in ("--set", s)]
    jobs = []
    for seed in args.seeds:
        for name in args.variants:
            run_dir = out / f"{name}-seed{seed}"
            if not (run_dir / "learners.json").exists():
                flags = [x for s in variants[name] for x in ("--set", s)]
                jobs.append(([*base, *flags, "--seed", str(seed), "--run-dir", str(run_dir)],
                             out / f"{name}-seed{seed}.log"))

    def train(job):
        argv, log = job
        if Path(argv[-1]).exists():
            shutil.rmtree(argv[-1])  # an unfinished run from an interrupted benchmark: start it again
        with open(log, "w") as f:
            return subprocess.run([sys.executable, str(ROOT / "launch" / "train.py"), *argv], stdout=f,
                                  stderr=subprocess.STDOUT).returncode
    if jobs:
        print(f"training {len(jobs)} runs, {args.workers} at a time", flush=True)
        with ThreadPoolExecutor(args.workers) as pool:
            for (_, log), code in zip(jobs, pool.map(train, jobs)):
                if code:
                    print(f"failed ({code}): see {log}", flush=True)
    rows = []
    for name in args.variants:
        dirs = [out / f"{name}-seed{s}" for s in args.seeds]
        runs = [read_run(d) for d in dirs if (d / "learners.json").exists()]
        if not runs:
            continue
        scores = multitask.score_matrix(runs, "success", last_k=1)
        mean_ci = multitask.stratified_bootstrap_ci(scores, multitask.mean, reps=args.reps)
        iqm_ci = multitask.stratified_bootstrap_ci(scores, multitask.iqm, reps=args.reps)
        per_task = " ".join(f"{v:.2f}" for v in multitask.task_means(scores))
        rows.append([name, len(runs), f"{multitask.mean(scores):.2f} [{mean_ci[0]:.2f}, {mean_ci[1]:.2f}]",
                     f"{multitask.iqm(scores):.2f} [{iqm_ci[0]:.2f}, {iqm_ci[1]:.2f}]", per_task])
    print(f"Meta-World {args.tasks}, {args.steps_per_task:,} env steps per task, {args.hidden} networks, "
          f"final success on {args.goals} fixed goals per task (mean action); 95% stratified bootstrap CIs"
          + (f"; every run with {' '.join(args.set)}" if args.set else ""))
    print(table(["variant", "seeds", "mean success [95% CI]", "IQM [95% CI]", "per task"], rows))


def add_quality_flags(p, variants: dict, default_variants: list[str], out: str) -> None:
    p.add_argument("--tasks", default="reach-v3,drawer-close-v3", help="task names, or a preset: MT10")
    p.add_argument("--steps-per-task", type=int, default=15_000)
    p.add_argument("--hidden", default="[256,256]")
    p.add_argument("--eval-every", type=int, default=30_000)
    p.add_argument("--goals", type=int, default=20)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", default=default_variants, choices=list(variants))
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--reps", type=int, default=10_000)
    p.add_argument("--set", action="append", default=[], help="config override for every quality run")
    p.add_argument("--out", default=out)


if __name__ == "__main__":  # one speed measurement, in a fresh process (see speed)
    print(json.dumps(one_speed(json.loads(sys.argv[1]), *map(int, sys.argv[2:5]))))
