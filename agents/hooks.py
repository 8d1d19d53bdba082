"""The seats the learner offers: learner hooks and the synchronizer.

One SAC update, per network ("critic", then "actor"; both at once in simultaneous order), calls
them in this order:

    1. loss terms     every hook's `loss_terms(network, batch, features)`: extra losses (a
                      continual penalty, an auxiliary task) that may read the batch and the
                      trunk's features from the network's loss pass
    2. balancer       `balancer.backward(task losses)`: the per-task losses' gradient
                      (agents/balancers/; the mean by default; a gradient combiner gathers
                      every rank's per-task rows through `synchronizer.gather_rows`)
    3. observe        every hook's `observe_gradients(network)`: .grad holds the task losses'
                      gradient only (SI's path integral reads it here)
    4. terms backward the loss terms' gradient is added
    5. sync           `synchronizer.after_backward(params)`: data-parallel ranks combine gradients
    6. before step    every hook's `before_step(networks)`: transform gradients (PackNet's mask,
                      A-GEM's projection)
    7. step           the optimizers step
    8. after step     every hook's `after_step(networks)`: repair weights (PackNet's frozen ones)
  then the balancer's `after_step` (FAMO's and GradNorm's weight updates), the temperatures
  (2, 5, 7 only: agents/sac/temperature.py) and the target critics, and once per update
    9. sync           `synchronizer.after_update(learner)` (local SGD averages here)

A hook may own parameters (`parameters(network)`): they join that network's optimizer as a
param group of their own and are trained by its loss terms; they are never part of the policy
vector sent to actors. What ranks must agree on (`synced_tensors`) is declared beside them.
Hooks compose: the learner calls every hook of its list at each point, in list order, so EWC,
an auxiliary loss and a balancer work together without knowing of each other. A continual
strategy is one such hook (continual/strategies/base.py).
"""

from __future__ import annotations

import torch


class LearnerHook:
    """A no-op at every point; subclasses override what they need."""

    def parameters(self, network: str) -> list[torch.nn.Parameter]:
        return []

    def synced_tensors(self, network: str) -> dict[str, torch.Tensor]:
        """{name: tensor} of everything of the hook that data-parallel learner ranks must hold alike
        for `network`: its parameters, trained or frozen, and their targets. Rank 0's are
        broadcast at the start, local SGD averages them with the network, and learners.json's
        cross-rank check and state digest cover them. Default: its parameters."""
        return {f"param{i}": p for i, p in enumerate(self.parameters(network))}

    def loss_terms(self, network: str, batch, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """{name: scalar loss} added to `network`'s loss (logged as loss/<name>); `features` [K, B, H]
        is the network's trunk output in its loss pass (the critic's on (obs, action), the actor's
        on obs)."""
        return {}

    def observe_gradients(self, network: str) -> None:
        pass

    def before_step(self, networks: tuple[str, ...]) -> None:
        pass

    def after_step(self, networks: tuple[str, ...]) -> None:
        pass

    def state_dict(self) -> dict:
        """What a checkpoint keeps of the hook (tensors and plain types)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class Synchronizer:
    """Keeps data-parallel learners identical. This one is for a single learner: it does nothing.
    launch/distributed/ranks.py and launch/distributed/local_sgd.py implement it for torchrun ranks."""

    local_optimizer_state = False  # True: ranks' optimizer states differ (each checkpoints its own)

    def stats(self) -> dict:
        """What it communicated so far (all-reduces, bytes), for learners.json."""
        return {}

    def after_backward(self, params: list[torch.Tensor]) -> None:
        """Gradients of `params` are computed: combine them across ranks."""

    def after_update(self, learner) -> None:
        """One whole update is done."""

    def gather_rows(self, rows: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        """Per-task rows [m_r, n] of this rank -> every rank's rows in task order [M, n] (a
        gradient-combining balancer needs every task's gradient). One learner: the rows."""
        return rows

    def sync_point(self, learner) -> None:
        """Before a checkpoint, an evaluation or the end: make every rank hold the same model."""
