"""Multi-task loss balancers: what each costs the learner, and what it buys.

    python benchmarks/balancers.py speed      # updates/s and peak memory vs the mean, MT10- and MT50-sized
    python launch/study.py benchmarks/studies/balancers-quality.yaml   # success, >= 3 seeds: a study

speed: the default learner (3x400, multi-head, 128 rows per task) for 10 tasks (MT10's batch,
10 x 128) and for 50 (MT50's, 50 x 128), every balancer on its default networks, each in a
fresh process, one thread, interleaved over --repeats rounds (benchmarks/variants.py). Kurin et
al. 2022 report ~350 s per 10k updates for the mean on MT10 against 1300-2000 s for the
specialised optimizers: 0.18x-0.27x the mean's rate.

Quality (the mean, the mean with Kurin et al.'s stabilizers, and the balancers on the same tasks,
seeds and budget) is a grid of runs, so it is a study: benchmarks/studies/balancers-quality.yaml.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import variants  # noqa: E402
from benchmarks.common import table  # noqa: E402

VARIANTS = {  # name -> config overrides
    "mean": [],
    **{name: [f"balance.method={name}"]
       for name in ("uncertainty", "gradnorm", "famo", "pcgrad", "cagrad", "mgda", "nashmtl", "upgrad")},
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["speed"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--sizes", type=int, nargs="+", default=[10, 50], help="task counts (batch: count x 128)")
    p.add_argument("--updates", type=int, nargs="+", default=[10, 2], help="timed updates, per size")
    args = p.parse_args()
    speed_variants = VARIANTS
    for num_tasks, updates in zip(args.sizes, args.updates, strict=True):
        warmup = 2 if num_tasks <= 10 else 1
        header, rows = variants.speed(speed_variants, "mean", updates, args.repeats, num_tasks=num_tasks,
                                      warmup=warmup)
        print(f"{num_tasks} tasks (batch {num_tasks} x 128), 3x400 multi-head, 1 thread, {updates} updates after "
              f"{warmup} warm-up, median of {args.repeats} interleaved fresh processes", flush=True)
        print(table(header, rows), flush=True)


if __name__ == "__main__":
    main()
