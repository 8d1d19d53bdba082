"""A-GEM (Chaudhry et al. 2019), as in Continual World: an episodic memory keeps
`memory_per_task` transitions of every finished task; before each optimizer step of a protected
network, the gradient g of the current loss is compared with the gradient g_ref of the same SAC
loss on a memory batch, and if they conflict (g . g_ref < 0) g is projected:

    g <- g - (g . g_ref / ||g_ref||^2) g_ref
"""

from __future__ import annotations

import numpy as np
import torch

from agents.replay import Batch
from continual.strategies.base import Strategy, TaskContext


class AGEM(Strategy):
    default_networks = "both"  # the actor's reference loss is only meaningful with the earlier tasks' critic kept
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.memory: dict[str, torch.Tensor] = {}  # field -> [N, ...], all finished tasks' transitions
        self.rng = np.random.default_rng(0)

    def end_task(self, ctx: TaskContext) -> None:
        replay = ctx.replay
        for task in ctx.tasks:
            size = int(replay.size[task])
            rows = ctx.rng.choice(size, min(self.cfg.memory_per_task, size), replace=False)
            new = {f: torch.from_numpy(getattr(replay, f)[task, rows].copy()) for f in replay.FIELDS}
            new["task"] = torch.full((len(rows),), task, dtype=torch.int64)
            self.memory = {f: torch.cat([self.memory[f], v]) if f in self.memory else v for f, v in new.items()}

    def _memory_batch(self) -> Batch:
        size = self.learner.cfg.batch_size_per_task
        rows = torch.from_numpy(self.rng.integers(len(self.memory["task"]), size=size))
        return Batch(*(self.memory[f][rows].to(self.learner.device) for f in (*Batch._fields[:-1], "task")))

    def before_step(self, network: str) -> None:
        if network not in self.networks or not self.memory:
            return
        params = [p for p in self.networks[network].parameters() if p.grad is not None]
        batch = self._memory_batch()
        loss = self.learner.critic_loss(batch)[0] if network == "critic" else self.learner.actor_loss(batch)[0]
        reference = torch.autograd.grad(loss, params, allow_unused=True)
        reference = [torch.zeros_like(p) if r is None else r for p, r in zip(params, reference)]
        dot = sum((p.grad * r).sum() for p, r in zip(params, reference))
        if dot < 0:
            scale = dot / sum(r.pow(2).sum() for r in reference).clamp_min(1e-12)
            for p, r in zip(params, reference):
                p.grad.sub_(scale * r)

    def state_dict(self) -> dict:
        return {"memory": self.memory, "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.memory = state["memory"]
        self.rng.bit_generator.state = state["rng"]
