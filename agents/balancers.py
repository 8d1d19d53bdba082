"""Balancers: how the per-task losses of a task-balanced batch become one gradient.

The SAC losses come as `TaskLosses`: elementwise terms over a batch that holds the same number
of rows of each task, contiguous per task. A balancer's `backward(losses, params, network,
retain_graph)` leaves the gradient in params' .grad (retain_graph: hooks' loss terms will still
backpropagate through the same forward pass). A new multi-task method (loss weighting, gradient
surgery) is one class here plus one line in `BALANCERS`.
"""

from __future__ import annotations

import torch


class TaskLosses:
    """Elementwise loss terms [N] over a batch whose rows' tasks are `task` [N] (the same number
    of rows per task, contiguous per task); a task's loss is the sum over terms of the term's
    mean over the task's rows."""

    def __init__(self, terms: list[torch.Tensor], task: torch.Tensor):
        self.terms, self.task = terms, task

    @property
    def num_tasks(self) -> int:
        return int(self.task.unique_consecutive().numel())  # reads the device: per-task balancers only

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
    """Unitary scalarization: the gradient of the mean of the task losses."""

    def backward(self, losses: TaskLosses, params: list[torch.Tensor], network: str,
                 retain_graph: bool = False) -> None:
        losses.mean().backward(inputs=params, retain_graph=retain_graph)


BALANCERS = {"mean": Balancer}
