"""The balancer seat: how the per-task losses of a task-balanced batch become one gradient.

The SAC losses come as `TaskLosses`: elementwise terms over a batch that holds the same number
of rows of each task, contiguous per task. For each network it balances, the learner calls

    backward(losses, params, network, retain_graph, gather)   leave the gradient in params' .grad
    after_step(network, losses)                                the optimizer has stepped: update its own
                                                               learned weights (uncertainty, GradNorm, FAMO)

`retain_graph`: hooks' loss terms will still backpropagate through the same forward pass.
`gather(rows, task_ids)`: with data-parallel learner ranks, the rows of every rank in task order
(a gradient-combining balancer needs every task's gradient); the identity on one learner.
The mean here is the default; the others are in weighting.py (loss weights) and gradients.py
(gradient combination). What a balancer reads besides the losses (`per_task_gradients`,
`recomputes`) the learner prepares around its loss functions: prepare.py.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Gather = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def no_gather(rows: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
    return rows


class TaskLosses:
    """Elementwise loss terms [N] over a batch whose rows' tasks are `task` [N] (the same number
    of rows per task, contiguous per task); a task's loss is the sum over terms of the term's
    mean over the task's rows. `recompute()`, if given, evaluates the per-task losses again on
    the same batch and draws, without gradients (FAMO's extra forward pass after a step)."""

    def __init__(self, terms: list[torch.Tensor], task: torch.Tensor,
                 recompute: Callable[[], torch.Tensor] | None = None, calls: list = ()):
        self.terms, self.task, self.recompute = terms, task, recompute
        self.calls = calls  # the linear layers the forward pass ran through (agents/balancers/jacobian.py)

    @property
    def num_tasks(self) -> int:
        return len(self.task_ids())

    def task_ids(self) -> torch.Tensor:
        """[T] the batch's tasks in row order (reads the device: per-task balancers only)."""
        return self.task.unique_consecutive()

    def mean(self) -> torch.Tensor:
        """The mean over tasks of the per-task losses (unitary scalarization), computed as the mean
        over every row, which is the same number."""
        total = self.terms[0].mean()
        for term in self.terms[1:]:
            total = total + term.mean()
        return total

    def per_task(self) -> torch.Tensor:
        """[T] each task's loss."""
        return sum(term.view(self.num_tasks, -1).mean(dim=1) for term in self.terms)


class Balancer:
    """Unitary scalarization: the gradient of the mean of the task losses (the default)."""

    per_task_gradients = False  # does it read each task's gradient (then the learner records `calls`)
    recomputes = False  # does it call `losses.recompute()` (then the learner provides it: prepare.py)

    def backward(self, losses: TaskLosses, params: list[torch.Tensor], network: str,
                 retain_graph: bool = False, gather: Gather = no_gather) -> None:
        losses.mean().backward(inputs=params, retain_graph=retain_graph)

    def after_step(self, network: str, losses: TaskLosses) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
