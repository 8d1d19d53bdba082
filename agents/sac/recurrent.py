"""Recurrent SAC's update (`sac.memory`: gru | lstm) on windows of steps from agents/sequence_replay.py,
as Ni et al. 2022's policies/models/policy_rnn.py computes it (networks: agents/recurrent.py).

A window of L steps becomes L + 1 positions: observations o_0 .. o_L (the first step's observation,
then each step's next observation), previous actions (0, a_0 .. a_{L-1}) and previous rewards
(0, r_0 .. r_{L-1}); every memory reads them from a zero state (the actor's over the first L, which
is the same for those positions: the memory is causal; the critic's once per pass).
  critic   Q_j(h_t, o_t, a_t) at positions 0 .. L-1 against
           y_t = r_t + gamma (1 - d_t) (min_j Q'_j(h'_{t+1}, o_{t+1}, a'_{t+1}) - alpha log pi(a'_{t+1}))
           with a' drawn from the online actor at positions 1 .. L (the target critic's memory h');
  actor    alpha log pi(a_t) - min_j Q_j(h_t, o_t, a_t), a_t ~ pi(. | h^pi_t, o_t), at positions 0 .. L-1;
           the critic's memory reads the real history (theirs too: the actor's gradient reaches Q
           through a_t only), so it runs without gradient here;
  losses   means over the real steps (mask), per task: each task's loss is its own masked mean.
The temperature's loss is ours (agents/sac/temperature.py: -log alpha (log pi + target) per step,
masked); theirs is -alpha (masked mean of log pi + target). `sac.memory_burn_in` steps at the start
of a window that starts mid-episode feed the memories but carry no loss (R2D2's burn-in; theirs has
none).

Deviations from their code, besides the temperature's loss: the masked mean is per task (a task's
loss is the mean over its real steps; theirs: one mean over every real step of the batch, the same
with one task), windows are sampled as agents/sequence_replay.py says, and the previous action and
reward at a window's first position are 0 even when the window starts mid-episode (as theirs).
"""

from __future__ import annotations

import torch

from agents.balancers import TaskLosses
from agents.sac.learning import SACLearner
from agents.sequence_replay import SequenceBatch, positions


