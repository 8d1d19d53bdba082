"""Where experience and evaluations come from, and on which device the learner runs.

An actor source (one per stage) is what the trainer polls for experience; every backend gives the
same interface:

    publish(weights, version)   weights(): the flat policy parameters (called only if needed)
    poll(timeout) -> [Chunk]    experience that arrived
    restarts                    actors replaced so far
    close()

    single  InlineActors (below): the trainer's loop steps the envs itself
    local   launch/local_actors.py: actor processes
    ray     launch/ray_actors.py: Ray actors

An evaluator runs the evaluation protocol on a snapshot of the policy (launch/evaluator.py).

Sizing to the machine (`plan_workers`: `runtime.actors=auto`, `run.threads=0`, the defaults).
A learner rank gets its share of the usable cores (affinity, cgroup quota, torchrun's ranks per
host) minus its share of the cores other processes keep busy (measured from /proc/stat over
0.2 s at start, before any worker of the run starts; the load average lags by a minute):

  learner on a GPU  it waits on the device, not on matmuls: one core for it and one for the
                    evaluator; the rest run actors (the largest count that divides the rank's
                    tasks, so every actor steps as many tasks); the learner keeps the intra-op
                    threads the actors leave (at least 1).
  learner on a CPU  its matmuls bound the run (MT10 defaults: ~10 updates/s, ~100 env-steps/s,
                    against ~1,300-1,600 from one actor): one actor with every task's envs, and
                    the learner takes every free core as intra-op threads; the actor and the
                    evaluator (niced) run in the time it leaves.
Sizing never changes how many envs a run steps (env.envs_per_task per task, or
runtime.envs_per_actor): that count shapes the data (how many episodes run side by side), so it
is the experiment's, recorded in config.yaml, not the machine's. More envs per task batch an
actor's inference over more observations (BENCHMARKS.md: 10 envs -> 0.85 of an actor's time in
Meta-World's step, 40 -> 0.92); set env.envs_per_task for that.
Threads beyond the free cores are what makes a run beside another job collapse: a parallel
region waits for its slowest thread, and a thread whose core is taken waits a scheduler slice
(BENCHMARKS.md: 2 threads beside a busy process ran the MT10 update 3.8x slower than alone, 1
thread 1.0x).
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from launch.actor import Actor, ActorSpec, Chunk
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


def to_device(tree, device: torch.device):
    """A checkpoint's nested dicts/lists of tensors, moved to `device`."""
    if isinstance(tree, torch.Tensor):
        return tree.to(device)
    if isinstance(tree, dict):
        return {k: to_device(v, device) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(to_device(v, device) for v in tree)
    return tree


class InlineActors:
    """--backend single: the learner's loop steps the envs itself, one round per poll, acting
    with the learner's own policy module (nothing to copy)."""

    def __init__(self, spec: ActorSpec, policy: torch.nn.Module):
        self.actor = Actor(spec, policy=policy)
        self.restarts = 0

    def publish(self, weights, version: int) -> None:
        self.actor.version = version  # the actor holds the learner's module: no copy to make

    def poll(self, timeout: float | None) -> list[Chunk]:
        return [self.actor.collect(1)]

    def close(self) -> None:
        self.actor.close()


class WeightPublisher:
    """Hands the policy's flat weights to the actor source without stalling a GPU learner: there
    a call starts a copy into pinned host memory (unless one is still on its way) and publishes
    the copy that has arrived since the last call, if any (actors may act a few updates behind;
    `wait` publishes the current weights at once). On a CPU it is a plain copy. The single
    backend's actor shares the learner's module: only the version moves."""

    def __init__(self, policy: torch.nn.Module, backend: str):
        self.policy, self.shared = policy, backend == "single"
        self.pending = None  # (pinned copy, version, CUDA event): the copy on its way to the host

    def reset(self) -> None:
        """A new stage: a copy taken before the last stage's end_task must not reach its actors."""
        self.pending = None

    def __call__(self, source, version: int, wait: bool = False) -> int | None:
        """Publish to `source`; returns the version published (None: no copy has arrived yet)."""
        if self.shared:
            source.publish(None, version)
            return version
        flat = torch.nn.utils.parameters_to_vector(self.policy.parameters()).detach()
        if flat.device.type != "cuda" or wait:
            self.pending = None
            source.publish(lambda: flat.cpu(), version)
            return version
        published = None
        if self.pending is not None and self.pending[2].query():
            arrived, published, _ = self.pending  # its own name: the lambda must not see the next copy
            source.publish(lambda: arrived, published)
            self.pending = None
        if self.pending is None:  # one copy at a time: a copy is never dropped before it arrives
            copy = torch.empty(flat.shape, dtype=flat.dtype, pin_memory=True)
            copy.copy_(flat, non_blocking=True)
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(flat.device))  # the stream that copies, on flat's device
            self.pending = (copy, version, event)
        return published


def actor_specs(cfg, plan: WorkerPlan, own_tasks: list[int], rank: int, num_tasks: int,
                step: int) -> list[ActorSpec]:
    """Actor a steps tasks a, a+A, ... of this rank's shard, env.envs_per_task envs per task
    (runtime.envs_per_actor overrides the count); one actor for the single backend."""
    rt = cfg.runtime
    actors = 1 if rt.backend == "single" else plan.actors
    specs = []
    for a in range(actors):
        tasks = tuple(own_tasks[a::actors]) or (own_tasks[a % len(own_tasks)],)
        specs.append(ActorSpec(actor_id=rank * 1000 + a, suite=cfg.env.suite, tasks=cfg.env.tasks, seed=cfg.run.seed,
                               task_indices=tasks, num_envs=rt.envs_per_actor or len(tasks) * cfg.env.envs_per_task,
                               sac=cfg.sac, num_tasks=num_tasks, start_step=step))
    return specs


def make_actor_source(runtime, specs: list[ActorSpec], policy: torch.nn.Module, log=print):
    """The actor source of `runtime.backend` for these actor specs (one spec for `single`)."""
    if runtime.backend == "single":
        return InlineActors(specs[0], policy)
    num_params = sum(p.numel() for p in policy.parameters())
    if runtime.backend == "local":
        from launch.local_actors import LocalActorPool
        return LocalActorPool(specs, num_params, runtime.chunk_steps, runtime.max_policy_lag, log=log)
    from launch.ray_actors import RayActorPool
    return RayActorPool(specs, runtime.chunk_steps, runtime.max_policy_lag, runtime.ray_address,
                        tempfile.mkdtemp(prefix="polytask-ray-"), log=log)


def make_evaluator(cfg):
    """Inline for `single` (no process of its own), else an evaluator process beside the learner."""
    from launch.evaluator import EvaluatorWorker, InlineEvaluator
    args = (cfg.env.suite, cfg.env.tasks, cfg.run.seed, cfg.sac, cfg.eval.goals, cfg.eval.policy)
    return InlineEvaluator(*args) if cfg.runtime.backend == "single" else EvaluatorWorker(*args)
