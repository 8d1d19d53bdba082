"""The machine a learner rank runs on: its device, its cores, and how many actors and learner
threads it gets (`plan_workers`: `runtime.actors=auto`, `run.threads=0`, the defaults).

A learner rank gets its share of the usable cores (affinity, cgroup quota, torchrun's ranks per
host) minus its share of the cores other processes keep busy (measured from /proc/stat over
0.2 s at start, before any worker of the run starts; the load average lags by a minute):

  learner on a GPU  it waits on the device, not on matmuls: one core for it and one for the
                    evaluator; the rest run actors (the largest count that divides the rank's
                    tasks, so every actor steps as many tasks); the learner keeps the intra-op
                    threads the actors leave (at least 1).
  learner on a CPU  its matmuls bound the run: one actor with every task's envs, and the learner
                    takes every free core as intra-op threads; the actor and the evaluator
                    (niced) run in the time it leaves.
Sizing never changes how many envs a run steps (env.envs_per_task per task, or
runtime.envs_per_actor): that count shapes the data (how many episodes run side by side), so it
is the experiment's, recorded in config.yaml, not the machine's. More envs per task batch an
actor's inference over more observations (BENCHMARKS.md, "Actors"); set env.envs_per_task for that.
Threads beyond the free cores are what makes a run beside another job collapse: a parallel
region waits for its slowest thread, and a thread whose core is taken waits a scheduler slice
(BENCHMARKS.md, "Sizing to the machine").
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from launch.errors import UserError


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """run.device as a torch device; auto: this rank's GPU (cuda:LOCAL_RANK) when every learner
    rank on this host has one, else the CPU (ranks never mix devices)."""
    if name == "auto":
        ranks_here = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        name = "cuda" if torch.cuda.is_available() and torch.cuda.device_count() >= ranks_here else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; valid: cpu, cuda, cuda:N, auto") from None
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"unsupported device {name!r}; valid: cpu, cuda, cuda:N, auto")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device {name!r} requested but CUDA is not available")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


def usable_cores() -> int:
    """CPUs this process may run on: its affinity, capped by a cgroup v2 CPU quota."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cores = min(cores, max(1, math.floor(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cores


def busy_elsewhere(interval: float = 0.2) -> float:
    """Cores of this process's affinity set that other processes kept busy over the next
    `interval` seconds (this process sleeps meanwhile), from /proc/stat; 0 where unknown."""
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()

    def times() -> dict[int, tuple[int, int]]:  # cpu -> (all jiffies, idle + iowait jiffies)
        out = {}
        for line in Path("/proc/stat").read_text().splitlines():
            name, *fields = line.split()
            if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
                ticks = [int(x) for x in fields[:8]]
                out[int(name[3:])] = (sum(ticks), ticks[3] + ticks[4])
        return out
    try:
        before = times()
        time.sleep(interval)
        after = times()
    except (OSError, ValueError, IndexError):
        return 0.0
    return sum(1 - (after[c][1] - before[c][1]) / max(after[c][0] - before[c][0], 1) for c in after if c in before)


def free_cores(ranks_per_host: int = 1) -> tuple[int, int]:
    """(this learner rank's share of the usable cores, how many of them are free of other load)."""
    ranks = max(ranks_per_host, 1)
    usable = usable_cores()
    cores = max(1, usable // ranks)
    busy = busy_elsewhere()
    if hasattr(os, "sched_getaffinity"):  # under a CPU quota, other tenants' load spreads over the whole
        busy *= usable / max(len(os.sched_getaffinity(0)), 1)  # affinity set: charge only our quota's part
    return cores, max(1, cores - round(busy / ranks))  # other load is shared by the host's ranks


@dataclass(frozen=True)
class WorkerPlan:
    actors: int
    threads: int         # the learner's intra-op threads
    note: str            # how it was chosen: the start-up line and learners.json


def plan_workers(cfg, device: torch.device, cores: tuple[int, int], rank_tasks: int) -> WorkerPlan:
    """Actors and learner threads for one learner rank training `rank_tasks` tasks (see the module
    docstring); cores: free_cores(). Explicit settings (runtime.actors, run.threads) are kept."""
    rt, (total, free) = cfg.runtime, cores
    workers, auto = rt.backend != "single", rt.actors == "auto"
    actors = rt.actors if not auto else 1
    if auto and workers and device.type == "cuda":
        actors = max(d for d in range(1, rank_tasks + 1) if rank_tasks % d == 0 and d <= max(1, free - 2))
    busy = actors + 1 if workers and device.type == "cuda" else 0  # a CPU learner throttles its actors
    threads = cfg.run.threads or max(1, free - busy)
    note = (f"{total} cores{f' ({free} free of other load)' if free < total else ''}, "
            f"{f'{actors} actor' + 's' * (actors > 1) if workers else 'no actor processes'}, "
            f"learner {threads} thread{'s' * (threads > 1)}")
    return WorkerPlan(actors, threads, note)
