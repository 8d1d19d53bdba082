"""Task-free continual strategies: they need no task boundaries and no task labels
(continual.boundaries=hidden; launch/loop/learning.py), and learn from one stream of experience.

reservoir  a fixed memory that keeps a uniform sample of the whole stream (reservoir sampling,
           agents/stream_replay.py), every batch drawn from it: the task-free replay baseline
           (Continual World's "reservoir" row, and MIR's buffer).
mir        Maximally Interfered Retrieval (Aljundi, Caccia et al., NeurIPS 2019; code
           `optimass/Maximally_Interfered_Retrieval`, mir.py retrieve_replay_update): each batch is
           the newest experience plus the memory rows an update on it would hurt most. As the
           reference: the incoming batch's loss gradient, a virtual step of it, candidates drawn from
           the reservoir without replacement, scored by post-step loss minus pre-step loss, the
           top-scoring ones replayed; the update then trains on incoming + retrieved rows.
           Deviations, for SAC:
           - "incoming": `(1 - replay_fraction)` of the batch drawn from the newest `recent_steps` env
             steps (the reference: the 10 examples just arrived; an SAC update is one env step, far
             fewer than a batch);
           - the loss is the critic's TD loss (SAC's regression; the actor follows the critic), its
             target computed once with the target critic; the virtual step is the one the critic's
             Adam would take (the reference's optimizer, and so its virtual step, is plain SGD);
           - `mir_candidates` candidates per retrieved row (the reference: 50 for 10, 5 per row);
           - one loss over the concatenated batch (the reference: two means, summed), and the memory
             is used from the first update (the reference replays from its second task on: a task label).
clear      CLEAR (Rolnick et al., NeurIPS 2019; no official code, read against AGI-Labs/continual_rl's
           clear_monobeast.py): half new, half replayed experience (reservoir memory), the RL loss on
           both, and on the replayed half behaviour cloning: KL(pi_behaviour || pi) (forward KL,
           summed over action dimensions; closed form for the Gaussians before the tanh, which the
           tanh leaves unchanged) weighted `clear_policy_cloning` (0.01) and the squared error between
           the critic and its stored values weighted `clear_value_cloning` (0.005). The reference
           sums every term over rows; SAC's losses are means over the batch, so each cloning term is
           its sum over the replayed rows / the batch size (the same weight per row relative to the
           RL loss). Deviations: V-trace becomes SAC's off-policy losses; the behaviour outputs are the
           learner's networks' when the rows reach replay (the reference: the acting policy's; ours
           lag it by at most runtime.max_policy_lag versions); the stored value is each twin Q's.
3rl        3RL (Caccia et al., CoLLAs 2023, `amazon-science/replay-based-recurrent-rl`): SAC with a
           context GRU over the last 15 transitions (sac.memory_context, agents/context.py; 30 units
           as its released runs) and replay of everything: one buffer of replay.capacity_per_task x the
           sequence's stages (all of it when a stage fits in capacity_per_task). The reference uses
           each task's start twice: a burn-in of random actions (10k steps in its CW runs) and a batch
           split, a share 1/(k+1) from the current task's buffer at its k-th task (misc/buffer.py
           sample, curr_task_bfrac; the rest from the earlier tasks'). Without boundaries both come at
           *detected* starts: 3RL implies continual.detector=change (launch/config/boundaries.py), each
           detection brings the warm-up (sac.warmup_steps_per_task) and moves the split to the rows
           stored since it (detections past the stream's stage count are recorded, not acted on:
           launch/loop/learning.py). Deviations: a detected start instead of the true one (about
           130 env steps late on PM2 with local actors, 40 with one process); with
           continual.detector=none, no burn-in after the first stage and uniform batches (the former
           3RL here); our context windows' padding at episode starts (agents/context.py).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from agents import seeding
from agents.replay import Batch
from continual.strategies.base import Strategy
from continual.strategies.replay import gaussian_kl


class TaskFree(Strategy):
    task_free = True  # runs with hidden boundaries only (launch/config/boundaries.py)


class Reservoir(TaskFree):
    stream_replay = "reservoir"


def _rows(replay, rows: np.ndarray) -> Batch:
    """Stored rows of the stream (task 0) as a Batch."""
    data = replay.rows(0, rows)
    return Batch(*(torch.from_numpy(data[f]) for f in replay.FIELDS), torch.zeros(len(rows), dtype=torch.int64))


def _concat(*batches: Batch) -> Batch:
    return Batch(*(torch.cat(columns) for columns in zip(*batches)))


def _distinct(replay, count: int, rng: np.random.Generator) -> np.ndarray:
    """Up to `count` distinct stored rows of the stream's memory."""
    size = int(replay.size[0])
    return rng.choice(size, min(count, size), replace=False)


