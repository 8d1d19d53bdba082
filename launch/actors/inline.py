"""--backend single: no actor processes; the learner's loop steps the envs itself."""

from __future__ import annotations

import torch

from launch.actors.actor import Actor, ActorSpec, Chunk


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
