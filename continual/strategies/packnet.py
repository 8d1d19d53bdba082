"""PackNet (Mallya & Lazebnik 2018), as in Continual World: each stage trains the free weights,
then keeps the largest-magnitude fraction 1/(left + 1) of those it trained (left = stages still
to come), zeroes the rest (free again for later stages) and retrains the kept ones for the last
`packnet_retrain` fraction of the stage. Kept weights then belong to the stage and never change.

  owner[p] = 0 (free) or k + 1 (kept by stage k), per weight element
  - Only weights the stage actually trained (got a non-zero gradient) are candidates; free
    weights it never trained (a multi-head's other heads, other tasks' embeddings, a dead unit's
    weights) are zeroed and stay free, so that none of them can change the stage's tasks later.
  - Biases and normalization parameters are not pruned: the stage keeps all it trained (so the
    first stage owns the shared ones, as in PackNet).
  - Frozen means exact: gradients are masked and, after each optimizer step, every weight the
    stage may not train is restored bit for bit (Adam's momentum would move it otherwise).
  - A task of stage k is evaluated with the weights owned by stages <= k only (the rest zeroed):
    exactly the network it ended its stage with.
"""

from __future__ import annotations

import torch

from continual.strategies.base import Strategy, TaskContext


def prunable(name: str, param: torch.Tensor) -> bool:
    return name.endswith("weight") and "norm" not in name and param.dim() >= 2


class PackNet(Strategy):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.owner = {net: [torch.zeros_like(p, dtype=torch.int16) for p in m.parameters()]
                      for net, m in self.networks.items()}
        self.trainable: dict[str, list[torch.Tensor]] = {}
        self.touched: dict[str, list[torch.Tensor]] = {}
        self.snapshot: dict[str, list[torch.Tensor]] = {}
        self.pruned = False

    def _freeze_all_but(self, trainable: dict[str, list[torch.Tensor]]) -> None:
        self.trainable = trainable
        self.snapshot = {net: [p.detach().clone() for p in m.parameters()] for net, m in self.networks.items()}

    def start_task(self, ctx: TaskContext) -> None:
        if ctx.resumed and self.trainable:
            return
        self.pruned = False
        self.touched = {net: [torch.zeros_like(o, dtype=torch.bool) for o in owners] for net, owners in self.owner.items()}
        self._freeze_all_but({net: [o == 0 for o in owners] for net, owners in self.owner.items()})

    def before_step(self, network: str) -> None:
        if network not in self.networks:
            return
        for p, trainable, touched in zip(self.networks[network].parameters(), self.trainable[network],
                                         self.touched[network]):
            if p.grad is not None:
                touched |= p.grad != 0
                p.grad.mul_(trainable)

    @torch.no_grad()
    def after_step(self, network: str) -> None:
        if network not in self.networks:
            return
        for p, trainable, frozen_value in zip(self.networks[network].parameters(), self.trainable[network],
                                              self.snapshot[network]):
            p.copy_(torch.where(trainable, p, frozen_value))

    def on_progress(self, step_in_stage: int, ctx: TaskContext) -> None:
        if not self.pruned and step_in_stage >= ctx.stage_steps * (1 - self.cfg.packnet_retrain):
            self.prune(ctx)

    @torch.no_grad()
    def prune(self, ctx: TaskContext) -> None:
        """Keep the top 1/(left + 1) by magnitude of the weights this stage trained; zero the rest."""
        keep_fraction = 1.0 / (ctx.num_stages - ctx.stage)  # left = num_stages - stage - 1
        stage_id = ctx.stage + 1
        for net, module in self.networks.items():
            for (name, p), owner, touched in zip(module.named_parameters(), self.owner[net], self.touched[net]):
                p.masked_fill_((owner == 0) & ~touched, 0.0)
                candidates = (owner == 0) & touched
                count = int(candidates.sum())
                if count == 0:
                    continue
                if prunable(name, p):
                    keep = max(1, round(keep_fraction * count))
                    threshold = p.abs()[candidates].topk(keep).values[-1]
                    kept = candidates & (p.abs() >= threshold)
                    p.masked_fill_(candidates & ~kept, 0.0)
                else:
                    kept = candidates
                owner.masked_fill_(kept, stage_id)
        self._freeze_all_but({net: [o == stage_id for o in owners] for net, owners in self.owner.items()})
        self.pruned = True

    def end_task(self, ctx: TaskContext) -> None:
        if not self.pruned:  # no retraining phase (packnet_retrain = 0 or a very short stage)
            self.prune(ctx)
        self._freeze_all_but({net: [torch.zeros_like(o, dtype=torch.bool) for o in owners]
                              for net, owners in self.owner.items()})

    def eval_weights(self, flat: torch.Tensor, stage: int) -> torch.Tensor:
        """Row t: the policy weights task t ended its stage with (owners <= its stage), for tasks of
        finished stages; the current weights for the others."""
        if "actor" not in self.owner:
            return flat
        owner = torch.cat([o.flatten() for o in self.owner["actor"]]).to(flat.device)
        rows = []
        for task_stage in self.task_stage:
            if task_stage < stage:
                rows.append(flat * ((owner >= 1) & (owner <= task_stage + 1)))
            else:
                rows.append(flat)
        return torch.stack(rows)

    def state_dict(self) -> dict:
        return {"owner": self.owner, "trainable": self.trainable, "touched": self.touched,
                "snapshot": self.snapshot, "pruned": self.pruned}

    def load_state_dict(self, state: dict) -> None:
        self.owner, self.trainable, self.touched = state["owner"], state["trainable"], state["touched"]
        self.snapshot, self.pruned = state["snapshot"], bool(state["pruned"])
