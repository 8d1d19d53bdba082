"""Rehearsal strategies.

Replay ("perfect memory" in Continual World): every finished task's replay buffer is kept and
each update trains on all tasks seen so far, `batch_size_per_task` transitions of each, with
their own task ids (multi-task SAC over the past). Nothing else changes. CW's perfect-memory
baseline differs: one reservoir buffer of 20M transitions, batches of 512 drawn over all of it.

Behaviour-cloning replay: at the end of a task, keep `memory_per_task` of its states with the
policy's Gaussian (mean, std before the tanh) there; later, the actor's loss gets
coef * mean KL(pi_old(.|s) || pi(.|s)) on a batch of each kept task. This is the cloning half of
ClonEx-SAC (Wołczyk et al. 2022); its exploration half (acting with the best earlier policy at
a task's start) is not implemented, so its results are not ClonEx-SAC's.
"""

from __future__ import annotations

import torch

from agents import seeding
from continual.strategies.base import Strategy, TaskContext, sample_states


def gaussian_kl(old_mean, old_log_std, mean, log_std) -> torch.Tensor:
    """KL(N(old_mean, old_std) || N(mean, std)) per row, summed over action dimensions (the tanh
    leaves it unchanged): behaviour cloning's term (here and CLEAR's)."""
    return (log_std - old_log_std + ((2 * old_log_std).exp() + (old_mean - mean).pow(2))
            / (2 * (2 * log_std).exp()) - 0.5).sum(-1)


class Replay(Strategy):
    rehearses = True
    needs_task_ids = True  # per-task buffers




class BehaviourCloning(Strategy):
    needs_task_ids = True  # one memory per finished task
    default_coef = 1.0
    needs_states = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.memory: list[dict[str, torch.Tensor]] = []  # per finished task: obs, task, mean, log_std
        self.rng = seeding.rng(self.seed, "bc-memory")

    @torch.no_grad()
    def end_task(self, ctx: TaskContext) -> None:
        actor = self.learner.actor
        for task in ctx.tasks:
            obs, _, task_ids = sample_states(ctx.replay, task, self.cfg.memory_per_task, self.rng)
            obs, task_ids = obs.to(self.learner.device), task_ids.to(self.learner.device)
            mean, log_std = actor(obs, task_ids)
            self.memory.append({"obs": obs, "task": task_ids, "mean": mean, "log_std": log_std})

    def penalty(self, network: str):
        if network != "actor" or not self.memory:
            return 0.0
        size = self.learner.cfg.batch_size_per_task
        kl = 0.0
        for kept in self.memory:
            rows = torch.from_numpy(self.rng.integers(len(kept["obs"]), size=size)).to(kept["obs"].device)
            mean, log_std = self.learner.actor(kept["obs"][rows], kept["task"][rows])
            old_mean, old_log_std = kept["mean"][rows], kept["log_std"][rows]
            kl = kl + gaussian_kl(old_mean, old_log_std, mean, log_std).mean()
        return self.coef(self.default_coef) * kl / len(self.memory)

    def state_dict(self) -> dict:
        return {"memory": self.memory, "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.memory = state["memory"]
        self.rng.bit_generator.state = state["rng"]
