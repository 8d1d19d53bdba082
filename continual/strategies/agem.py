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

With a memory (`sac.memory`), the kept memory is windows of steps (about `memory_per_task` steps of
each task in windows of sac.memory_sequence, padded to that length) and a reference batch is about
`agem_batch_size` steps of windows, the loss their masked mean (agents/sac/recurrent.py); with 3RL's
context windows, transitions with their windows.
"""

from __future__ import annotations

import torch

from agents import seeding
from agents.context import ContextBatch
from agents.replay import Batch
from agents.sequence_replay import SequenceBatch, SequenceReplay
from continual.strategies.base import Strategy, TaskContext, sample_windows


class AGEM(Strategy):
    needs_task_ids = True  # per-task memories / embeddings, read by task id
    default_networks = "both"  # CW's published runs regularize the critic too
    needs_states = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.memory: dict[str, torch.Tensor] = {}  # field -> [N, ...], all finished tasks' transitions
        self.rng = seeding.rng(self.seed, "agem-memory")

    def end_task(self, ctx: TaskContext) -> None:
        for task in ctx.tasks:
            if isinstance(ctx.replay, SequenceReplay):  # windows (or context transitions), whole
                new = sample_windows(ctx.replay, [task], self.cfg.memory_per_task, self.rng)._asdict()
                if "mask" in new:  # windows padded to the full length, to join the others
                    pad = ctx.replay.length - new["mask"].shape[1]
                    new = {f: v if v.dim() < 2 or f == "task" else torch.nn.functional.pad(
                        v, (0, 0) * (v.dim() - 2) + (0, pad)) for f, v in new.items()}
            else:
                size = int(ctx.replay.size[task])
                rows = ctx.replay.rows(task, self.rng.choice(size, min(self.cfg.memory_per_task, size), replace=False))
                new = {f: torch.from_numpy(v) for f, v in rows.items()}
                new["task"] = torch.full((len(new["obs"]),), task, dtype=torch.int64)
            self.memory = {f: torch.cat([self.memory[f], v]) if f in self.memory else v for f, v in new.items()}

    def _memory_batch(self):
        kind = SequenceBatch if "mask" in self.memory else ContextBatch if "history" in self.memory else Batch
        steps = self.memory["mask"].shape[1] if kind is SequenceBatch else 1
        size = len(self.memory["task"])
        count = min(max(1, -(-self.cfg.agem_batch_size // steps)), size)
        rows = torch.from_numpy(self.rng.choice(size, count, replace=False))
        batch = {f: self.memory[f][rows] for f in kind._fields}
        if kind is SequenceBatch:  # cut to the longest real window, as sequence replay's batches
            length = int(batch["mask"].sum(dim=1).max())
            batch = {f: v[:, :length] if v.dim() >= 2 and f != "task" else v for f, v in batch.items()}
        return kind(*(batch[f].to(self.learner.device) for f in kind._fields))

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
