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
"""

from __future__ import annotations

import tempfile

import torch

from launch.actor import Actor, ActorSpec, Chunk
from launch.errors import UserError


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
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


def actor_specs(cfg, own_tasks: list[int], rank: int, num_tasks: int, step: int) -> list[ActorSpec]:
    """Actor a steps tasks a, a+A, ... of this rank's shard, env.envs_per_task envs per task
    (runtime.envs_per_actor overrides the count); one actor for the single backend."""
    rt = cfg.runtime
    actors = 1 if rt.backend == "single" else rt.actors
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
