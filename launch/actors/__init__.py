"""Actors: where experience comes from, and where the weights go back to.

An actor source (one per stage) is what the trainer polls for experience; every backend gives the
same interface:

    publish(weights, version)   weights(): the flat policy parameters (called only if needed)
    poll(timeout) -> [Chunk]    experience that arrived
    restarts                    actors replaced so far
    close()

    single  launch/actors/inline.py: the trainer's loop steps the envs itself
    local   launch/actors/local.py: actor processes
    ray     launch/actors/ray_pool.py: Ray actors

Every backend wraps the same `Actor` (launch/actors/actor.py); the learner's weights reach them
through `WeightPublisher` (launch/actors/weights.py); `StageActors` (launch/actors/stage.py) is a
stage's actors as the loop sees them. How many actors a rank runs is the machine's
question (launch/machine.py).
"""

from __future__ import annotations

import tempfile

import torch

from launch.actors.actor import ActorSpec
from launch.actors.inline import InlineActors


def actor_specs(cfg, plan, own_tasks: list[int], rank: int, num_tasks: int,
                step: int, stages: tuple = ()) -> list[ActorSpec]:
    """Actor a steps tasks a, a+A, ... of this rank's shard, env.envs_per_task envs per task
    (runtime.envs_per_actor overrides the count); one actor for the single backend. num_tasks:
    the policy's (the learner's networks'); stages: the schedule's, for blended switches."""
    rt = cfg.runtime
    actors = 1 if rt.backend == "single" else plan.actors
    specs = []
    for a in range(actors):
        tasks = tuple(own_tasks[a::actors]) or (own_tasks[a % len(own_tasks)],)
        specs.append(ActorSpec(actor_id=rank * 1000 + a, suite=cfg.env.suite, tasks=cfg.env.tasks, seed=cfg.run.seed,
                               task_indices=tasks, num_envs=rt.envs_per_actor or len(tasks) * cfg.env.envs_per_task,
                               sac=cfg.sac, num_tasks=num_tasks, start_step=step,
                               goal_observable=cfg.env.goal_observable, target_visible=cfg.env.target_visible,
                               blend_steps=cfg.continual.blend_steps, stages=stages, actors=actors))
    return specs


def make_actor_source(runtime, specs: list[ActorSpec], policy: torch.nn.Module, log=print):
    """The actor source of `runtime.backend` for these actor specs (one spec for `single`)."""
    if runtime.backend == "single":
        return InlineActors(specs[0], policy)
    num_params = sum(p.numel() for p in policy.parameters())
    if runtime.backend == "local":
        from launch.actors.local import LocalActorPool
        return LocalActorPool(specs, num_params, runtime.chunk_steps, runtime.max_policy_lag, log=log)
    from launch.actors.ray_pool import RayActorPool
    return RayActorPool(specs, runtime.chunk_steps, runtime.max_policy_lag, runtime.ray_address,
                        tempfile.mkdtemp(prefix="polytask-ray-"), log=log)
