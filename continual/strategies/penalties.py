"""Quadratic penalties that anchor the protected networks' shared parameters to their values at
the end of the previous task (Continual World's `cl_reg_coef * sum(importance * (theta - theta*)^2)`):

    L2          importance: +1 per finished task (CW sums its all-ones weights task after task,
                so the pull grows with the number of tasks)
    EWC         importance = sum over finished tasks of each task's Fisher (Kirkpatrick et al. 2017)
    online EWC  importance = gamma * previous + this task's Fisher (Schwarz et al. 2018; not in CW)
    MAS         importance = sum over tasks of mean |d ||f(s)||^2 / d theta| (Aljundi et al. 2018)
    SI          importance = sum over tasks of omega / (delta^2 + xi), omega the path integral
                -sum g * (theta_after - theta_before) over the task's steps, g the gradient of the
                task loss alone (Zenke et al. 2017; not in CW)

Compared with Continual World's code (methods/regularization.py, l2.py, ewc.py, mas.py):
  - the same: shared parameters only (CW's `common_variables`: per-task heads excluded), the
    penalty added to the protected network's loss, importances summed over tasks, taken on the
    finished task's replay, the critic's Fisher not clipped, the actor's clipped below at 1e-5;
  - importances come from `importance_samples` distinct stored states (CW: 10 batches of 256
    drawn with replacement, 2,560 draws: the default here); with a memory (`sac.memory`), from
    windows of about as many steps in all, each step's output differentiated through its window
    (continual/strategies/importance.py);
  - CW also adds the (zero-weighted) critic terms to the actor's loss and vice versa; that
    changes nothing.
"""

from __future__ import annotations

import torch

from continual.strategies import importance
from continual.strategies.base import Strategy, TaskContext, importance_states


class AnchoredPenalty(Strategy):
    """coef * sum(importance * (theta - theta*)^2) per protected network, after the first task."""

    default_coef = 1.0
    boundary_free = False  # its end-of-task step needs a boundary (hidden boundaries: a detected one)
    needs_states = True  # importances from the finished task's states (L2 and SI need none)
    # network -> importance estimate from the finished task's states: (actor, obs, task) or (critic, obs, action, task)
    estimators: dict = {}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.anchor: dict[str, list[torch.Tensor]] = {}      # network -> theta* per shared parameter
        self.importance: dict[str, list[torch.Tensor]] = {}  # network -> importance per shared parameter

    def task_importance(self, network: str, ctx: TaskContext) -> list[torch.Tensor]:
        states = importance_states(ctx.replay, ctx.tasks, self.cfg.importance_samples, ctx.rng, self.learner.device)
        names = [name for name, _ in self.shared(network)]
        values = self.estimators[network](self.networks[network], states, names=names)
        return [values[name] for name in names]

    def combine(self, old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        return old + new

    def end_task(self, ctx: TaskContext) -> None:
        for name in self.networks:
            new = self.task_importance(name, ctx)
            old = self.importance.get(name)
            self.importance[name] = new if old is None else [self.combine(o, n) for o, n in zip(old, new)]
            self.anchor[name] = [p.detach().clone() for _, p in self.shared(name)]

    def penalty(self, network: str):
        if network not in self.anchor:
            return 0.0
        total = sum((w * (p - a).pow(2)).sum() for (_, p), a, w
                    in zip(self.shared(network), self.anchor[network], self.importance[network]))
        return self.coef(self.default_coef) * total

    def state_dict(self) -> dict:
        return {"anchor": self.anchor, "importance": self.importance}

    def load_state_dict(self, state: dict) -> None:
        self.anchor, self.importance = state["anchor"], state["importance"]


class L2(AnchoredPenalty):
    default_coef = 1e5
    needs_states = False

    def task_importance(self, network, ctx):
        return [torch.ones_like(p) for _, p in self.shared(network)]


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
    """The path integral omega is accumulated online by the gradient hooks: observe_gradients
    sees the task loss's gradient before the penalty's is added (Zenke et al.'s unregularized
    gradient), after_step the parameter change the whole step made. The default coefficient 10
    is ours (Zenke et al. tuned c per benchmark; 1 did not protect the trunk on the pointmass
    sequence once the per-task heads are free)."""

    default_coef = 10.0
    needs_states = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.omega: dict[str, list[torch.Tensor]] = {}
        self.task_start: dict[str, list[torch.Tensor]] = {}
        self._grads: dict[str, list[torch.Tensor]] = {}
        self._before: dict[str, list[torch.Tensor]] = {}

    def start_task(self, ctx):
        if ctx.resumed and self.omega:
            return
        for name in self.networks:
            self.omega[name] = [torch.zeros_like(p) for _, p in self.shared(name)]
            self.task_start[name] = [p.detach().clone() for _, p in self.shared(name)]

    def observe_gradients(self, network):
        if network in self.networks:
            params = [p for _, p in self.shared(network)]
            self._grads[network] = [torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in params]
            self._before[network] = [p.detach().clone() for p in params]

    def after_step(self, networks):
        for network in networks:
            if network in self.networks and network in self._grads:
                for w, g, before, (_, p) in zip(self.omega[network], self._grads[network], self._before[network],
                                                self.shared(network)):
                    w.sub_(g * (p.detach() - before))

    def task_importance(self, network, ctx):
        xi = self.cfg.si_xi
        return [(w / ((p.detach() - s).pow(2) + xi)).clamp_min(0)
                for w, (_, p), s in zip(self.omega[network], self.shared(network), self.task_start[network])]

    def state_dict(self):
        return {**super().state_dict(), "omega": self.omega, "task_start": self.task_start}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.omega, self.task_start = state["omega"], state["task_start"]
