"""Actor-learner runtime benchmarks, each measured side by side in one run.

    python benchmarks/runtime.py collection   # actors (with policy inference) vs raw env stepping, MT10
    python benchmarks/runtime.py end-to-end   # training env-steps/s: single / local / ray vs SB3, reach-v3
    python benchmarks/runtime.py learner      # learner updates/s vs the bare torch compute ceiling
    python benchmarks/runtime.py torchrun     # 1 vs 2 torchrun learner ranks (CPU)
"""

from __future__ import annotations

import argparse
import json
import os
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


def collection(args) -> None:
    """Env-steps/s per core: raw Meta-World stepping (random actions, no policy, one process)
    vs local actor processes stepping MT10 with batched policy inference (MT10 default nets),
    streaming chunks to a learner that only drains them."""
    from agents.networks import build_policy
    from agents.sac.config import SACConfig
    from benchmarks.raw_metaworld import raw_steps_per_s
    from envs import make_suite
    from launch.actors.actor import ActorSpec
    from launch.actors.local import LocalActorPool

    suite = make_suite("metaworld", "MT10", 0)
    sac = SACConfig()
    policy = build_policy(sac, suite.obs_dim, suite.action_dim, 10)
    flat = torch.nn.utils.parameters_to_vector(policy.parameters()).detach()
    rows = []
    for actors, envs in ((1, 10), (2, 5), (1, 40)):  # (1, 40): --actors auto on a CPU learner
        raw, ours = [], []
        for r in range(args.repeats):
            raw.append(raw_steps_per_s(suite.task_names, args.steps, r))
            specs = [ActorSpec(a, "metaworld", "MT10", r, tuple(range(10))[a::actors], envs, sac, 10)
                     for a in range(actors)]
            pool = LocalActorPool(specs, flat.numel(), chunk_steps=100, max_policy_lag=1, log=lambda *a: None)
            pool.publish(lambda: flat, 1)
            fresh = set()
            while len(fresh) < actors:  # until every actor acts with the policy
                fresh |= {c.actor_id for c in pool.poll(None) if c.policy_version == 1}
            steps, start = 0, time.perf_counter()
            while time.perf_counter() - start < args.seconds:
                steps += sum(len(c) for c in pool.poll(None))
            ours.append(steps / (time.perf_counter() - start) / actors)
            pool.close()
        rows.append([f"{actors} actor(s), {envs} envs each", median(raw), median(ours),
                     f"{median(ours) / median(raw):.2f}"])
    print(f"Meta-World MT10, median of {args.repeats}; actors run the MT10 default policy (3x400, multi-head)")
    print(table(["actors", "raw env-steps/s (1 core)", "actor env-steps/s per actor process", "ratio"], rows))


def end_to_end(args) -> None:
    """Training env-steps/s at one update per env step on reach-v3 (256x256, batch 256)."""
    from benchmarks.sac_vs_sb3 import train_sb3
    from envs import make_suite
    from launch.config import build_config
    from launch.loop.trainer import Trainer

    def ours(backend: str, seed: int) -> float:
        cfg = build_config("metaworld", flags={"env.tasks": "reach-v3", "run.steps": args.steps, "run.seed": seed,
                                               "eval.every": 0, "eval.goals": 1},
                           overrides=[f"runtime.backend={backend}", "runtime.actors=1", "runtime.chunk_steps=32",
                                      "sac.hidden_sizes=[256, 256]", "sac.batch_size_per_task=256",
                                      "sac.head=single", "sac.task_input=false", "sac.warmup_steps_per_task=256",
                                      f"run.threads={args.threads}", f"run.log_every={args.steps}",
                                      f"run.checkpoint_every={args.steps}"])
        suite = make_suite("metaworld", "reach-v3", seed)
        with tempfile.TemporaryDirectory() as run_dir:
            trainer = Trainer(cfg, suite, Path(run_dir), resume=False, log=lambda *a: None)
            try:
                trainer.run()
            finally:
                trainer.close()
        return trainer.train_steps_per_s

    torch.set_num_threads(args.threads)
    results = {name: [] for name in ("single", "local", "ray", "sb3")}
    for r in range(args.repeats):
        for name in results:
            rate = train_sb3(args.steps, 256, r, eval_goals=1)[0] if name == "sb3" else ours(name, r)
            results[name].append(rate)
        print(f"repeat {r}: " + "  ".join(f"{k} {v[-1]:.1f}" for k, v in results.items()), flush=True)
    sb3 = median(results["sb3"])
    labels = {"single": "polytask single-process", "local": "polytask local actors (1 actor process)",
              "ray": "polytask Ray actors (1 Ray actor)", "sb3": "Stable-Baselines3 SAC"}
    print(f"\nreach-v3, {args.steps} env steps (256 random first), 1 update per env step, batch 256, 256x256, "
          f"learner {args.threads} torch thread(s); median of {args.repeats}")
    print(table(["trainer", "env-steps/s", "vs SB3"],
                [[labels[k], median(v), f"{median(v) / sb3:.2f}x"] for k, v in results.items()]))


