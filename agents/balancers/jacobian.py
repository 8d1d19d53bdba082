"""Per-task gradients [T, n] for the gradient combiners, in about one backward pass.

A SAC task loss reads its own rows of the task-balanced batch only, and no layer mixes rows
(no batch norm), so the gradient of the *summed* loss with respect to a layer's output row r
is the gradient of row r's own task loss. For every linear layer y = x W + b the losses' forward
ran through, one backward gives every dy, and then

    d L_t / d W = sum_{r in t} x_r^T dy_r,        d L_t / d b = sum_{r in t} dy_r

is one grouped matmul: the per-example-gradient trick (Goodfellow 2015) at task granularity,
the work of one backward pass instead of T. The remaining parameters (LayerNorm affines,
embeddings, CARE's context and gate, MOORE's task weights, hypernetworks: modules that are not
row-aligned linear layers) get their rows from torchjd's `jac` (T vector-Jacobian products
through the graph above them). `tests/test_balancers.py` checks the result against `jac` for
every trunk.

`LinearRecorder` keeps (layer, input, output) of every `EnsembleLinear` call made while it
records; the learner records each loss's forward pass when a gradient combiner balances it.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from agents.layers import EnsembleLinear


class LinearRecorder:
    def __init__(self, *modules: torch.nn.Module):
        self.calls: list | None = None
        layers = {id(m): m for module in modules for m in module.modules() if isinstance(m, EnsembleLinear)}
        for layer in layers.values():  # once each: a shared encoder belongs to actor and critic
            layer.register_forward_hook(self._hook)

    def _hook(self, layer, inputs, output) -> None:
        if self.calls is not None and output.requires_grad:
            self.calls.append((layer, inputs[0], output))

    @contextmanager
    def recording(self):
        """Yields the list the calls made inside the block are appended to."""
        self.calls = []
        try:
            yield self.calls
        finally:
            self.calls = None


def task_jacobian(per_task: torch.Tensor, task: torch.Tensor, params: list[torch.Tensor], calls: list,
                  retain_graph: bool) -> torch.Tensor:
    """[T, n]: row i is task i's gradient with respect to every parameter in `params`, flattened
    in order. `task` [N]: each batch row's task (contiguous per task, equal counts)."""
    num_tasks, rows = len(per_task), len(task)
    wanted = {id(p) for p in params}
    aligned, misaligned = [], set()
    for layer, x, y in calls:
        if id(layer.weight) in wanted:
            if y.dim() == 3 and y.shape[1] == rows:
                aligned.append((layer, x, y))
            else:
                misaligned.add(layer)  # also called on inputs that are not the batch's rows: jac
    aligned = [c for c in aligned if c[0] not in misaligned]
    fast: dict[int, torch.Tensor] = {}
    if aligned:
        dys = torch.autograd.grad(per_task.sum(), [y for _, _, y in aligned], retain_graph=True, allow_unused=True)
        for (layer, x, _), dy in zip(aligned, dys):
            if dy is None:
                continue
            k = layer.weight.shape[0]
            # .float(): under bf16 autocast a layer's input and output are bf16, its parameters fp32
            x = x.detach().float().expand(k, *x.shape[1:]).reshape(k, num_tasks, rows // num_tasks, -1)
            dy = dy.float().reshape(k, num_tasks, rows // num_tasks, -1)
            for p, g in ((layer.weight, torch.einsum("ktni,ktno->tkio", x, dy)),
                         (layer.bias, dy.sum(dim=2, keepdim=True).transpose(0, 1))):
                fast[id(p)] = fast[id(p)] + g.flatten(1) if id(p) in fast else g.flatten(1)
    covered = {id(p) for m, _, _ in aligned for p in (m.weight, m.bias)}
    for m, _, _ in aligned:  # recorded but unused by these losses: zero rows
        for p in (m.weight, m.bias):
            fast.setdefault(id(p), per_task.new_zeros(num_tasks, p.numel()))
    rest = [p for p in params if id(p) not in covered]
    if rest:
        from torchjd.autojac import jac
        fast.update({id(p): j.flatten(1) for p, j in zip(rest, jac(per_task, rest, retain_graph=retain_graph))})
    return torch.cat([fast[id(p)] for p in params], dim=1)
