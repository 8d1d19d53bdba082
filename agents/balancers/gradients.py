"""Gradient-combining balancers: per-task gradients of the network's parameters (jacobian.py:
about one backward pass for the linear layers, torchjd's batched `jac` for the rest; no Python
loop of backward passes), combined by an aggregator of torchjd (torchjd.org; 0.18), which
implements them from their papers:

    pcgrad   PCGrad (Yu et al. 2020): each task's gradient, in random order, projected off every
             other task's gradient it conflicts with; torchjd sums them, polytask takes the mean
             (mtrl's MT-SAC PCGrad averages; the paper's code sums): / T
    cagrad   CAGrad (Liu et al. 2021): the update maximising the worst task's improvement within
             a ball of radius c ||g_0|| around the mean gradient g_0 (c: MT10 0.9, MT50 0.5);
             torchjd solves the dual exactly and returns (1 + c) g_0 when every task agrees; the
             authors' MT-SAC code divides by 1 + c^2: done here
    mgda     MGDA (Sener & Koltun 2018): the minimum-norm convex combination (Frank-Wolfe)
    nashmtl  Nash-MTL (Navon et al. 2022): the Nash bargaining solution, its norm clipped to
             `nashmtl_max_norm` (1.0, as the authors' code), its weights solved for (cvxpy) every
             `nashmtl_update_every` updates (the authors' default: 1) and reused in between
    upgrad   UPGrad (Quinton & Rey 2024): the mean of each gradient projected onto the dual
             cone of all of them

so that, when every task's gradient agrees, each gives the mean gradient (CAGrad: (1 + c) / (1 + c^2)
times it, as the authors' code; Nash-MTL excepted: it ignores the loss scale by design).

Differences from the authors' code that remain:
  - the Jacobian covers every parameter of the network, per-task heads included (as mtrl's
    PCGrad); MGDA's and UPGrad's papers combine the shared parameters only and give each head
    its task's plain gradient, so here a head's gradient is scaled by its task's weight;
  - CAGrad solves its dual exactly (the authors: scipy or 20 SGD steps); MGDA stops at torchjd's
    tolerance (1e-3);
  - Nash-MTL clips over every parameter passed (the authors: the shared ones) and computes the
    Jacobian on every update, also when it reuses its weights (the authors: only when solving);
  - CAGrad's and UPGrad's small-norm guards are lowered to 1e-12 (torchjd's 1e-4 returns zero /
    the mean for the small gradients SAC has late in training).

Randomness: PCGrad draws its task order from torch's global generator; here it draws it inside
`torch.random.fork_rng` from a stream of its own (agents/seeding.py), the same on every learner
rank, so turning it on leaves the learner's draws as they were and ranks stay identical.

Several learner ranks: each rank's Jacobian rows (its tasks) are gathered, not averaged, so
every rank combines the same full set and steps identically.
"""

from __future__ import annotations

import warnings

import torch

from agents import seeding
from agents.balancers.base import Balancer, Gather, TaskLosses, no_gather
from agents.balancers.jacobian import task_jacobian


def write_grad(params: list[torch.Tensor], flat: torch.Tensor) -> None:
    at = 0
    for p in params:
        n = p.numel()
        p.grad = flat[at:at + n].view_as(p).clone()
        at += n


class GradientCombiner(Balancer):
    per_task_gradients = True

    def __init__(self, aggregator, seed: int = 0, network: str = "", scale: float = 1.0, per_task_scale=False):
        self.aggregator, self.scale, self.per_task_scale = aggregator, scale, per_task_scale
        index = ("critic", "actor", "alpha").index(network)
        self.draws = torch.Generator().manual_seed(seeding.seed_for(seed, "balancer", index))

    def combine(self, jacobian: torch.Tensor) -> torch.Tensor:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(2**31 - 1, (1,), generator=self.draws)))
            combined = self.aggregator(jacobian)
        return combined * (self.scale / len(jacobian) if self.per_task_scale else self.scale)

    def backward(self, losses: TaskLosses, params, network, retain_graph=False, gather: Gather = no_gather):
        rows = task_jacobian(losses.per_task(), losses.task, params, losses.calls, retain_graph)
        write_grad(params, self.combine(gather(rows, losses.task_ids())))

    def state_dict(self) -> dict:
        own = getattr(self.aggregator, "state_dict", None)  # a stateful aggregator's (Nash-MTL's) state
        return {"draws": self.draws.get_state(), **({"aggregator": own()} if own else {})}

    def load_state_dict(self, state: dict) -> None:
        if state:
            self.draws.set_state(state["draws"])
            if "aggregator" in state:
                self.aggregator.load_state_dict(state["aggregator"])


def pcgrad(seed: int, network: str, **_) -> GradientCombiner:
    from torchjd.aggregation import PCGrad
    return GradientCombiner(PCGrad(), seed, network, per_task_scale=True)  # the sum -> the mean


def cagrad(seed: int, network: str, cagrad_c: float = 0.9, **_) -> GradientCombiner:
    from torchjd.aggregation import CAGrad
    return GradientCombiner(CAGrad(c=cagrad_c, norm_eps=1e-12), seed, network, scale=1 / (1 + cagrad_c ** 2))


def mgda(seed: int, network: str, **_) -> GradientCombiner:
    from torchjd.aggregation import MGDA
    return GradientCombiner(MGDA(), seed, network)


def nashmtl(seed: int, network: str, nashmtl_max_norm: float = 1.0, nashmtl_update_every: int = 1,
            **_) -> GradientCombiner:
    return GradientCombiner(NashMTLForBatch(nashmtl_max_norm, nashmtl_update_every), seed, network)


def upgrad(seed: int, network: str, **_) -> GradientCombiner:
    from torchjd.aggregation import UPGrad
    from torchjd.linalg import QuadprogProjector
    return GradientCombiner(UPGrad(projector=QuadprogProjector(norm_eps=1e-12)), seed, network)


class NashMTLForBatch:
    """torchjd's NashMTL keeps solver state for a fixed number of tasks; a continual stage's batch
    holds a subset, so one solver per task count."""

    def __init__(self, max_norm: float, update_every: int):
        self.max_norm, self.update_every, self.solvers = max_norm, update_every, {}

    def __call__(self, jacobian: torch.Tensor) -> torch.Tensor:
        from torchjd.aggregation import NashMTL
        m = len(jacobian)
        if m not in self.solvers:
            self.solvers[m] = NashMTL(n_tasks=m, max_norm=self.max_norm, update_weights_every=self.update_every)
        with warnings.catch_warnings():  # cvxpy: "problem is not DPP" on every solve (the authors' problem)
            warnings.simplefilter("ignore", UserWarning)
            return self.solvers[m](jacobian)

    def state_dict(self) -> dict:
        """Per task count: the solver's step counter and last weights (what it carries over)."""
        return {str(m): {"step": torch.tensor(s.weighting.step), "alpha": torch.from_numpy(s.weighting.prvs_alpha)}
                for m, s in self.solvers.items()}

    def load_state_dict(self, state: dict) -> None:
        from torchjd.aggregation import NashMTL
        for m, saved in state.items():
            solver = NashMTL(n_tasks=int(m), max_norm=self.max_norm, update_weights_every=self.update_every)
            solver.weighting.prvs_alpha = saved["alpha"].numpy()
            solver.weighting._init_optim_problem()  # what its first call would have done
            solver.weighting.step = float(saved["step"])
            self.solvers[int(m)] = solver
