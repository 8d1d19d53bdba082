"""Local SGD and the Quadratic Synchronization Rule: learner ranks that communicate less.

`--sync step` (launch/distributed/ranks.py: EveryStepSync) all-reduces every network's gradient at
every optimizer step. `--sync local` lets each rank take H optimizer steps on its own shard of
the tasks, then averages the ranks' parameters (Stich 2019's local SGD; with Adam, "local Adam"):

    every H updates, per network (actor, critic, temperatures):  theta <- mean over ranks of theta

`--sync qsr` chooses H anew at each average from the learning rate the next steps will use
(Gu et al., ICLR 2024, "A Quadratic Synchronization Rule for Distributed Deep Learning"):

    H = max(H_min, floor((alpha / lr)^2)),  at most the updates left in the schedule, at least 1

so that H grows as the rate decays (sac.lr_schedule: cosine or linear). With a constant rate QSR
is local SGD with the fixed period max(H_min, floor((alpha / lr)^2)). `lr` is the critic's
scheduled rate (every network follows the same factor, agents/sac/lr_schedule.py). During the
learning-rate warm-up (`sac.lr_warmup_updates`) H is H_min, as in the reference (hmgxr128/QSR
localopt.py: `if self.step_ctr < self.warmup_steps or self.alpha == 0: self.h = self.init_h`;
its init_h is our H_min); a period that starts in the warm-up ends at H_min updates even if
the warm-up ends inside it, as the reference's does.

The average is torch's own `torch.distributed.algorithms.model_averaging.utils.average_parameters`
(one flattened all-reduce per call) on explicit parameter lists: `PeriodicModelAverager` and
`average_parameters_or_parameter_groups` skip parameters whose `.grad` is None, so a rank whose
batch missed a hook's head would send a shorter buffer than its peers and the all-reduce would
hang or mix up tensors. One all-reduce per network per average, as `step` has one per network
per update: `local` with period H makes 1/H of `step`'s all-reduces.

What is averaged, and why:
  * every parameter each optimizer trains (the networks', their hooks' own: auxiliary heads);
  * the target critics, in the critic's all-reduce: Polyak averaging is linear, so the average
    of the ranks' targets is the target the averaged critic trajectory would have produced;
    likewise every tensor a hook declares (`synced_tensors`: PVN's target heads);
  * Adam's moments only with `sync.average_optimizer_state=true`. By default each rank keeps its
    own moments, as the QSR reference does with Local AdamW ("local gradient methods can lead
    to different optimizer states across workers"): each rank's checkpoint then keeps its own
    optimizer state (launch/loop/trainer.py), and a resumed rank continues with its moments.
Not averaged: the balancers' learned task weights (each rank weights only its own tasks'
losses) and replay's reward statistics (each rank's own tasks). A gradient-combining balancer
(PCGrad, CAGrad, ...) combines the rank's own tasks' gradients between averages (`gather_rows`
is local): gathering every task's rows each step would cost the communication local SGD saves.

Uneven shards (3 tasks on 2 ranks): the average is weighted by each rank's share of the global
batch (its task count / all tasks), as `step` weights gradients: with H = 1 and plain SGD,
sum_r share_r (theta - lr g_r) = theta - lr g, the task-balanced mean's step. (Each tensor is
scaled by share x world before torch's plain average; with even shards nothing is scaled.)

Per-task parameters take their owner's value. A task's slice of a per-task tensor (its head's
columns, its temperature, its task embedding, CARE's and MOORE's task parameters: agents/
networks.py `task_axes`) is trained by the one rank whose shard holds the task; every other rank's
copy gets no gradient and stays put. A plain average would keep 1/W of the owner's steps (a head
learning at half speed on 2 ranks); instead each slice is taken from its owner, which is the
single learner's update for that task (its Adam moments, when averaged, likewise). So a
per-task head moves as far on W ranks as on one (tests/test_sync.py).

Sync points: `sync_point` (before every checkpoint, evaluation and the end of the run) averages
if any local step was taken since the last average, so what is saved and evaluated is the
averaged model; the period then restarts (a checkpoint is always written right after an
average, so a resumed run continues exactly: no counter to restore).
"""

from __future__ import annotations

from collections import deque

import torch
import torch.distributed as dist
from torch.distributed.algorithms.model_averaging.utils import average_parameters

from agents.hooks import Synchronizer
from agents.networks import task_axes


def qsr_period(lr: float, alpha: float, period_min: int, updates_left: int) -> int:
    """Gu et al.'s H: max(H_min, floor((alpha / lr)^2)), at most the updates left (>= 1)."""
    quadratic = int((alpha / lr) ** 2) if lr > 0 else updates_left
    return max(min(max(quadratic, period_min), updates_left), 1)


