"""Data-parallel learners over torch.distributed (launched by torchrun).

Each rank owns a shard of the tasks (rank r: tasks r, r+W, r+2W, ...), runs its own actors
and replay for them, and all ranks keep identical networks: gradients are combined with one
all-reduce per optimizer step (gloo on CPU, nccl on GPU). A rank's loss is the mean over its
own tasks' samples, so its gradient is weighted by its share of the global batch (its task
count / all tasks) and the weighted gradients are summed: that is exactly the gradient of the
task-balanced mean loss over the global batch, for any number of ranks, even when the tasks do
not divide evenly. Per-task parameters (heads, temperatures) are slices of shared tensors, so
every parameter takes part in every all-reduce: there are no unused parameters to trip over.

The combination is a Synchronizer (the seat agents/hooks.py defines): `EveryStepSync` here
(`--sync step`, the default); local SGD and the Quadratic Synchronization Rule (`--sync local`,
`--sync qsr`) in launch/distributed/local_sgd.py. Both count their all-reduces and bytes (learners.json).

Failures: collectives time out after `--dist-timeout` seconds (a peer that hangs); a peer that
dies closes its connections and the others' collectives fail at once. Either way the rank exits
with one line (launch/train.py) and torchrun's agent restarts the group if `--max-restarts`
allows (every rank then resumes from the latest checkpoint). At start every rank checks that
all were launched with the same arguments and versions (`check_same_launch`).

Update credit is global: every rank counts the env steps of all ranks (`sync_counts`) and does
the updates they earn, so W ranks do as many updates as one learner on the same global steps.
Only rank 0 writes to the run dir.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from agents.hooks import Synchronizer
from launch.errors import UserError


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

    def sync_counts(self, local_steps: int, ready: bool, finite: bool, stop: bool) -> tuple[int, bool, bool, bool]:
        """(global env steps = sum over ranks, every rank ready to update, every rank's losses
        finite, some rank asked to stop (SIGTERM)): one small all-gather per trainer iteration,
        so all ranks decide alike."""
        if self.world == 1:
            return local_steps, ready, finite, stop
        t = torch.tensor([local_steps, int(ready), int(finite), int(stop)], dtype=torch.int64)
        gathered = [torch.empty_like(t) for _ in range(self.world)]
        dist.all_gather(gathered, t)
        stacked = torch.stack(gathered)
        return (int(stacked[:, 0].sum()), bool(stacked[:, 1].min()), bool(stacked[:, 2].min()),
                bool(stacked[:, 3].max()))

    def broadcast_tensors(self, tensors) -> None:
        """Rank 0's values of `tensors` on every rank (in place)."""
        if self.world > 1:
            with torch.no_grad():
                for tensor in tensors:
                    dist.broadcast(tensor.data, src=0)

    def first_reason(self, reason: str | None) -> str | None:
        """Some rank's non-None `reason` (the lowest rank's), on every rank, or None if no rank has
        one: ranks whose weights differ (local SGD) still stop together."""
        if self.world == 1:
            return reason
        reasons = [None] * self.world
        dist.all_gather_object(reasons, reason)
        found = [(r, why) for r, why in enumerate(reasons) if why]
        return f"{found[0][1]} on rank {found[0][0]}" if found else None

    def broadcast_object(self, obj):
        if self.world == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def from_main(self, fn):
        """fn() run on rank 0, its result on every rank; a UserError it raises is raised on every
        rank (all fail alike, with rank 0's message)."""
        result, error = None, None
        if self.is_main:
            try:
                result = fn()
            except UserError as e:
                error = str(e)
        result, error = self.broadcast_object((result, error))
        if error:
            raise UserError(error)
        return result

    def gather_objects(self, obj) -> list | None:
        """Every rank's `obj` on rank 0 (None elsewhere)."""
        if self.world == 1:
            return [obj]
        out = [None] * self.world if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def check_same_launch(self, launch: str) -> None:
        """Every rank's `launch` text (its arguments and versions) must be the same: a node started
        with other flags or another polytask would train a different run in lockstep."""
        if self.world == 1:
            return
        digest = hashlib.sha256(launch.encode()).hexdigest()[:16]
        digests = [None] * self.world
        dist.all_gather_object(digests, digest)
        odd = [r for r, d in enumerate(digests) if d != digests[0]]
        if odd:
            raise UserError(f"learner ranks were started with different arguments or versions (rank(s) "
                                 f"{', '.join(map(str, odd))} differ from rank 0): start every node with the "
                                 f"same train.py command and the same install")

    def close(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


class EveryStepSync(Synchronizer):
    """One all-reduce of the gradients per optimizer step (flattened into one buffer): this
    rank's gradient weighted by `share` (its fraction of the global batch), summed over ranks."""

    def __init__(self, dist_: Dist, share: float):
        self.dist, self.share = dist_, share
        self.bytes_gathered = 0  # per-task gradient rows received from other ranks (gradient combiners)
        self.allreduces = self.bytes_sent = 0  # gradient all-reduces and their buffers' bytes

    def stats(self) -> dict:
        return {"allreduces": self.allreduces, "bytes_sent": self.bytes_sent,
                "gradient_rows_bytes_received": self.bytes_gathered}

    def gather_rows(self, rows: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        """Every rank's per-task rows, in task order (padded to the largest shard for all_gather).
        The combined gradient is then the same on every rank; after_backward's share-weighted sum
        (shares add up to 1) leaves it as it is and adds up the hooks' per-rank loss terms."""
        if self.dist.world == 1:
            return rows
        count = torch.tensor([len(rows)], device=rows.device)  # nccl gathers device tensors only
        counts = [torch.empty_like(count) for _ in range(self.dist.world)]
        dist.all_gather(counts, count)
        most = int(max(counts))
        padded = torch.zeros(most, rows.shape[1] + 1, dtype=rows.dtype, device=rows.device)
        padded[:len(rows), 0] = task_ids.to(rows.dtype)
        padded[:len(rows), 1:] = rows
        gathered = [torch.empty_like(padded) for _ in range(self.dist.world)]
        dist.all_gather(gathered, padded)
        self.bytes_gathered += padded.numel() * padded.element_size() * (self.dist.world - 1)
        table = torch.cat([g[:int(c)] for g, c in zip(gathered, counts)])
        return table[table[:, 0].argsort(), 1:]

    def after_backward(self, params: list[torch.Tensor]) -> None:
        if self.dist.world == 1:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads]) * self.share
        dist.all_reduce(flat)
        self.allreduces += 1
        self.bytes_sent += flat.numel() * flat.element_size()
        offset = 0
        for p, g in zip(params, grads):
            n = g.numel()
            p.grad = flat[offset:offset + n].view_as(g)
            offset += n


def state_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, shape, dtype and bytes, in name order: ranks holding the
    very same state have the same digest (learners.json's `ranks[i].state_digest`)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}|".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def init_from_env(timeout_s: float = 1800.0) -> Dist:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, MASTER_ADDR, ...), if any.
    CPU tensors go through gloo and, where CUDA exists, CUDA tensors through nccl; a collective
    waiting longer than `timeout_s` for its peers fails."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist()
    timeout = timedelta(seconds=timeout_s)
    # torchrun's agent keeps one TCP store for every restart of the group (shared with its
    # rendezvous) and its workers add no prefix of their own: keys left by the failed attempt's
    # process group would meet the new one's (we saw restarted gloo groups hang). One prefix
    # per attempt keeps them apart.
    store, rank, world = next(dist.rendezvous("env://", timeout=timeout))
    store = dist.PrefixStore(f"polytask/attempt-{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("cpu:gloo,cuda:nccl", store=store, rank=rank, world_size=world, timeout=timeout)
    else:
        dist.init_process_group("gloo", store=store, rank=rank, world_size=world, timeout=timeout)
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
