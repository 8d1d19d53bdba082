"""What the variant speed benchmarks share (benchmarks/representation.py, benchmarks/balancers.py):
a variant is a list of config overrides on top of the Meta-World defaults.

speed: each variant in a fresh process (so that its peak resident memory is its own) builds the
learner for `num_tasks` tasks (3x400 networks, multi-head, batch num_tasks x 128 by default) with
the variant switched on, fills replay with random transitions, and times `updates` updates after
`warmup` warm-up updates; variants are interleaved over `repeats` rounds, and the medians of
the rates and of each round's ratio to the base variant reported.

Their quality (every variant trained on the same tasks, seeds and budget) is a grid of runs,
so it is a study: benchmarks/studies/representation-quality.yaml, balancers-quality.yaml.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import median  # noqa: E402


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


if __name__ == "__main__":  # one speed measurement, in a fresh process (see speed)
    print(json.dumps(one_speed(json.loads(sys.argv[1]), *map(int, sys.argv[2:5]))))
