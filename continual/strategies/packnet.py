"""PackNet (Mallya & Lazebnik 2018), as in Continual World (methods/packnet.py).

Managed parameters: the protected networks' shared parameters (`continual.regularize`, CW: the
actor). Per-task heads, and every network PackNet does not protect, are never pruned or frozen
(CW: "if there are more heads, do not touch them").

    owner[w] = k + 1: kept, and frozen, by stage k;  0: free, the current stage trains it.

Stage k trains the free weights for its env-step budget. At its end (not for the last stage):
  1. prune: of the free entries of each weight matrix, sorted by magnitude, the value at index
     int(n * left / (left + 1)) is the threshold (left = stages still to come); entries above it
     are kept by stage k, the others are zeroed and stay free for later stages (CW's rule);
     biases and normalization parameters are kept whole by the first stage (CW freezes them
     from then on);
  2. reset the optimizer, retrain `packnet_retrain_steps` learner updates on the stage's replay
     with only the kept weights (and the unmanaged heads/networks) trainable, reset the optimizer;
  3. then the stage's final evaluation runs.
The last stage keeps every weight still free (CW does not prune after the last task).
Frozen means exact: gradients are masked and, after each optimizer step, every weight the stage
may not train is restored bit for bit (Adam's momentum would move it otherwise).
Evaluation: a task of finished stage k sees the weights kept by stages <= k, the others zeroed
(CW's `_set_view`), i.e. exactly the network it ended its stage with.

Deviation from CW's published runs: its PackNet script clips gradients to a global norm of
2e-5; polytask does not clip (CW's TensorFlow code clips after the masking; Adam makes the
update nearly scale-free, so the clipping mainly changes the effective step size).
"""

from __future__ import annotations

import torch

from continual.strategies.base import Strategy, TaskContext


def prunable(name: str, param: torch.Tensor) -> bool:
    return name.endswith("weight") and "norm" not in name and param.dim() >= 2


class PackNet(Strategy):
    boundary_free = False
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.owner = {net: [torch.zeros_like(p, dtype=torch.int16) for _, p in self.shared(net)]
                      for net in self.networks}
        self.trainable: dict[str, list[torch.Tensor]] = {}
        self.snapshot: dict[str, list[torch.Tensor]] = {}

    def _freeze_all_but(self, trainable: dict[str, list[torch.Tensor]]) -> None:
        self.trainable = trainable
        self.snapshot = {net: [p.detach().clone() for _, p in self.shared(net)] for net in self.networks}

    def start_task(self, ctx: TaskContext) -> None:
        if ctx.resumed and self.trainable:
            return
        self._freeze_all_but({net: [o == 0 for o in owners] for net, owners in self.owner.items()})

    def before_step(self, networks) -> None:
        for net in self.networks.keys() & set(networks):
            for (_, p), trainable in zip(self.shared(net), self.trainable[net]):
                if p.grad is not None:
                    p.grad.mul_(trainable)

    @torch.no_grad()
    def after_step(self, networks) -> None:
        for net in self.networks.keys() & set(networks):
            for (_, p), trainable, frozen_value in zip(self.shared(net), self.trainable[net], self.snapshot[net]):
                p.copy_(torch.where(trainable, p, frozen_value))

    def restore_frozen(self) -> None:
        if self.trainable:
            self.after_step(tuple(self.networks))

    @torch.no_grad()
    def prune(self, ctx: TaskContext) -> None:
        """Keep the free weight entries above CW's magnitude threshold (all free biases and norms
        in the first stage; everything free in the last stage); zero the other free entries."""
        left = ctx.num_stages - ctx.stage - 1
        stage_id = ctx.stage + 1
        for net in self.networks:
            for (name, p), owner in zip(self.shared(net), self.owner[net]):
                free = owner == 0
                if left and prunable(name, p) and free.any():
                    values = p.abs()[free].sort().values
                    threshold = values[int(len(values) * left / (left + 1))]
                    kept = free & (p.abs() > threshold)
                    p.masked_fill_(free & ~kept, 0.0)
                else:
                    kept = free
                owner.masked_fill_(kept, stage_id)

    def end_task(self, ctx: TaskContext) -> None:
        self.prune(ctx)
        if ctx.stage < ctx.num_stages - 1 and self.cfg.packnet_retrain_steps:
            stage_id = ctx.stage + 1
            self._freeze_all_but({net: [(o == stage_id) & prunable(name, p)
                                        for (name, p), o in zip(self.shared(net), self.owner[net])]
                                  for net in self.networks})
            self.learner.reset_optimizers()
            ctx.train(self.cfg.packnet_retrain_steps)
            self.learner.reset_optimizers()
        self._freeze_all_but({net: [torch.zeros_like(o, dtype=torch.bool) for o in owners]
                              for net, owners in self.owner.items()})

    def eval_weights(self, flat: torch.Tensor, stage: int) -> torch.Tensor:
        """Row t: the policy weights task t ended its stage with (managed weights kept by stages
        <= its stage, the rest zeroed; unmanaged ones as they are), for tasks of finished stages;
        the current weights for the others."""
        if "actor" not in self.owner:
            return flat
        owner_of = {id(p): o for (_, p), o in zip(self.shared("actor"), self.owner["actor"])}
        # -1: not managed by PackNet (a per-task head): always visible
        owner = torch.cat([owner_of[id(p)].flatten() if id(p) in owner_of
                           else torch.full((p.numel(),), -1, dtype=torch.int16, device=p.device)
                           for p in self.learner.actor.parameters()]).to(flat.device)
        rows = []
        for task_stage in self.task_stage:
            if task_stage < stage:
                rows.append(flat * ((owner == -1) | ((owner >= 1) & (owner <= task_stage + 1))))
            else:
                rows.append(flat)
        return torch.stack(rows)

    def state_dict(self) -> dict:
        return {"owner": self.owner, "trainable": self.trainable, "snapshot": self.snapshot}

    def load_state_dict(self, state: dict) -> None:
        self.owner, self.trainable, self.snapshot = state["owner"], state["trainable"], state["snapshot"]
