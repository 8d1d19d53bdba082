"""A network's task losses as its balancer takes them, prepared around the learner's loss functions.

Besides the per-task losses (`TaskLosses`), two kinds of balancer read more of a loss:

  per_task_gradients  the gradient combiners and GradNorm: the linear layers' inputs and outputs
                      in the loss's forward pass, for every task's gradient in about one backward
                      (jacobian.py); `LinearRecorder` records them while the pass runs
                      (`TaskLosses.calls`)
  recomputes          FAMO: the same per-task losses once more after the optimizer step, on the
                      same batch and random draws (`TaskLosses.recompute`)

The learner (agents/sac/learning.py) runs each loss's forward pass inside `LossPreparer(...)(balancer)`
and hands the pass's per-row terms to the yielded `Prepared.losses`, with `again`: how to compute
them once more (what stays fixed, which network moved). The recording happens, the random states
are kept and `recompute` exists only where the network's balancer reads them; the loss functions
see none of it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch

from agents.balancers.base import Balancer, TaskLosses
from agents.balancers.jacobian import LinearRecorder


class Prepared:
    """One loss's forward pass as its balancer needs it: the linear layers it ran through
    (`calls`, if recorded) and the random generators' states before it (`draws`, to replay)."""

    def __init__(self, balancer: Balancer, calls: list, draws: tuple | None, device: torch.device):
        self.balancer, self.calls, self.draws, self.device = balancer, calls, draws, device

    def losses(self, terms: list[torch.Tensor], task: torch.Tensor,
               again: Callable[[], list[torch.Tensor]]) -> TaskLosses:
        """The task losses of the per-row `terms` over rows of tasks `task`; `again()` computes the
        terms once more (a recomputing balancer calls it after the step, without gradients)."""
        if not self.balancer.recomputes:
            return TaskLosses(terms, task, None, self.calls)

        def recompute():
            with self._replayed_draws():
                return TaskLosses(again(), task).per_task()
        return TaskLosses(terms, task, recompute, self.calls)

    @contextlib.contextmanager
    def _replayed_draws(self):
        if self.draws is None:
            yield
            return
        cpu, cuda = self.draws
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.set_rng_state(cpu)
            if cuda is not None:
                torch.cuda.set_rng_state_all(cuda)
            yield


class LossPreparer:
    """One per learner: records the linear layers of `modules` (each once: a shared encoder belongs
    to actor and critic) while the loss of a balancer that reads per-task gradients runs."""

    def __init__(self, *modules: torch.nn.Module, device: torch.device, record: bool = False):
        self.modules, self.device = modules, device
        self.recorder = LinearRecorder(*modules) if record else None  # else made when first needed

    @contextlib.contextmanager
    def __call__(self, balancer: Balancer, replay_draws: bool = False) -> Iterator[Prepared]:
        """Around one loss's forward pass for `balancer`. replay_draws: the pass draws random numbers
        that a re-computation must draw again (the policy's sample)."""
        draws = None
        if replay_draws and balancer.recomputes:
            draws = torch.get_rng_state(), (torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None)
        if not balancer.per_task_gradients:
            yield Prepared(balancer, [], draws, self.device)
            return
        if self.recorder is None:
            self.recorder = LinearRecorder(*self.modules)
        with self.recorder.recording() as calls:
            yield Prepared(balancer, calls, draws, self.device)
