"""Loss-weighting balancers: the gradient of a weighted combination of the task losses, with the
weights learned alongside. Weights are kept per task of the whole suite (a continual stage
trains a subset) and indexed by the batch's tasks.

Uncertainty weighting (Kendall et al. 2018), as in FAMO's Meta-World code (mtrl_files/uw.py):
    loss = mean_i 0.5 (exp(-s_i) L_i + s_i),   s_i learned (init 0) by its own Adam (lr balance.lr)
  At its optimum s_i = log L_i. Deviations: the mean over tasks instead of their sum (a constant
  factor T, so that penalties and auxiliary losses keep their weight relative to the task
  losses); the critic only by default (uw.py also weights the actor's per-task losses, but SAC's
  actor loss takes any sign, and for L_i < 0 the objective has no minimum in s_i); lr 0.025
  (uw.py's default; its yaml: 0.01).

GradNorm (Chen et al. 2018), as the paper defines it:
    loss = mean_i w_i L_i (w_i init 1); after the step, with W the last shared layer,
    G_i = w_i ||d L_i / d W||,  r_i = (L_i / L_i(0)) / mean_j (L_j / L_j(0)),
    L_grad = sum_i |G_i - mean_j(G_j) r_i^alpha|  (the target held constant),
    w <- Adam step on dL_grad/dw (= sign(.) ||d L_i / d W||), then w renormalised to sum to T.
  L_i(0) is task i's first loss, kept for the whole run (mtrl overwrites it every step and its
  renormalisation has no effect: not copied). Deviations: mean instead of sum (as above); w's
  own Adam with lr balance.lr (LibMTL: the network's optimizer; LibMTL also keeps w = T softmax(.),
  takes L_i(0) as the first epoch's mean and norms over every shared parameter).

FAMO (Liu et al. 2023), as its reference class (Cranial-XIX/FAMO, famo.py):
    z = softmax(xi), D_i = L_i - min_i + 1e-8 (min_i = 0), c = sum_i z_i / D_i (constant),
    loss = sum_i z_i log D_i / c;  after the step, on the same batch and draws (one extra forward
    pass, `TaskLosses.recompute`): delta_i = log D_i(before) - log D_i(after),
    xi <- Adam(lr, weight decay gamma) step with gradient (d softmax(xi) / d xi)^T delta.
  Defaults w_lr 0.025, gamma 0.01 (its MT10 script). Its Meta-World agent multiplies by c where
  the class divides (FAMO issue #14); the class's rule is used here. The class also clips the
  shared parameters' gradient to norm 1 in its `backward` (famo.py); its Meta-World agent does
  not, and neither does polytask (only `sac.max_grad_norm`, off by default, clips).
FAMO and GradNorm need every task's losses at once: with several learner ranks they are refused
(launch/loop/trainer.py). In a continual stage only the batch's tasks are weighted; the other tasks'
weights and their Adam moments (exp_avg, exp_avg_sq) are kept as they are (not moved by Adam's
momentum, FAMO's coupled weight decay or the moments' decay). Adam's step counter is one for the
whole vector and counts every step: a task that returns later resumes its own moments with the
bias correction of the total step count (1 - beta^t, ~1 after a few thousand updates).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from agents.balancers.base import Balancer, Gather, TaskLosses, no_gather
from agents.balancers.jacobian import task_jacobian


class LearnedTaskWeights(Balancer):
    """One learned value per task of the suite (`learned`), trained by an Adam of its own; a step
    moves the batch's tasks' values only."""

    def __init__(self, init: torch.Tensor, lr: float, weight_decay: float = 0.0):
        self.learned = torch.nn.Parameter(init)
        self.optimizer = torch.optim.Adam([self.learned], lr=lr, weight_decay=weight_decay)

    def step(self, ids: torch.Tensor, grad: torch.Tensor | None = None) -> None:
        """One optimizer step; `grad`: the batch's tasks' gradient (None: already in .grad)."""
        if grad is not None:
            self.learned.grad = torch.zeros_like(self.learned)
            self.learned.grad[ids] = grad
        absent = torch.ones_like(self.learned, dtype=torch.bool)
        absent[ids] = False
        # Adam's momentum, weight decay and moment decay would move the other tasks' values and moments
        state = self.optimizer.state.get(self.learned, {})
        kept = {key: state[key].clone() if key in state else torch.zeros_like(self.learned)
                for key in ("exp_avg", "exp_avg_sq")}  # before the first step: zero moments
        value = self.learned.detach().clone()
        self.optimizer.step()
        with torch.no_grad():  # torch.where, not masked indexing: no wait for the device
            self.learned.copy_(torch.where(absent, value, self.learned))
            state = self.optimizer.state[self.learned]
            for key, moment in kept.items():
                state[key].copy_(torch.where(absent, moment, state[key]))

    def state_dict(self) -> dict:
        return {"learned": self.learned.detach(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            self.learned.copy_(state["learned"])
        self.optimizer.load_state_dict(state["optimizer"])


class UncertaintyWeighting(LearnedTaskWeights):
    def __init__(self, num_tasks: int, lr: float = 0.025, device: torch.device = torch.device("cpu"), **_):
        super().__init__(torch.zeros(num_tasks, device=device), lr)
        self.log_var = self.learned  # s
        self._ids: torch.Tensor | None = None

    def backward(self, losses: TaskLosses, params, network, retain_graph=False, gather: Gather = no_gather):
        self._ids = losses.task_ids()
        s = self.log_var[self._ids]
        self.log_var.grad = None
        (0.5 * (torch.exp(-s) * losses.per_task() + s)).mean().backward(
            inputs=[*params, self.log_var], retain_graph=retain_graph)

    def after_step(self, network, losses):
        self.step(self._ids)


class GradNorm(LearnedTaskWeights):
    per_task_gradients = True  # of its layer only

    def __init__(self, num_tasks: int, layer: torch.Tensor, lr: float = 0.025, gradnorm_alpha: float = 1.5, **_):
        """layer: the last shared weight matrix, whose gradient norms GradNorm balances."""
        super().__init__(torch.ones(num_tasks, device=layer.device), lr)
        self.weights, self.layer, self.alpha = self.learned, layer, gradnorm_alpha
        self.initial = torch.full((num_tasks,), float("nan"), device=layer.device)  # L_i(0), at a task's first update
        self._norms: tuple | None = None

    def backward(self, losses: TaskLosses, params, network, retain_graph=False, gather: Gather = no_gather):
        ids = losses.task_ids()
        per_task = losses.per_task()
        w = self.weights.detach()[ids]
        # ||d L_i / d W|| per task, from one backward to W's output (agents/balancers/jacobian.py)
        grads = task_jacobian(per_task, losses.task, [self.layer], losses.calls, retain_graph=True)
        self._norms = (ids, per_task.detach(), grads.norm(dim=1).detach())
        (w * per_task).mean().backward(inputs=params, retain_graph=retain_graph)

    def after_step(self, network, losses):
        ids, loss, norm = self._norms
        fresh = torch.isnan(self.initial[ids])
        self.initial[ids[fresh]] = loss[fresh]
        w = self.weights[ids]
        ratio = loss / self.initial[ids]
        rate = ratio / ratio.mean()
        g = w.detach() * norm
        target = g.mean() * rate ** self.alpha
        self.step(ids, torch.sign(g - target) * norm)  # d/dw_i of |w_i n_i - target_i|
        with torch.no_grad():  # renormalise the batch's weights to sum to their count
            self.weights[ids] = self.weights[ids].clamp_min(1e-6) * len(ids) / self.weights[ids].clamp_min(1e-6).sum()

    def state_dict(self) -> dict:
        return {**super().state_dict(), "initial": self.initial}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.initial = state["initial"].clone().to(self.weights.device)


class FAMO(LearnedTaskWeights):
    EPS = 1e-8
    recomputes = True  # after_step reads the losses again, through the updated network

    def __init__(self, num_tasks: int, lr: float = 0.025, famo_decay: float = 0.01,
                 device: torch.device = torch.device("cpu"), **_):
        super().__init__(torch.zeros(num_tasks, device=device), lr, weight_decay=famo_decay)
        self.logits = self.learned  # xi
        self._before: tuple | None = None

    def backward(self, losses: TaskLosses, params, network, retain_graph=False, gather: Gather = no_gather):
        ids = losses.task_ids()
        per_task = losses.per_task()
        z = F.softmax(self.logits.detach()[ids], dim=-1)
        d = per_task + self.EPS  # min_losses = 0, as FAMO's experiments
        c = (z / d).sum().detach()
        (z * d.log() / c).sum().backward(inputs=params, retain_graph=retain_graph)
        self._before = (ids, per_task.detach())

    def after_step(self, network, losses):
        ids, before = self._before
        with torch.no_grad():
            after = losses.recompute()  # the same batch and draws, through the updated network
        delta = (before + self.EPS).log() - (after + self.EPS).log()
        with torch.enable_grad():
            logits = self.logits[ids]
            (grad,) = torch.autograd.grad(F.softmax(logits, dim=-1), logits, grad_outputs=delta)
        self.step(ids, grad)
