"""Learner-rank synchronization: what each mode communicates and costs, and what it trains.

    python benchmarks/sync.py comm       # all-reduces, bytes and updates/s per 1k updates, 2 CPU ranks
    python launch/study.py benchmarks/studies/sync-quality.yaml   # PM4 success per mode: a study

comm: two torchrun ranks (gloo on loopback, one thread each) train the MT10 default learner
(3x400 multi-head, 10 tasks, each rank its 5 tasks x 128 rows) with every mode: step, local
with H = 2, 4, 8, and qsr (alpha 6e-4, H_min 2) under a cosine schedule over the measured
updates after a linear warm-up (--warmup-updates, during which QSR's period is H_min). Modes
are interleaved over --repeats rounds (medians). Counted per 1k updates: the
all-reduces and the bytes each rank puts into them; timed: updates/s, on loopback and on a
simulated slow link, where every all-reduce first sleeps --latency-ms plus its bytes over
--bandwidth-gbit (injected in this benchmark by wrapping torch.distributed.all_reduce; the
sleep stands in for the wire time of a two-rank ring all-reduce, each rank sending its buffer).

The same-budget success of each mode is a grid of runs, so it is a study
(benchmarks/studies/sync-quality.yaml: every trial torchrun with 2 ranks).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import median, table  # noqa: E402

MODES = {"step": ("step", 1), "local H=2": ("local", 2), "local H=4": ("local", 4), "local H=8": ("local", 8),
         "qsr": ("qsr", 2)}
QSR_ALPHA = 6e-4


def worker(args) -> None:
    """One rank (under torchrun): every mode, interleaved, on both links; rank 0 prints JSON."""
    import torch
    import torch.distributed as dist

    from agents.replay import Batch
    from agents.sac import SACConfig, SACLearner
    from launch.config import SyncConfig
    from launch.distributed import make_synchronizer
    from launch.distributed.ranks import init_from_env

    torch.set_num_threads(1)
    rank_dist = init_from_env()
    real_all_reduce = dist.all_reduce
    link = {"sleep": False}

    def slow_all_reduce(tensor, *a, **kw):
        if link["sleep"]:
            time.sleep(args.latency_ms / 1e3 + tensor.numel() * tensor.element_size() * 8 / (args.bandwidth_gbit * 1e9))
        return real_all_reduce(tensor, *a, **kw)
    dist.all_reduce = slow_all_reduce  # also what torch's average_parameters calls

    num_tasks, per_task = 10, 128
    own = rank_dist.shard(num_tasks)
    g = torch.Generator().manual_seed(rank_dist.rank)
    n = len(own) * per_task
    batch = Batch(torch.randn(n, 39, generator=g), torch.rand(n, 4, generator=g) * 2 - 1, torch.randn(n, generator=g),
                  torch.randn(n, 39, generator=g), torch.zeros(n), torch.tensor(own).repeat_interleave(per_task))
    results = {}
    for _ in range(args.repeats):
        for slow in (False, True):
            for name, (mode, period) in MODES.items():
                sync_cfg = SyncConfig(mode=mode, period=period, period_min=period, qsr_alpha=QSR_ALPHA)
                sac = SACConfig(lr_schedule="cosine", lr_schedule_updates=args.updates,
                                lr_warmup_updates=args.warmup_updates)
                torch.manual_seed(0)
                learner = SACLearner(sac, 39, 4, num_tasks, torch.device("cpu"),
                                     make_synchronizer(sync_cfg, rank_dist, num_tasks))
                sync = learner.synchronizer
                for _ in range(3):  # warm-up (not counted)
                    learner.update(batch)
                sync.sync_point(learner)
                learner.num_updates, sync.allreduces, sync.bytes_sent = 0, 0, 0
                if mode != "step":
                    sync.period = None  # chosen afresh at update 0
                link["sleep"] = slow
                dist.barrier()
                start = time.perf_counter()
                for _ in range(args.updates):
                    learner.update(batch)
                sync.sync_point(learner)
                dist.barrier()
                elapsed = time.perf_counter() - start
                link["sleep"] = False
                per_k = 1000 / args.updates
                entry = results.setdefault(name, {"allreduces": sync.allreduces * per_k,
                                                  "mbytes": sync.bytes_sent * per_k / 1e6, "fast": [], "slow": []})
                entry["slow" if slow else "fast"].append(args.updates / elapsed)
    if rank_dist.is_main:
        print("RESULT " + json.dumps(results), flush=True)
    rank_dist.close()


def comm(args) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", __file__, "worker",
           "--updates", str(args.updates), "--repeats", str(args.repeats), "--latency-ms", str(args.latency_ms),
           "--bandwidth-gbit", str(args.bandwidth_gbit), "--warmup-updates", str(args.warmup_updates)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        sys.exit(proc.stderr[-3000:])
    results = json.loads(lines[0][len("RESULT "):])
    base = {link: median(results["step"][link]) for link in ("fast", "slow")}
    rows = [[name, f"{r['allreduces']:,.0f}", f"{r['mbytes']:,.0f}", median(r["fast"]),
             f"{median(r['fast']) / base['fast']:.2f}x", median(r["slow"]), f"{median(r['slow']) / base['slow']:.2f}x"]
            for name, r in results.items()]
    print(f"2 CPU ranks (gloo, loopback, 1 thread each), MT10 default learner (3x400, 10 tasks, 5 x 128 rows per "
          f"rank), per 1k updates; median of {args.repeats} interleaved rounds of {args.updates} updates; slow link: "
          f"{args.latency_ms} ms + bytes / {args.bandwidth_gbit} Gbit/s slept per all-reduce (injected); every mode "
          f"with a {args.warmup_updates}-update learning-rate warm-up")
    print(table(["mode", "all-reduces", "MB sent / rank", "updates/s loopback", "vs step", "updates/s slow link",
                 "vs step"], rows))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["comm", "worker"])
    p.add_argument("--updates", type=int, default=200, help="comm: timed updates per mode and round")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--latency-ms", type=float, default=1.0)
    p.add_argument("--bandwidth-gbit", type=float, default=1.0)
    p.add_argument("--warmup-updates", type=int, default=10,
                   help="linear learning-rate warm-up of every mode (QSR averages every H_min updates during it)")
    args = p.parse_args()
    {"comm": comm, "worker": worker}[args.mode](args)


if __name__ == "__main__":
    main()
