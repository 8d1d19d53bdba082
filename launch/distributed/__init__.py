"""Learner ranks (torchrun): who owns which tasks, the collectives, and how the ranks' networks stay
in agreement. One synchronizer per `sync.mode`, all made here:

    step   launch/distributed/ranks.py: EveryStepSync, an all-reduce of every gradient
    local  launch/distributed/local_sgd.py: LocalSGDSync, a parameter average every `sync.period` updates
    qsr    launch/distributed/local_sgd.py: LocalSGDSync with the Quadratic Synchronization Rule's period

A synchronizer is the seat agents/hooks.py defines (`Synchronizer`); docs/scaling.md says what each
mode averages and why.
"""

from __future__ import annotations

from agents.hooks import Synchronizer
from launch.distributed.local_sgd import LocalSGDSync
from launch.distributed.ranks import Dist, EveryStepSync


def make_synchronizer(sync_cfg, dist_: Dist, num_tasks: int) -> Synchronizer:
    """The synchronizer `sync.mode` names, for this rank of `dist_` (its shard of `num_tasks`)."""
    own = dist_.shard(num_tasks)
    share = len(own) / num_tasks  # this rank's fraction of every global batch
    if sync_cfg.mode == "step":
        return EveryStepSync(dist_, share)
    alpha = sync_cfg.qsr_alpha if sync_cfg.mode == "qsr" else 0.0
    period = sync_cfg.period_min if sync_cfg.mode == "qsr" else sync_cfg.period
    return LocalSGDSync(dist_.world, share, period, alpha, sync_cfg.average_optimizer_state, own)