def network_tensors(learner, with_optimizer_state: bool) -> dict[str, list[torch.Tensor]]:
    """Per network, every tensor a local-SGD average covers (see the module docstring)."""
    groups = {"actor": list(learner.params["actor"]),
              "critic": list(learner.params["critic"]) + list(learner.critic_target.parameters()),
              "alpha": list(learner.params["alpha"])}
    for network in ("actor", "critic"):  # hooks' frozen tensors and targets (trained ones are in params)
        seen = {id(t) for t in groups[network]}
        groups[network] += [t for t in learner.hook_tensors[network].values() if id(t) not in seen]
    if with_optimizer_state:
        for network, tensors in groups.items():
            for state in learner.optimizers[network].state.values():
                tensors += [state[k] for k in ("exp_avg", "exp_avg_sq") if k in state]
    return groups


def owner_masks(learner, own_tasks: list[int]) -> dict[int, torch.Tensor]:
    """{id(tensor): mask} for every per-task tensor (and its Adam moments): 1 on the slices of
    this rank's tasks, 0 elsewhere, shaped to broadcast against the tensor."""
    masks: dict[int, torch.Tensor] = {}

    def add(tensor: torch.Tensor, axis: int, block: int) -> None:
        mask = torch.zeros(tensor.shape[axis], dtype=tensor.dtype, device=tensor.device)
        for task in own_tasks:
            mask[task * block:(task + 1) * block] = 1
        shape = [1] * tensor.dim()
        shape[axis] = -1
        masks[id(tensor)] = mask.view(shape)

    for module in (learner.actor, learner.critic, learner.critic_target):
        params = dict(module.named_parameters())
        for name, (axis, block) in task_axes(module).items():
            add(params[name], axis, block)
    if not learner.cfg.shared_temperature:
        add(learner.log_alpha, 0, 1)
    for optimizer in learner.optimizers.values():
        for param, state in optimizer.state.items():
            if id(param) in masks:
                masks.update({id(state[k]): masks[id(param)] for k in ("exp_avg", "exp_avg_sq") if k in state})
    return masks


class LocalSGDSync(Synchronizer):
    """No communication during an update; every `period` updates (qsr: recomputed at each
    average) the ranks' parameters are averaged. Counts what it sends."""

    def __init__(self, world: int, share: float, period: int, qsr_alpha: float = 0.0,
                 average_optimizer_state: bool = False, own_tasks: list[int] | None = None):
        """share: this rank's fraction of the global batch; period: H (local), or H_min (qsr:
        qsr_alpha > 0); own_tasks: this rank's tasks (None: every task, one rank)."""
        self.world, self.share, self.base_period, self.qsr_alpha = world, share, period, qsr_alpha
        if world > 1 and own_tasks is None:
            raise ValueError("LocalSGDSync on several ranks needs the rank's own tasks")
        self.own_tasks = own_tasks
        self.average_optimizer_state = average_optimizer_state
        self.local_optimizer_state = not average_optimizer_state  # checkpoints keep every rank's
        self.period = None  # set at the first update (qsr: from its rate)
        self.since = 0       # updates since the last average
        self.allreduces = self.bytes_sent = self.averages = 0
        self.recent = deque(maxlen=4096)  # (updates done at an average, the period chosen after it)

    def next_period(self, learner, start: int) -> int:
        """H for the period whose first update has index `start` (qsr: from that update's rate;
        during the learning-rate warm-up H_min, as the reference's `if step_ctr < warmup_steps:
        h = init_h`: the tiny warm-up rates would give an H as long as the schedule)."""
        if not self.qsr_alpha or start < learner.cfg.lr_warmup_updates:
            return self.base_period
        lr = learner.cfg.critic_lr * learner.lr_factor(start)
        # Capped by the updates left in the schedule; past its end (a run extended with --steps) uncapped.
        left = learner.schedule_updates - start if start < learner.schedule_updates else 1 << 62
        return qsr_period(lr, self.qsr_alpha, self.base_period, left)

    def after_update(self, learner) -> None:
        if self.period is None:  # the first update of the run (or of a resumed run)
            self.period = self.next_period(learner, learner.num_updates - 1)
        self.since += 1
        if self.since >= self.period:
            self.average(learner)

    def sync_point(self, learner) -> None:
        if self.since:
            self.average(learner)

    def average(self, learner) -> None:
        """Every rank's networks (and, if set, Adam moments) replaced by their mean over ranks."""
        if self.world > 1:
            masks = owner_masks(learner, self.own_tasks)
            for tensors in network_tensors(learner, self.average_optimizer_state).values():
                shared = [t for t in tensors if id(t) not in masks]
                with torch.no_grad():
                    for t in tensors:  # per-task slices: the owner's value (the sum of masked copies)
                        if id(t) in masks:
                            t.mul_(masks[id(t)] * self.world)
                    if shared and abs(self.share * self.world - 1.0) > 1e-12:  # uneven shards: by batch share
                        torch._foreach_mul_(shared, self.share * self.world)
                average_parameters(iter(tensors), dist.group.WORLD)
                self.allreduces += 1
                self.bytes_sent += sum(t.numel() * t.element_size() for t in tensors)
        self.averages += 1
        self.since = 0
        self.period = self.next_period(learner, learner.num_updates)
        self.recent.append((learner.num_updates, self.period))

    def stats(self) -> dict:
        return {"allreduces": self.allreduces, "bytes_sent": self.bytes_sent, "averages": self.averages,
                "period": self.period}
