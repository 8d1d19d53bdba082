"""The weights step of the data flow: learner -> actors. The learner's policy, flattened, handed to
the actor source by version number (local actors: one shared-memory vector, launch/actors/local.py;
Ray actors: passed with a collect call, launch/actors/ray_pool.py; the single backend: shared module)."""

from __future__ import annotations

import torch


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