class RecentAndReplayed(TaskFree):
    """A batch of new rows (from the newest recent_steps) and replayed rows (from the reservoir)."""

    stream_replay = "recent"

    def split(self, size: int) -> tuple[int, int]:
        replayed = max(1, round(size * self.cfg.replay_fraction))
        return size - replayed, replayed


class MIR(RecentAndReplayed):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.rng = seeding.rng(self.seed, "mir")

    def sample(self, replay, per_task, rng, tasks):
        new_count, replayed = self.split(per_task)
        new = replay.recent.sample(new_count, rng, [0])
        candidates = _rows(replay, _distinct(replay, replayed * self.cfg.mir_candidates, self.rng))
        scores = self.interference(new, candidates)
        return _concat(new, Batch(*(x[scores.topk(min(replayed, len(scores))).indices] for x in candidates)))

    def _td_rows(self, batch: Batch, target: torch.Tensor) -> torch.Tensor:
        """Per row: the twin critics' squared TD errors onto `target`, summed."""
        with self.learner.autocast():
            q = self.learner.critic(batch.obs, batch.action, batch.task)
        return ((q - target) ** 2).sum(0).float()

    def _target(self, batch: Batch) -> torch.Tensor:
        return self.learner.critic_pass(*batch)[2].detach()

    @torch.no_grad()
    def _adam_step(self, params, grads) -> list[torch.Tensor]:
        """The change the critic's Adam would make with these gradients (its moments and step count
        as they are now; nothing is stored)."""
        optimizer = self.learner.critic_optimizer
        group = optimizer.param_groups[0]
        (beta1, beta2), eps, lr = group["betas"], group["eps"], group["lr"]
        out = []
        for p, g in zip(params, grads):
            state = optimizer.state.get(p, {})
            step = float(state["step"]) + 1 if "step" in state else 1.0
            m = beta1 * state["exp_avg"] + (1 - beta1) * g if "exp_avg" in state else (1 - beta1) * g
            v = beta2 * state["exp_avg_sq"] + (1 - beta2) * g * g if "exp_avg_sq" in state else (1 - beta2) * g * g
            out.append(-lr * (m / (1 - beta1 ** step)) / ((v / (1 - beta2 ** step)).sqrt() + eps))
        return out

    def interference(self, new: Batch, candidates: Batch) -> torch.Tensor:
        """Each candidate's TD loss after a virtual critic step on `new`, minus before it."""
        device = self.learner.device
        new, candidates = (Batch(*(x.to(device) for x in b)) for b in (new, candidates))
        params = [p for p in self.learner.critic.parameters() if p.requires_grad]
        loss = self._td_rows(new, self._target(new)).mean()
        grads = torch.autograd.grad(loss, params)
        target = self._target(candidates)
        with torch.no_grad():
            before = self._td_rows(candidates, target)
            saved = [p.detach().clone() for p in params]
            for p, step in zip(params, self._adam_step(params, grads)):
                p.add_(step)
            after = self._td_rows(candidates, target)
            for p, value in zip(params, saved):
                p.copy_(value)
        return (after - before).cpu()

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        if state:
            self.rng.bit_generator.state = state["rng"]