def learner(args) -> None:
    """Updates/s of the learner step (replay sampling + SAC update) vs the same update on one
    fixed batch (no data movement at all): the compute ceiling of these networks."""
    from agents.replay import MultiTaskReplay
    from agents.sac import SACConfig, SACLearner

    torch.set_num_threads(args.threads)
    rows = []
    for label, tasks, sac in (("reach-v3: 256x256, batch 256", 1,
                               SACConfig(hidden_sizes=(256, 256), head="single", task_input=False,
                                         batch_size_per_task=256)),
                              ("MT10 default: 3x400 multi-head, batch 10x128", 10, SACConfig())):
        learner = SACLearner(sac, 39, 4, tasks, torch.device("cpu"))
        replay = MultiTaskReplay(tasks, 20_000, 39, 4)
        n = 20_000 * tasks
        rng = np.random.default_rng(0)
        replay.add(np.repeat(np.arange(tasks), n // tasks), rng.standard_normal((n, 39), np.float32),
                   rng.uniform(-1, 1, (n, 4)).astype(np.float32), rng.random(n, np.float32),
                   rng.standard_normal((n, 39), np.float32), np.zeros(n, np.float32))
        fixed = replay.sample(sac.batch_size_per_task, rng)
        ceiling, ours = [], []
        for _ in range(args.repeats):
            def sampled(replay=replay, sac=sac, rng=rng):
                return replay.sample(sac.batch_size_per_task, rng)

            for results, batch_fn in ((ceiling, lambda fixed=fixed: fixed), (ours, sampled)):
                for _ in range(5):
                    learner.update(batch_fn())
                start = time.perf_counter()
                for _ in range(args.updates):
                    learner.update(batch_fn())
                results.append(args.updates / (time.perf_counter() - start))
        rows.append([label, median(ours), median(ceiling), f"{median(ours) / median(ceiling):.2f}"])
    print(f"learner updates/s, {args.threads} torch thread(s), median of {args.repeats} x {args.updates} updates")
    print(table(["networks", "learner (sample + update)", "ceiling (fixed batch)", "ratio"], rows))


def torchrun(args) -> None:
    """Training env-steps/s with 1 and 2 learner ranks (gloo) on the same global config: the same
    global env steps and, since update credit is global, the same number of updates."""
    rows = []
    for ranks in (1, 2):
        rates, updates = [], set()
        for r in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                run = Path(tmp) / "run"
                cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}",
                       str(ROOT / "launch" / "train.py"), "--suite", "pointmass", "--tasks", "PM4",
                       "--backend", "single", "--steps", str(args.steps), "--eval-every", "0", "--seed", str(r),
                       "--run-dir", str(run), "--set", "sac.hidden_sizes=[256, 256]",
                       "--set", "sac.batch_size_per_task=256", "--set", "eval.goals=1",
                       "--set", f"run.threads={max(1, 2 // ranks)}", "--set", f"run.log_every={args.steps}"]
                proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
                if proc.returncode:
                    raise SystemExit(proc.stderr[-2000:])
                rates.append(json.loads((run / "learners.json").read_text())["train_env_steps_per_s"])
                updates.add(torch.load(sorted((run / "checkpoints").glob("*.pt"))[-1],
                                       weights_only=True)["learner"]["num_updates"])
        rows.append([f"{ranks} rank(s) x {max(1, 2 // ranks)} thread(s)", ", ".join(map(str, sorted(updates))),
                     median(rates)])
    base = rows[0][2]
    print(f"pointmass PM4, 256x256 nets, global batch 4x256, 1 update per round, {args.steps} steps, "
          f"single backend per rank, median of {args.repeats}")
    print(table(["learners", "updates", "train env-steps/s", "vs 1 rank"], [r + [f"{r[2] / base:.2f}x"] for r in rows]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["collection", "end-to-end", "learner", "torchrun"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--updates", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    default_steps = {"collection": 5000, "end-to-end": 1500, "learner": 0, "torchrun": 4000}
    args.steps = args.steps or default_steps[args.mode]
    {"collection": collection, "end-to-end": end_to_end, "learner": learner, "torchrun": torchrun}[args.mode](args)


if __name__ == "__main__":
    main()
