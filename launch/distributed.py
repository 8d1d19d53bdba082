"""Data-parallel learners over torch.distributed (launched by torchrun).

Each rank owns a shard of the tasks (rank r: tasks r, r+W, r+2W, ...), runs its own actors
and replay for them, and all ranks keep identical networks: gradients are averaged with one
all-reduce per optimizer step (gloo on CPU, nccl on GPU). Averaging per-rank mean losses
gives exactly the gradient of the mean loss over the global batch, so W ranks with shards of
the tasks compute the same update as one process holding all tasks. Per-task parameters
(heads, temperatures) are slices of shared tensors, so every parameter takes part in every
all-reduce: there are no unused parameters to trip over. Only rank 0 writes to the run dir.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0  # rank within this host: picks the GPU

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, num_tasks: int) -> list[int]:
        return list(range(self.rank, num_tasks, self.world))

    def average_gradients(self, params: list[torch.Tensor]) -> None:
        """All-reduce the gradients of `params` (flattened into one buffer) and average them."""
        if self.world == 1:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for p, g in zip(params, grads):
            n = g.numel()
            p.grad = flat[offset:offset + n].view_as(g)
            offset += n

    def sync_counts(self, local_steps: int, local_due: int) -> tuple[int, int]:
        """(global env steps = sum over ranks, updates every rank can do now = min over ranks)."""
        if self.world == 1:
            return local_steps, local_due
        t = torch.tensor([local_steps, -local_due], dtype=torch.int64)
        gathered = [torch.empty_like(t) for _ in range(self.world)]
        dist.all_gather(gathered, t)
        stacked = torch.stack(gathered)
        return int(stacked[:, 0].sum()), int(-stacked[:, 1].max())

    def broadcast_module_state(self, module: torch.nn.Module) -> None:
        if self.world > 1:
            with torch.no_grad():
                for tensor in module.state_dict().values():
                    dist.broadcast(tensor, src=0)

    def broadcast_object(self, obj):
        if self.world == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather_objects(self, obj) -> list | None:
        """Every rank's `obj` on rank 0 (None elsewhere)."""
        if self.world == 1:
            return [obj]
        out = [None] * self.world if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def close(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def init_from_env() -> Dist:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, MASTER_ADDR, ...), if any.
    CPU tensors go through gloo and, where CUDA exists, CUDA tensors through nccl."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist()
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("cpu:gloo,cuda:nccl")
    else:
        dist.init_process_group("gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
