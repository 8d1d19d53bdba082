"""Quadratic penalties that anchor the protected networks to their weights at the end of the
previous task (Continual World's `cl_reg_coef * sum(importance * (theta - theta*)^2)`):

    L2          importance 1 everywhere
    EWC         importance = sum over finished tasks of each task's Fisher (Kirkpatrick et al. 2017)
    online EWC  importance = gamma * previous + this task's Fisher (Schwarz et al. 2018)
    MAS         importance = sum over tasks of mean |d ||f(s)||^2 / d theta| (Aljundi et al. 2018)
    SI          importance = sum over tasks of omega / (delta^2 + xi), omega the path integral
                -sum g * (theta_after - theta_before) over the task's steps (Zenke et al. 2017)

Importances are computed on `importance_samples` states of the finished task's replay.
"""

from __future__ import annotations

import torch

from continual.strategies import importance
from continual.strategies.base import Strategy, TaskContext, sample_states


class AnchoredPenalty(Strategy):
    """coef * sum(importance * (theta - theta*)^2) per protected network, after the first task."""

    default_coef = 1.0
    # network -> importance estimate from the finished task's states: (actor, obs, task) or (critic, obs, action, task)
    estimators: dict = {}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.anchor: dict[str, list[torch.Tensor]] = {}      # network -> theta* per parameter
        self.importance: dict[str, list[torch.Tensor]] = {}  # network -> importance per parameter

    def task_importance(self, network: str, ctx: TaskContext) -> list[torch.Tensor]:
        obs, action, task = self.states(ctx)
        module = self.networks[network]
        inputs = (obs, task) if network == "actor" else (obs, action, task)
        values = self.estimators[network](module, *inputs)
        return [values[name] for name, _ in module.named_parameters()]

    def combine(self, old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        return old + new

    def end_task(self, ctx: TaskContext) -> None:
        for name, module in self.networks.items():
            new = self.task_importance(name, ctx)
            old = self.importance.get(name)
            self.importance[name] = new if old is None else [self.combine(o, n) for o, n in zip(old, new)]
            self.anchor[name] = [p.detach().clone() for p in module.parameters()]

    def penalty(self, network: str):
        if network not in self.anchor:
            return 0.0
        params = self.networks[network].parameters()
        total = sum((w * (p - a).pow(2)).sum()
                    for p, a, w in zip(params, self.anchor[network], self.importance[network]))
        return self.coef(self.default_coef) * total

    def states(self, ctx: TaskContext):
        """obs, action, task of up to importance_samples transitions, spread over the stage's tasks."""
        per_task = max(1, self.cfg.importance_samples // len(ctx.tasks))
        parts = [sample_states(ctx.replay, t, per_task, ctx.rng) for t in ctx.tasks]
        device = self.learner.device
        return tuple(torch.cat(column).to(device) for column in zip(*parts))

    def state_dict(self) -> dict:
        return {"anchor": self.anchor, "importance": self.importance}

    def load_state_dict(self, state: dict) -> None:
        self.anchor, self.importance = state["anchor"], state["importance"]


class L2(AnchoredPenalty):
    default_coef = 1e5

    def task_importance(self, network, ctx):
        return [torch.ones_like(p) for p in self.networks[network].parameters()]

    def combine(self, old, new):
        return old  # stays 1


class EWC(AnchoredPenalty):
    default_coef = 1e4
    estimators = {"actor": importance.actor_fisher, "critic": importance.critic_fisher}


class OnlineEWC(EWC):
    def combine(self, old, new):
        return self.cfg.online_ewc_gamma * old + new


class MAS(AnchoredPenalty):
    default_coef = 1e4
    estimators = {"actor": importance.actor_mas, "critic": importance.critic_mas}


class SI(AnchoredPenalty):
    """The path integral omega is accumulated online by the gradient hooks."""

    default_coef = 1.0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.omega: dict[str, list[torch.Tensor]] = {}
        self.task_start: dict[str, list[torch.Tensor]] = {}
        self._grads: dict[str, list[torch.Tensor]] = {}
        self._before: dict[str, list[torch.Tensor]] = {}

    def start_task(self, ctx):
        if ctx.resumed and self.omega:
            return
        for name, module in self.networks.items():
            self.omega[name] = [torch.zeros_like(p) for p in module.parameters()]
            self.task_start[name] = [p.detach().clone() for p in module.parameters()]

    def before_step(self, network):
        if network in self.networks:
            params = list(self.networks[network].parameters())
            self._grads[network] = [torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in params]
            self._before[network] = [p.detach().clone() for p in params]

    def after_step(self, network):
        if network in self.networks:
            for w, g, before, p in zip(self.omega[network], self._grads[network], self._before[network],
                                       self.networks[network].parameters()):
                w.sub_(g * (p.detach() - before))

    def task_importance(self, network, ctx):
        xi = self.cfg.si_xi
        params = self.networks[network].parameters()
        return [(w / ((p.detach() - s).pow(2) + xi)).clamp_min(0)
                for w, p, s in zip(self.omega[network], params, self.task_start[network])]

    def state_dict(self):
        return {**super().state_dict(), "omega": self.omega, "task_start": self.task_start}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.omega, self.task_start = state["omega"], state["task_start"]