class CLEAR(RecentAndReplayed):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.behaviour: dict[str, torch.Tensor] | None = None  # the replayed rows' stored outputs
        self.batch_size = 1

    def replay_extra(self, action_dim: int) -> dict[str, tuple[int, ...]]:
        return {"mean": (action_dim,), "log_std": (action_dim,), "q": (2,)}

    def use_replay(self, replay) -> None:
        replay.annotate = self.annotate

    @torch.no_grad()
    def annotate(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The behaviour outputs stored with rows entering the memory: the policy's Gaussian and the twin Q's."""
        device, learner = self.learner.device, self.learner
        obs, action = (torch.from_numpy(np.ascontiguousarray(rows[f])).to(device) for f in ("obs", "action"))
        task = torch.zeros(len(obs), dtype=torch.int64, device=device)
        with learner.autocast():
            mean, log_std = learner.actor(obs, task)
            q = learner.critic(obs, action, task)
        return {"mean": mean.float().cpu().numpy(), "log_std": log_std.float().cpu().numpy(),
                "q": q.float().T.cpu().numpy()}

    def sample(self, replay, per_task, rng, tasks):
        new_count, replayed = self.split(per_task)
        new = replay.recent.sample(new_count, rng, [0])
        rows = (rng.random(replayed) * replay.size[0]).astype(np.int64)
        device = self.learner.device
        self.behaviour = {k: v.to(device) for k, v in replay.extra_rows(0, rows).items()}
        self.batch_size, self.new_count = new_count + replayed, new_count
        return _concat(new, _rows(replay, rows))

    def loss_terms(self, network: str, batch, features) -> dict[str, torch.Tensor]:
        if self.behaviour is None:
            return {}
        old = self.behaviour
        replayed = slice(self.new_count, None)
        obs, action, task = batch.obs[replayed], batch.action[replayed], batch.task[replayed]
        if network == "actor":
            with self.learner.autocast():
                mean, log_std = self.learner.actor(obs, task)
            mean, log_std = mean.float(), log_std.float()
            kl = gaussian_kl(old["mean"], old["log_std"], mean, log_std).sum()  # over the replayed rows
            return {"clear/policy_cloning": self.cfg.clear_policy_cloning * kl / self.batch_size}
        with self.learner.autocast():
            q = self.learner.critic(obs, action, task).float()
        error = (q.T - old["q"]).pow(2).sum()
        return {"clear/value_cloning": self.cfg.clear_value_cloning * error / self.batch_size}


class ThreeRL(TaskFree):
    """SAC + a context window + replay of everything (build_config sets 3RL's context window unless
    given: launch/config/boundaries.py). Each batch is split as the reference's (misc/buffer.py sample,
    curr_task_bfrac = 1/(k+1) at its k-th task): after the k-th detected boundary, a share 1/(k+1) of
    the batch comes from the rows stored since it, the rest from the rows before it; before any
    detection (or without a detector) the whole batch is uniform over everything."""

    keeps_everything = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.stage, self.stage_start = 0, 0  # detected stage k, and the serial number of its first row
        self.replay = None

    def use_replay(self, replay) -> None:
        self.replay = replay

    def start_task(self, ctx) -> None:
        written = int(self.replay.written[0]) if self.replay is not None else 0  # rows stored so far
        if not ctx.resumed:
            self.stage, self.stage_start = ctx.stage, written
        elif self.stage_start > written:  # resumed without its replay (save_in_checkpoint given false): the
            self.stage_start = 0          # refilled rows are all this stage's, so uniform batches

    def sample(self, replay, per_task: int, rng: np.random.Generator, tasks):
        written, size = int(replay.written[0]), int(replay.size[0])
        current, earlier = written - self.stage_start, self.stage_start - (written - size)
        if self.stage == 0 or current <= 0 or earlier <= 0:
            return replay.sample(per_task, rng, tasks)
        n = per_task // (self.stage + 1)  # the reference: floor(curr_task_bfrac * batch_size)
        serials = np.concatenate([self.stage_start + rng.integers(current, size=n),
                                  written - size + rng.integers(earlier, size=per_task - n)])
        return replay.gather(np.zeros(1, np.int64), serials % replay.capacity, per_task)

    def state_dict(self) -> dict:
        return {"stage": self.stage, "stage_start": self.stage_start}

    def load_state_dict(self, state: dict) -> None:
        if state:  # a checkpoint from before the split holds none: its stage 0 (uniform batches)
            self.stage, self.stage_start = int(state["stage"]), int(state["stage_start"])


def replay_config(replay_cfg, strategy, stages: int):
    """The replay settings a strategy's buffer gets: 3RL's holds every stage's capacity."""
    if getattr(strategy, "keeps_everything", False):
        return dataclasses.replace(replay_cfg, capacity_per_task=replay_cfg.capacity_per_task * stages)
    return replay_cfg
