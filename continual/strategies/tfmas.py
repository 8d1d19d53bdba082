"""Task-Free MAS (Aljundi, Kelchtermans, Tuytelaars, "Task-Free Continual Learning", CVPR 2019),
read line by line against its code (`kkelchte/task_free_continual_learning`, method.py):

- a hard buffer of the `tfmas_hard_buffer` (30) highest-loss samples, rebuilt after every update
  from the update's batch and the previous hard buffer, by each row's loss before the step (their
  lines 190-204), trained on with every batch (their total loss: recent + hard, lines 108-116);
- the plateau rule on a window of losses (continual/detectors.py PlateauDetector: window 5,
  re-arm on a new peak above the last plateau's mean + std, fire below the mean and variance
  thresholds), which decides when importances are updated; between plateaus only the penalty acts;
- at a plateau, MAS importances on the hard buffer in place then (their lines 163-183): per sample,
  |d ||f(x)||_2 / d theta| (the output's L2 norm, not squared), summed over the samples (not
  averaged); a running average over plateaus, Omega <- g / n + (1 - 1/n) Omega (n counts plateaus,
  this one included); the anchor theta* <- the current parameters;
- the penalty coef / 2 * sum Omega (theta - theta*)^2 with MAS_weight 0.5 on the reference's loss, a
  sum over its 25 samples (20 recent + 5 hard, main.py); SAC's losses are means over the batch, so
  the same weight per sample is coef = 0.5 / 25 = 0.02, the default (`continual.coef` sets it).

Deviations, for SAC: the loss is the critic's TD loss (per row for the hard buffer: the twin
critics' squared errors, averaged), the window's value the mean over `detector_block` updates and
the thresholds relative to the peak (continual/detectors.py says why); the protected network and
its output are the actor's shared parameters and its (mean, log std) (Continual World's MAS; the
reference has one classifier); the batch is the replay batch (the reference's recent buffer: the
30 newest samples, each seen once) with the hard buffer's rows appended, one mean loss over both
(the reference: summed squared errors); 5 gradient steps per batch become one update per batch.

On SAC with ReLU networks the reference's weight keeps nothing (PM2R, BENCHMARKS.md): a unit silent
on the hard buffer has zero importance on all its weights, and the next task rewires it. Leaky ReLU
networks with coef 0.3 keep the first task and learn the second in 6 of 10 seeds at 8,000 env steps
per task (3 of the 7 seeds not used to choose the weight); the defaults stay the reference's.
"""

from __future__ import annotations

import torch

from agents.replay import Batch
from continual.detectors import PlateauDetector
from continual.strategies.task_free import TaskFree, _concat


class TaskFreeMAS(TaskFree):
    default_coef = 0.02  # MAS_weight 0.5 / the 25 samples its summed loss covers (the module docstring)
    reads_losses = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        c = self.cfg
        self.plateau = PlateauDetector(c.detector_window, c.plateau_mean, c.plateau_variance, c.detector_block)
        self.hard: Batch | None = None        # the hard buffer's rows
        self.batch: Batch | None = None       # the last update's rows (batch + hard buffer)
        self.omega: dict[str, list[torch.Tensor]] = {}
        self.anchor: dict[str, list[torch.Tensor]] = {}
        self.plateaus = 0                     # the reference's count_updates

    def sample(self, replay, per_task, rng, tasks):
        batch = replay.sample(per_task, rng, tasks)
        if self.hard is not None and self.hard.obs.device != batch.obs.device:  # resumed onto another device
            self.hard = Batch(*(x.to(batch.obs.device) for x in self.hard))
        self.batch = batch if self.hard is None else _concat(batch, self.hard)
        return self.batch

    def after_update(self, row_losses: torch.Tensor, loss: float) -> None:
        """The update's per-row critic losses (before its step) and mean critic loss: plateau check
        (on the hard buffer in place), then the hard buffer's refill."""
        if self.plateau.observe_loss(loss) and self.hard is not None:
            self._update_importance()
        keep = row_losses.detach().cpu().topk(min(self.cfg.tfmas_hard_buffer, len(row_losses))).indices
        self.hard = Batch(*(x[keep] for x in self.batch))

    def _update_importance(self) -> None:
        self.plateaus += 1
        n, device = self.plateaus, self.learner.device
        for name, network in self.networks.items():
            params = [p for _, p in self.shared(name)]
            total = [torch.zeros_like(p) for p in params]
            for row in range(len(self.hard.obs)):  # per sample, as the reference
                obs, action, task = (x[row:row + 1].to(device) for x in (self.hard.obs, self.hard.action,
                                                                          self.hard.task))
                out = network(obs, task) if name == "actor" else network(obs, action, task)
                out = torch.cat([o.flatten() for o in out]) if isinstance(out, tuple) else out.flatten()
                grads = torch.autograd.grad(out.norm(2), params, allow_unused=True)
                for t, g in zip(total, grads):
                    if g is not None:
                        t += g.abs()
            old = self.omega.get(name)
            self.omega[name] = total if old is None else [g / n + (1 - 1 / n) * o for g, o in zip(total, old)]
            self.anchor[name] = [p.detach().clone() for p in params]

    def penalty(self, network: str):
        if network not in self.anchor:
            return 0.0
        total = sum((w * (p - a).pow(2)).sum() for (_, p), a, w
                    in zip(self.shared(network), self.anchor[network], self.omega[network]))
        return self.coef(self.default_coef) / 2 * total

    def state_dict(self) -> dict:
        hard = None if self.hard is None else [x.cpu() for x in self.hard]
        return {"plateau": self.plateau.state_dict(), "hard": hard, "omega": self.omega, "anchor": self.anchor,
                "plateaus": self.plateaus}

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        self.plateau.load_state_dict(state["plateau"])
        self.hard = None if state["hard"] is None else Batch(*state["hard"])
        self.omega, self.anchor, self.plateaus = state["omega"], state["anchor"], state["plateaus"]