class RecurrentSACLearner(SACLearner):
    def __init__(self, cfg, obs_dim: int, action_dim: int, num_tasks: int, *args, **kwargs):
        super().__init__(cfg, obs_dim, action_dim, num_tasks, *args, **kwargs)
        self.num_tasks = num_tasks
        self.weight = self.mask = None  # set by each update

    def update(self, batch: SequenceBatch, hooks=()) -> dict[str, torch.Tensor]:
        batch = SequenceBatch(*(x.to(self.device, non_blocking=True) for x in batch))
        self.weight = self.weights(batch).flatten()  # this update's step weights, row by row
        self.mask = batch.mask  # which batch they belong to (hooks may compute losses on others: A-GEM)
        return super().update(batch, hooks)

    def weights(self, batch: SequenceBatch) -> torch.Tensor:
        """[B, L]: each step's weight in its task's loss, mask * (the task's steps / its real steps),
        so that a task's mean over its rows is its masked mean. Burn-in steps weigh 0, in windows
        that start mid-episode (one that starts at its episode's first step has the exact zero
        state already: burning it in would leave an episode's first steps without any loss)."""
        mask = batch.mask.clone()
        mask[:, :self.cfg.memory_burn_in] *= batch.first[:, None]
        length = mask.shape[1]
        real = torch.zeros(self.num_tasks, device=mask.device).index_add_(0, batch.task, mask.sum(dim=1))
        steps = torch.bincount(batch.task, minlength=self.num_tasks) * length
        return mask * (steps / real.clamp(min=1.0))[batch.task][:, None]

    def _weight(self, batch: SequenceBatch) -> torch.Tensor:
        return self.weight if batch.mask is self.mask else self.weights(batch).flatten()

    def critic_pass(self, batch: SequenceBatch):
        """(Q1, Q2 [B, L], the target y [B, L], the critic trunk's features)."""
        obs, prev_action, prev_reward = positions(batch)
        alpha = self.temperature.log_alpha(batch.task).detach().exp()[:, None]
        with torch.no_grad():
            with self.autocast():
                next_action, next_log_pi = self.actor.sample(obs, prev_action, prev_reward, batch.task)
                target_history = self.critic_target.history(obs, prev_action, prev_reward, batch.task)
                q_next = self.critic_target.q(target_history, obs, next_action, batch.task)
            min_q_next = (q_next.min(dim=0).values - alpha * next_log_pi)[:, 1:]
            y = batch.reward + (1.0 - batch.terminated) * self.cfg.gamma * min_q_next
        with self.autocast():
            history = self.critic.history(obs, prev_action, prev_reward, batch.task)
            q, features = self.critic.q(history[:, :-1], obs[:, :-1], batch.action, batch.task, with_features=True)
        return q[0], q[1], y, features

    def actor_pass(self, batch: SequenceBatch):
        """(alpha log pi - min_j Q_j [B, L], log pi [B, L], the policy trunk's features)."""
        obs, prev_action, prev_reward = positions(batch)
        with self.autocast():
            action, log_pi, features = self.actor.sample(obs[:, :-1], prev_action[:, :-1], prev_reward[:, :-1],
                                                         batch.task, with_features=True)
            with torch.no_grad():
                history = self.critic.history(obs, prev_action, prev_reward, batch.task)[:, :-1]
            q = self.critic.q(history, obs[:, :-1], action, batch.task).min(dim=0).values
        alpha = self.temperature.log_alpha(batch.task).detach().exp()[:, None]
        return alpha * log_pi - q, log_pi, features

    def critic_loss(self, batch: SequenceBatch) -> tuple[TaskLosses, torch.Tensor, dict]:
        weight, rows = self._weight(batch), batch.task.repeat_interleave(batch.mask.shape[1])
        with self.prepare(self.balancers["critic"]) as prepared:
            q1, q2, y, features = self.passes.critic(batch)

        def again():
            with self.autocast():
                obs, prev_action, prev_reward = positions(batch)
                history = self.critic.history(obs, prev_action, prev_reward, batch.task)
                q = self.critic.q(history[:, :-1], obs[:, :-1], batch.action, batch.task)
            return [((q[0] - y) ** 2).flatten() * weight, ((q[1] - y) ** 2).flatten() * weight]
        losses = prepared.losses([((q1 - y) ** 2).flatten() * weight, ((q2 - y) ** 2).flatten() * weight], rows, again)
        mask = (weight > 0).view_as(q1)  # the steps with a loss: no host sync
        return losses, features, {"q/mean": (q1.detach() * mask).sum() / mask.sum().clamp(min=1)}

    def actor_loss(self, batch: SequenceBatch):
        weight, rows = self._weight(batch), batch.task.repeat_interleave(batch.mask.shape[1])
        with self.prepare(self.balancers["actor"], replay_draws=True) as prepared:
            loss, log_pi, features = self.passes.actor(batch)
        losses = prepared.losses([loss.flatten() * weight], rows,
                                 lambda: [self.actor_pass(batch)[0].flatten() * weight])
        return losses, features, log_pi.flatten()

    def temperature_loss(self, log_pi: torch.Tensor, task: torch.Tensor) -> TaskLosses:
        """Per real step (weighted as the other losses); task: each window's [B]."""
        weight = self.weight
        rows = task.repeat_interleave(len(weight) // len(task))
        with self.prepare(self.balancers["alpha"]) as prepared:
            loss = self.temperature.loss(log_pi, rows) * weight
        return prepared.losses([loss], rows, lambda: [self.temperature.loss(log_pi, rows) * weight])

    def entropy(self, log_pi: torch.Tensor) -> torch.Tensor:
        """The policy's entropy estimate over the real steps."""
        return -(log_pi.detach() * self.weight).mean()

    def probe_passes(self, batch: SequenceBatch, record) -> torch.Tensor:
        batch = SequenceBatch(*(x.to(self.device) for x in batch))
        with torch.no_grad():
            with record(self.critic):
                self.critic_pass(batch)
            with record(self.actor):
                log_pi = self.actor_pass(batch)[1]
        return -(log_pi.flatten() * self.weights(batch).flatten()).mean()


class ContextSACLearner(SACLearner):
    """SAC on single transitions with 3RL's context windows (agents/context.py): each network reads
    (a_j, r_j, s_j) for j = t-K .. t-1 beside s_t; the target reads the window shifted by one step."""

    def critic_pass(self, obs, action, reward, next_obs, terminated, task, history):
        alpha = self.temperature.log_alpha(task).detach().exp()
        now, ahead = history[:, :-1], history[:, 1:]
        with torch.no_grad():
            with self.autocast():
                next_action, next_log_pi = self.actor.sample(next_obs, ahead, task)
                q_next = self.critic_target(next_obs, next_action, ahead, task)
            y = reward + (1.0 - terminated) * self.cfg.gamma * (q_next.min(dim=0).values - alpha * next_log_pi)
        with self.autocast():
            (q1, q2), features = self.critic(obs, action, now, task, with_features=True)
        return q1, q2, y, features

    def actor_pass(self, obs, task, history):
        now = history[:, :-1]
        with self.autocast():
            pi, log_pi, features = self.actor.sample(obs, now, task, with_features=True)
            q = self.critic(obs, pi, now, task).min(dim=0).values
        return self.temperature.log_alpha(task).detach().exp() * log_pi - q, log_pi, features

    def probe_passes(self, batch, record) -> torch.Tensor:
        batch = type(batch)(*(x.to(self.device) for x in batch))
        with torch.no_grad():
            with record(self.critic):
                self.critic_pass(*batch)
            with record(self.actor):
                log_pi = self.actor_pass(batch.obs, batch.task, batch.history)[1]
        return -log_pi.mean()

    def critic_loss(self, batch):
        with self.prepare(self.balancers["critic"]) as prepared:
            q1, q2, y, features = self.passes.critic(*batch)

        def again():
            with self.autocast():
                q = self.critic(batch.obs, batch.action, batch.history[:, :-1], batch.task)
            return [(q[0] - y) ** 2, (q[1] - y) ** 2]
        losses = prepared.losses([(q1 - y) ** 2, (q2 - y) ** 2], batch.task, again)
        return losses, features, {"q/mean": q1.detach().mean()}

    def actor_loss(self, batch):
        obs, task, history = batch.obs, batch.task, batch.history
        with self.prepare(self.balancers["actor"], replay_draws=True) as prepared:
            loss, log_pi, features = self.passes.actor(obs, task, history)
        return prepared.losses([loss], task, lambda: [self.actor_pass(obs, task, history)[0]]), features, log_pi
