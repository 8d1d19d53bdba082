"""Raw Meta-World v3 stepping with random actions: the simulator ceiling for training throughput.

    python benchmarks/raw_metaworld.py [--steps 5000] [--repeats 5]

Side by side in one run: bare Meta-World envs stepped in a plain loop, vs the same envs through
polytask's suite env + EnvPool (seeded goals, auto-reset, episode stats) with random actions.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from benchmarks.common import median, table
from envs import make_suite
from envs.pool import EnvPool


def raw_steps_per_s(names: list[str], steps: int, seed: int) -> float:
    """Meta-World's own env classes, stepped round-robin with random actions, reset at 500."""
    import metaworld

    envs = []
    for name in names:
        bench = metaworld.MT1(name, seed=seed)
        env = bench.train_classes[name]()
        env.set_task(bench.train_tasks[0])
        env.seed(seed)
        env.reset()
        envs.append(env)
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-1, 1, (steps, 4)).astype(np.float32)
    start = time.perf_counter()
    for i in range(steps):
        env = envs[i % len(envs)]
        *_, truncated, _ = env.step(actions[i])
        if truncated:
            env.reset()
    return steps / (time.perf_counter() - start)


def pool_steps_per_s(tasks: str, steps: int, seed: int) -> float:
    suite = make_suite("metaworld", tasks, seed)
    pool = EnvPool([suite.make_env(t, seed + t.index) for t in suite.tasks], [t.index for t in suite.tasks])
    rng = np.random.default_rng(seed)
    rounds = steps // len(pool.envs)
    start = time.perf_counter()
    for _ in range(rounds):
        pool.step(rng.uniform(-1, 1, (len(pool.envs), 4)).astype(np.float32))
    return rounds * len(pool.envs) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    rows = []
    for label, tasks in (("reach-v3", "reach-v3"), ("MT10", "MT10")):
        names = make_suite("metaworld", tasks, 0).task_names
        raw = [raw_steps_per_s(names, args.steps, r) for r in range(args.repeats)]
        ours = [pool_steps_per_s(tasks, args.steps, r) for r in range(args.repeats)]
        rows.append([label, median(raw), median(ours), f"{median(ours) / median(raw):.2f}"])
    print(f"Meta-World v3, random actions, 1 process, median of {args.repeats} x {args.steps} steps")
    print(table(["tasks", "raw env-steps/s", "polytask EnvPool env-steps/s", "ratio"], rows))


if __name__ == "__main__":
    main()
