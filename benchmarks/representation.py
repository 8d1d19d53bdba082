"""Encoders and auxiliary tasks: their cost, and what they learn.

    python benchmarks/representation.py speed      # learner updates/s and peak memory vs the MLP
    python benchmarks/representation.py quality    # success on Meta-World tasks, >= 3 seeds, with CIs

speed: each variant in a fresh process (so that its peak resident memory is its own) builds the
MT10 default learner (3x400 networks, multi-head, batch 10 x 128) with the variant switched on,
fills replay with random transitions, and times `--updates` updates after 5 warm-up updates;
variants are interleaved over `--repeats` rounds and the medians reported, relative to the MLP.

quality: trains every variant on the same tasks, seeds and budget (train.py, one process per
run, `--workers` at a time) and tabulates the final success: mean and IQM over seeds x tasks
with rliable-style stratified bootstrap 95% CIs (metrics/multitask.py).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import median, table  # noqa: E402

VARIANTS = {  # name -> config overrides (on top of each benchmark's base)
    "mlp": [],
    "care": ["sac.trunk=care", "sac.task_input=false"],
    "moore": ["sac.trunk=moore", "sac.task_input=false"],
    "bronet": ["sac.trunk=bronet", "sac.task_input=false", "sac.task_embedding_dim=32"],
    "wide-bronet-critic": ["sac.trunk=bronet", "sac.task_input=false", "sac.task_embedding_dim=32",
                           "sac.critic_hidden_sizes=[512,512,512]"],
    "mlp+reward": ["aux.reward=1"],
    "mlp+dynamics": ["aux.dynamics=1"],
    "mlp+inverse": ["aux.inverse=1"],
    "mlp+pvn": ["aux.pvn=1"],
}


def _one_speed(overrides: list[str], updates: int) -> dict:
    """In this (fresh) process: updates/s of the MT10 default learner with `overrides`."""
    import numpy as np
    import torch

    from agents.auxiliary import make_auxiliary_tasks
    from agents.replay import MultiTaskReplay
    from agents.sac import SACLearner
    from launch.config import build_config

    torch.set_num_threads(1)
    cfg = build_config("metaworld", overrides=overrides)
    learner = SACLearner(cfg.sac, 39, 4, 10, torch.device("cpu"))
    hooks = make_auxiliary_tasks(cfg.aux, learner, 39, 4, seed=0)
    learner.add_hook_parameters(hooks)
    replay = MultiTaskReplay(10, 20_000, 39, 4)
    rng = np.random.default_rng(0)
    n = 20_000
    replay.add(np.repeat(np.arange(10), n // 10), rng.standard_normal((n, 39), np.float32),
               rng.uniform(-1, 1, (n, 4)).astype(np.float32), rng.random(n, np.float32),
               rng.standard_normal((n, 39), np.float32), np.zeros(n, np.float32))
    for _ in range(5):
        learner.update(replay.sample(cfg.sac.batch_size_per_task, rng), hooks)
    start = time.perf_counter()
    for _ in range(updates):
        learner.update(replay.sample(cfg.sac.batch_size_per_task, rng), hooks)
    rate = updates / (time.perf_counter() - start)
    params = sum(p.numel() for p in [*learner.actor.own_parameters(), *learner.critic.parameters()]) \
        + sum(p.numel() for h in hooks for p in h.parameters(h.rep.network))
    return {"updates_per_s": rate, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "params": params}


def speed(args) -> None:
    results = {name: [] for name in VARIANTS}
    for _ in range(args.repeats):
        for name, overrides in VARIANTS.items():
            proc = subprocess.run([sys.executable, __file__, "_one", json.dumps(overrides), str(args.updates)],
                                  capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            if proc.returncode:
                raise SystemExit(proc.stderr[-2000:])
            results[name].append(json.loads(proc.stdout.splitlines()[-1]))
    base_rate = median([r["updates_per_s"] for r in results["mlp"]])
    base_mem = median([r["peak_rss_mb"] for r in results["mlp"]])
    rows = []
    for name, runs in results.items():
        rate, mem = median([r["updates_per_s"] for r in runs]), median([r["peak_rss_mb"] for r in runs])
        rows.append([name, f"{runs[0]['params']:,}", rate, f"{rate / base_rate:.2f}x", mem, f"{mem / base_mem:.2f}x"])
    print(f"MT10 default learner (3x400, multi-head, batch 10 x 128), 1 thread, {args.updates} updates, "
          f"median of {args.repeats} fresh processes")
    print(table(["variant", "trained params", "updates/s", "vs mlp", "peak RSS MB", "vs mlp"], rows))


def quality(args) -> None:
    from metrics import multitask
    from metrics.runs import read_run

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    steps = args.steps_per_task * len(args.tasks.split(","))
    base = ["--suite", "metaworld", "--tasks", args.tasks, "--steps", str(steps),
            "--backend", "single", "--eval-every", str(args.eval_every), "--set", "run.threads=1",
            "--set", f"eval.goals={args.goals}", "--set", f"sac.hidden_sizes={args.hidden}"]
    base += [x for s in args.set for x in ("--set", s)]
    jobs = []
    for seed in args.seeds:
        for name in args.variants:
            run_dir = out / f"{name}-seed{seed}"
            if not (run_dir / "learners.json").exists():
                flags = [x for s in VARIANTS[name] for x in ("--set", s)]
                jobs.append(([*base, *flags, "--seed", str(seed), "--run-dir", str(run_dir)],
                             out / f"{name}-seed{seed}.log"))

    def train(job):
        argv, log = job
        if Path(argv[-1]).exists():
            import shutil
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
          f"final success on {args.goals} fixed goals per task (mean action); 95% stratified bootstrap CIs")
    print(table(["variant", "seeds", "mean success [95% CI]", "IQM [95% CI]", "per task"], rows))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_one":
        print(json.dumps(_one_speed(json.loads(sys.argv[2]), int(sys.argv[3]))))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["speed", "quality"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--updates", type=int, default=30)
    p.add_argument("--tasks", default="reach-v3,drawer-close-v3")
    p.add_argument("--steps-per-task", type=int, default=15_000)
    p.add_argument("--hidden", default="[256,256]")
    p.add_argument("--eval-every", type=int, default=30_000)
    p.add_argument("--goals", type=int, default=20)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", default=[v for v in VARIANTS if v != "bronet"], choices=list(VARIANTS))
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--reps", type=int, default=10_000)
    p.add_argument("--set", action="append", default=[], help="config override for every quality run")
    p.add_argument("--out", default="runs/bench-representation")
    args = p.parse_args()
    {"speed": speed, "quality": quality}[args.mode](args)


if __name__ == "__main__":
    main()
