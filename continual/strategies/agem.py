"""A-GEM (Chaudhry et al. 2019), as in Continual World (methods/agem.py).

An episodic memory keeps `memory_per_task` transitions of every finished task. Before the
optimizer steps, the gradient g of the current SAC losses is compared with the gradient g_ref
of the same losses on `agem_batch_size` transitions drawn from the memory (all earlier tasks
pooled, without replacement); if they conflict (g . g_ref < 0), g is projected:

    g <- g - (g . g_ref / ||g_ref||^2) g_ref

`continual.agem_projection`:
  joint     (CW's) one dot product and one reference norm over the actor's and the critic's
            gradients together; this needs both gradients before either step, so the learner
            runs in simultaneous update order (config.py sets sac.update_order for it);
  separate  each protected network projected on its own reference gradient.

Compared with CW: the protected networks default to both (CW's published A-GEM runs set
regularize_critic=True); the kept transitions are drawn without replacement (CW: with);
the whole network's gradients take part (CW likewise: the reference gradient includes the heads).
"""

from __future__ import annotations

import torch

from agents import seeding
from agents.replay import Batch
from continual.strategies.base import Strategy, TaskContext


class AGEM(Strategy):
    default_networks = "both"  # CW's published runs regularize the critic too
    needs_states = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.memory: dict[str, torch.Tensor] = {}  # field -> [N, ...], all finished tasks' transitions
        self.rng = seeding.rng(self.seed, "agem-memory")

    def end_task(self, ctx: TaskContext) -> None:
        for task in ctx.tasks:
            size = int(ctx.replay.size[task])
            rows = ctx.replay.rows(task, self.rng.choice(size, min(self.cfg.memory_per_task, size), replace=False))
            new = {f: torch.from_numpy(v) for f, v in rows.items()}
            new["task"] = torch.full((len(new["obs"]),), task, dtype=torch.int64)
            self.memory = {f: torch.cat([self.memory[f], v]) if f in self.memory else v for f, v in new.items()}

    def _memory_batch(self) -> Batch:
        size = len(self.memory["task"])
        rows = torch.from_numpy(self.rng.choice(size, min(self.cfg.agem_batch_size, size), replace=False))
        return Batch(*(self.memory[f][rows].to(self.learner.device) for f in (*Batch._fields[:-1], "task")))

    def _reference(self, networks: list[str]) -> list[list[torch.Tensor]]:
        """Per network, the gradient of its SAC loss on a memory batch (current weights)."""
        batch = self._memory_batch()
        out = []
        for net in networks:
            params = self.learner.params[net]
            losses = self.learner.critic_loss(batch)[0] if net == "critic" else self.learner.actor_loss(batch)[0]
            loss = losses.mean()
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            out.append([torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)])
        return out

    @staticmethod
    def _project(grads: list[torch.Tensor], reference: list[torch.Tensor]) -> None:
        """A-GEM's projection of `grads` (in place) on one reference, over all tensors together."""
        dot = sum((g * r).sum() for g, r in zip(grads, reference))
        if dot < 0:
            scale = dot / sum(r.pow(2).sum() for r in reference).clamp_min(1e-12)
            for g, r in zip(grads, reference):
                g.sub_(scale * r)

    def before_step(self, networks) -> None:
        present = [net for net in networks if net in self.networks]
        if not present or not self.memory:
            return
        for net in present:  # a parameter the loss did not reach has no gradient: a zero one
            for p in self.learner.params[net]:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
        references = self._reference(present)
        grads = [[p.grad for p in self.learner.params[net]] for net in present]
        if self.cfg.agem_projection == "joint":
            self._project([g for gs in grads for g in gs], [r for rs in references for r in rs])
        else:
            for g, r in zip(grads, references):
                self._project(g, r)

    def state_dict(self) -> dict:
        return {"memory": self.memory, "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.memory = state["memory"]
        self.rng.bit_generator.state = state["rng"]
