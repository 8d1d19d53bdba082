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
    mgda     MGDA (Sener & Koltun 2018): the minimum-norm convex combination (Frank-Wolfe) of
             the raw gradients (`balance.mgda_normalize=none`, the paper's Algorithm 2), or of the
             gradients each scaled to unit length (`l2`: Kurin et al. 2022's MT10 MGDA run,
             mtrl/agent/mtl_optimizer.py `MGDA(..., normalize="l2")`; optimizers/mgda.py divides
             each g_i by its norm, solves on them and returns sum_i alpha_i g_i / |g_i|)
    nashmtl  Nash-MTL (Navon et al. 2022): the Nash bargaining solution, its weights solved for
             (cvxpy) every `nashmtl_update_every` updates (the authors' default: 1) and reused in
             between, the update's norm clipped to `nashmtl_max_norm` (see the clip below)
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
  - Nash-MTL clips over every parameter in the Jacobian (the authors: the shared ones, the ones
    their Gramian covers) and computes the Jacobian on every update, also when it reuses its
    weights (the authors: only when solving);
  - CAGrad's and UPGrad's small-norm guards are lowered to 1e-12 (torchjd's 1e-4 returns zero /
    the mean for the small gradients SAC has late in training).

Nash-MTL's clip. The authors (AvivNavon/nash-mtl, methods/weight_methods.py `NashMTL.backward`)
backpropagate sum_i alpha_i L_i, then `clip_grad_norm_(shared_parameters, max_norm)` (max_norm
1.0, the class default; experiments/utils.py never sets it), then their trainers call
`optimizer.step()`. torchjd rescales alpha so that |J^T alpha| <= max_norm: the same clip, over
the Jacobian's parameters, inside the combiner, so before hooks' loss terms are added, before
`sac.max_grad_norm` and before the optimizer step. Its constraints are alpha_i (G^T G alpha)_i >= 1
in the gradients' own units, so a converged solve has |J^T alpha| = sqrt(T) exactly and the clip
fires on every solve for T >= 2: each solved update is the Nash direction scaled to norm
max_norm, i.e. by max_norm / sqrt(T), a constant for a fixed T. That is the authors' behaviour
too (on their shared parameters), so it is kept. Not so the Meta-World MT10 port (FAMO's
mtrl_files/nashmtl.py: `if norm > max_norm: final_update = final_update / self.max_norm` with
max_norm 1.0, a no-op): its MT10 numbers were produced unclipped, with norm sqrt(T);
`balance.nashmtl_max_norm=0` turns the clip off to reproduce that. That port also shares one
solver state across critic, actor and temperature; here each network has its own.

Randomness: PCGrad draws its task order from torch's global CPU generator (torch.randperm); here
it draws it inside `torch.random.fork_rng(devices=[])` with only the CPU generator reseeded from
a stream of its own (agents/seeding.py), the same on every learner rank. fork_rng restores the
CPU state afterwards and no CUDA generator is touched (torch.manual_seed would reseed every one
of them, and fork_rng(devices=[]) would not restore them), so turning it on leaves the learner's
draws as they were and ranks stay identical.

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

    def combine(self, jacobian: torch.Tensor, task_ids: torch.Tensor | None = None) -> torch.Tensor:
        """The combined gradient of `jacobian`'s rows; `task_ids`: their tasks (Nash-MTL keeps state per set)."""
        with torch.random.fork_rng(devices=[]):  # saves and restores the CPU generator only
            # the CPU generator only: torch.manual_seed would also reseed every CUDA generator
            torch.default_generator.manual_seed(int(torch.randint(2**31 - 1, (1,), generator=self.draws)))
            keyed = getattr(self.aggregator, "per_task_set", False)
            combined = self.aggregator(jacobian, task_ids) if keyed else self.aggregator(jacobian)
        return combined * (self.scale / len(jacobian) if self.per_task_scale else self.scale)

    def backward(self, losses: TaskLosses, params, network, retain_graph=False, gather: Gather = no_gather):
        rows = task_jacobian(losses.per_task(), losses.task, params, losses.calls, retain_graph)
        ids = losses.task_ids()
        every_id = None
        if getattr(self.aggregator, "per_task_set", False):  # the gathered rows' tasks, gathered the same way
            every_id = gather(ids[:, None].to(rows.dtype), ids)[:, 0].round().long()
        write_grad(params, self.combine(gather(rows, ids), every_id))

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


MGDA_NORMALIZE = ("none", "l2")  # balance.mgda_normalize


class UnitRows:
    """An aggregator applied to the rows scaled to unit length (a zero row stays zero), as Kurin
    et al.'s optimizers/mgda.py `normalize_gradients(..., "l2")`."""

    def __init__(self, aggregator):
        self.aggregator = aggregator

    def __call__(self, jacobian: torch.Tensor) -> torch.Tensor:
        norms = jacobian.norm(dim=1, keepdim=True)
        return self.aggregator(jacobian / torch.where(norms > 0, norms, torch.ones_like(norms)))

    def state_dict(self) -> dict:
        return self.aggregator.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.aggregator.load_state_dict(state)


def mgda(seed: int, network: str, mgda_normalize: str = "none", **_) -> GradientCombiner:
    from torchjd.aggregation import MGDA
    if mgda_normalize not in MGDA_NORMALIZE:
        raise ValueError(f"mgda_normalize must be one of {MGDA_NORMALIZE}, got {mgda_normalize!r}")
    return GradientCombiner(UnitRows(MGDA()) if mgda_normalize == "l2" else MGDA(), seed, network)


def nashmtl(seed: int, network: str, nashmtl_max_norm: float = 1.0, nashmtl_update_every: int = 1,
            **_) -> GradientCombiner:
    return GradientCombiner(NashMTLForBatch(nashmtl_max_norm, nashmtl_update_every), seed, network)


def upgrad(seed: int, network: str, **_) -> GradientCombiner:
    from torchjd.aggregation import UPGrad
    from torchjd.linalg import QuadprogProjector
    return GradientCombiner(UPGrad(projector=QuadprogProjector(norm_eps=1e-12)), seed, network)


class NashMTLForBatch:
    """torchjd's NashMTL keeps solver state (step counter, last weights) for a fixed set of tasks;
    a continual stage's batch holds a subset, so one solver per set of task ids: a later stage
    with as many tasks but other ones starts its own (with update_every > 1 it would otherwise
    reuse the earlier stage's weights)."""

    per_task_set = True  # GradientCombiner passes the rows' task ids

    def __init__(self, max_norm: float, update_every: int):
        self.max_norm, self.update_every = max_norm, update_every
        self.solvers: dict[tuple[int, ...], object] = {}
        self.by_count: dict[int, object] = {}  # restored from a checkpoint keyed by task count (before task ids)

    def _new(self, m: int):
        from torchjd.aggregation import NashMTL
        return NashMTL(n_tasks=m, max_norm=self.max_norm, update_weights_every=self.update_every)

    def __call__(self, jacobian: torch.Tensor, task_ids: torch.Tensor | None = None) -> torch.Tensor:
        key = tuple(range(len(jacobian))) if task_ids is None else tuple(task_ids.tolist())
        if key not in self.solvers:
            restored = self.by_count.pop(len(key), None)
            self.solvers[key] = self._new(len(key)) if restored is None else restored
        with warnings.catch_warnings():  # cvxpy: "problem is not DPP" on every solve (the authors' problem)
            warnings.simplefilter("ignore", UserWarning)
            return self.solvers[key](jacobian)

    def state_dict(self) -> dict:
        """Per set of task ids ("0,3,7"): the solver's step counter and last weights (what it carries over)."""
        return {"by_tasks": {",".join(map(str, key)): self._saved(s) for key, s in self.solvers.items()},
                **({"by_count": {str(m): self._saved(s) for m, s in self.by_count.items()}} if self.by_count else {})}

    @staticmethod
    def _saved(solver) -> dict:
        return {"step": torch.tensor(solver.weighting.step), "alpha": torch.from_numpy(solver.weighting.prvs_alpha)}

    def _restored(self, saved: dict, m: int):
        solver = self._new(m)
        solver.weighting.prvs_alpha = saved["alpha"].numpy()
        solver.weighting._init_optim_problem()  # what its first call would have done
        solver.weighting.step = float(saved["step"])
        return solver

    def load_state_dict(self, state: dict) -> None:
        # an older checkpoint holds one solver per task count: the first set of that many tasks takes it
        by_count = state.get("by_count", {}) if "by_tasks" in state else state
        self.by_count = {int(m): self._restored(saved, int(m)) for m, saved in by_count.items()}
        for key, saved in state.get("by_tasks", {}).items():
            ids = tuple(int(t) for t in key.split(","))
            self.solvers[ids] = self._restored(saved, len(ids))
