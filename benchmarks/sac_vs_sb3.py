"""polytask's single-process SAC trainer vs Stable-Baselines3 SAC on Meta-World reach-v3.

    python benchmarks/sac_vs_sb3.py throughput [--steps 2000] [--repeats 5] [--threads 1] [--device cpu]
                                               [--precision bf16]
    python benchmarks/sac_vs_sb3.py quality [--steps 40000] [--seeds 3] [--device cpu]

Same settings for both: MLP 256x256 (actor and twin critics), batch 256, one gradient update
per env step, Adam 3e-4, gamma 0.99, tau 0.005, auto entropy (init 1.0, target -4),
uniform-random actions before learning starts, the same device (--device, CPU by default) and
the same torch thread count.

throughput: both trainers alternate in one process; env-steps/s of training (our evaluation
            excluded; SB3 does none), median over repeats, and the ratio.
quality:    each seed trains both for --steps env steps (the two run in parallel processes,
            one thread each), then both are scored by the same Meta-World protocol
            (one deterministic episode on each of the 50 fixed goals).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np
import torch

from benchmarks.common import median, table

TASK = "reach-v3"


def train_ours(steps: int, warmup: int, seed: int, eval_goals: int, device: str, threads: int,
               precision: str = "fp32") -> tuple[float, float]:
    """(training env-steps/s, final eval success)."""
    from envs import make_suite
    from launch.config import build_config
    from launch.loop.trainer import Trainer

    cfg = build_config("metaworld", flags={"env.tasks": TASK, "run.steps": steps, "run.seed": seed,
                                           "eval.every": 0, "eval.goals": eval_goals, "run.device": device,
                                           "run.threads": threads},
                       overrides=["runtime.backend=single", "sac.hidden_sizes=[256, 256]",
                                  "sac.batch_size_per_task=256",
                                  "sac.head=single", "sac.task_input=false",
                                  f"sac.warmup_steps_per_task={warmup}", "replay.capacity_per_task=1000000",
                                  f"sac.precision={precision}",
                                  f"run.log_every={steps}", f"run.checkpoint_every={steps}"])
    suite = make_suite("metaworld", TASK, seed)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(cfg, suite, Path(run_dir), resume=False)
        success = trainer.run()
        trainer.close()
    return trainer.train_steps_per_s, success


def train_sb3(steps: int, warmup: int, seed: int, eval_goals: int, device: str, threads: int) -> tuple[float, float]:
    from stable_baselines3 import SAC

    from envs import make_suite
    from envs.evaluation import evaluate

    torch.set_num_threads(threads)
    suite = make_suite("metaworld", TASK, seed)
    model = SAC("MlpPolicy", suite.make_env(suite.tasks[0], seed), learning_rate=3e-4, buffer_size=1_000_000,
                learning_starts=warmup, batch_size=256, tau=0.005, gamma=0.99, train_freq=1,
                gradient_steps=1, ent_coef="auto_1.0", policy_kwargs=dict(net_arch=[256, 256]),
                seed=seed, device=device, verbose=0)
    start = time.perf_counter()
    model.learn(total_timesteps=steps)
    steps_per_s = steps / (time.perf_counter() - start)
    env = suite.make_env(suite.tasks[0], seed + 1)
    results = evaluate(lambda obs, task: model.predict(obs, deterministic=True)[0], [env], [0], eval_goals,
                       seed=seed)
    return steps_per_s, results[0]["success"]


def throughput(args) -> None:
    ours, sb3 = [], []
    for r in range(args.repeats):  # alternate, so machine noise hits both alike
        ours.append(train_ours(args.steps, args.warmup, r, 1, args.device, args.threads, args.precision)[0])
        sb3.append(train_sb3(args.steps, args.warmup, r, 1, args.device, args.threads)[0])
        print(f"repeat {r}: polytask {ours[-1]:,.1f}  SB3 {sb3[-1]:,.1f} env-steps/s", flush=True)
    print(f"\nreach-v3, {args.steps} env steps ({args.warmup} random first), 1 update/step, batch 256, "
          f"256x256, {args.device}, {args.threads} torch thread(s), polytask in {args.precision} (SB3: fp32); "
          f"median of {args.repeats}")
    print(table(["trainer", "env-steps/s (median)", "runs"],
                [["polytask", median(ours), " ".join(f"{x:.0f}" for x in ours)],
                 ["Stable-Baselines3", median(sb3), " ".join(f"{x:.0f}" for x in sb3)]]))
    print(f"ratio polytask / SB3: {median(ours) / median(sb3):.2f}x")


def quality(args) -> None:
    """Each (trainer, seed) job runs in its own process with one torch thread; two at a time."""
    jobs = [(who, seed) for seed in range(args.seeds) for who in ("ours", "sb3")]
    results: dict = {}
    running: list = []
    while jobs or running:
        while jobs and len(running) < args.parallel:
            who, seed = jobs.pop(0)
            cmd = [sys.executable, __file__, "_job", who, str(seed), "--steps", str(args.steps),
                   "--warmup", str(args.warmup), "--device", args.device]
            running.append((who, seed, subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)))
        for item in list(running):
            who, seed, proc = item
            if proc.poll() is not None:
                running.remove(item)
                out = proc.stdout.read().strip().splitlines()
                results[who, seed] = json.loads(out[-1])
                print(f"{who} seed {seed}: {results[who, seed]}", flush=True)
        time.sleep(1)
    rows = []
    for who, label in (("ours", "polytask"), ("sb3", "Stable-Baselines3")):
        succ = [results[who, s]["success"] for s in range(args.seeds)]
        rows.append([label, f"{np.mean(succ):.2f}", " ".join(f"{x:.2f}" for x in succ)])
    print(f"\nreach-v3 eval success after {args.steps:,} env steps (50 fixed goals, deterministic), "
          f"{args.seeds} seeds")
    print(table(["trainer", "mean success", "per seed"], rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["throughput", "quality", "_job"])
    parser.add_argument("job", nargs="*")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--warmup", type=int)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="both trainers' torch device: cpu, cuda, cuda:N")
    parser.add_argument("--precision", default="fp32", help="throughput: our sac.precision (fp32, bf16, auto); "
                                                           "SB3 has fp32 only")
    args = parser.parse_args()
    if args.mode == "throughput":
        args.steps, args.warmup = args.steps or 2000, args.warmup or 256
        throughput(args)
    elif args.mode == "quality":
        args.steps, args.warmup = args.steps or 40_000, args.warmup or 1000
        quality(args)
    else:
        who, seed = args.job[0], int(args.job[1])
        sps, success = (train_ours if who == "ours" else train_sb3)(args.steps, args.warmup, seed, 50, args.device, 1)
        print(json.dumps({"steps_per_s": round(sps, 1), "success": success}))


if __name__ == "__main__":
    main()
