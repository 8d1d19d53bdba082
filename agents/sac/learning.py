"""The SAC learner: state (networks, optimizers, temperatures) and one update step.

The update reads like the paper (Haarnoja et al. 2018, with per-task temperatures as in
multi-task SAC, Yu et al. 2019); names follow CleanRL's sac_continuous_action.py.

Update order (`sac.update_order`):
  sequential    critic step, then the actor's loss against the updated critic, then the
                temperatures (CleanRL, Stable-Baselines3);
  simultaneous  critic, actor and temperature gradients all from the networks as they were at
                the start of the update, then every step (Spinning Up, Continual World).

A continual-learning strategy plugs into each update at fixed points, per network:
task-loss gradient -> strategy.observe_gradients -> + gradient of strategy.penalty ->
gradient sync across learner ranks -> strategy.before_step -> optimizer step ->
strategy.after_step. In simultaneous order, before_step/after_step see both networks at once.
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
import torch.nn.functional as F

from agents.networks import SquashedGaussianActor, TwinCritic, actor_options, mlp_options
from agents.replay import Batch
from agents.sac.config import SACConfig
from continual.strategies.base import NO_STRATEGY, Strategy


class SACLearner:
    def __init__(self, cfg: SACConfig, obs_dim: int, action_dim: int, num_tasks: int,
                 device: torch.device, sync_gradients: Callable[[list], None] | None = None):
        """`sync_gradients(params)`: runs after backward, before the optimizer step (data-parallel
        learners all-reduce there); None for a single learner."""
        self.cfg, self.device = cfg, device
        self.sync_gradients = sync_gradients or (lambda params: None)
        self.actor = SquashedGaussianActor(obs_dim, action_dim, num_tasks, **actor_options(cfg)).to(device)
        self.critic = TwinCritic(obs_dim, action_dim, num_tasks, **mlp_options(cfg)).to(device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = torch.full((num_tasks,), float(cfg.init_alpha), device=device).log()
        self.log_alpha.requires_grad_(True)
        self.target_entropy = (-float(action_dim) if cfg.target_entropy is None
                               else float(cfg.target_entropy))
        # fused: one kernel per optimizer step (on CPU, Adam's default is a per-tensor loop).
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=cfg.actor_lr, fused=True)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_lr, fused=True)
        self.alpha_optimizer = torch.optim.Adam([self.log_alpha], lr=cfg.alpha_lr, fused=True)
        self.params = {"actor": list(self.actor.parameters()), "critic": list(self.critic.parameters())}
        self.optimizers = {"actor": self.actor_optimizer, "critic": self.critic_optimizer}
        self._target_params = list(self.critic_target.parameters())
        self.num_updates = 0
        self.all_finite = torch.ones((), dtype=torch.bool, device=device)  # every loss so far was finite

    def critic_loss(self, batch: Batch) -> tuple[torch.Tensor, dict]:
        """Regress both Q's onto the soft Bellman target
            y = r + gamma * (1 - d) * (min_j Q'_j(s', a') - alpha * log pi(a'|s')),  a' ~ pi(.|s')."""
        obs, action, reward, next_obs, terminated, task = batch
        alpha = self.log_alpha.detach().exp()[task]
        with torch.no_grad():
            next_action, next_log_pi = self.actor.sample(next_obs, task)
            qf_next_target = self.critic_target(next_obs, next_action, task)
            min_qf_next_target = qf_next_target.min(dim=0).values - alpha * next_log_pi
            next_q_value = reward + (1.0 - terminated) * self.cfg.gamma * min_qf_next_target
        qf1_a_values, qf2_a_values = self.critic(obs, action, task)
        qf1_loss = F.mse_loss(qf1_a_values, next_q_value)
        qf2_loss = F.mse_loss(qf2_a_values, next_q_value)
        return qf1_loss + qf2_loss, {"loss/qf1": qf1_loss.detach(), "loss/qf2": qf2_loss.detach(),
                                     "q/mean": qf1_a_values.detach().mean()}

    def actor_loss(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """E[alpha * log pi(a|s) - min_j Q_j(s, a)],  a ~ pi(.|s) reparameterised; and log pi."""
        obs, task = batch.obs, batch.task
        pi, log_pi = self.actor.sample(obs, task)
        min_qf_pi = self.critic(obs, pi, task).min(dim=0).values
        return (self.log_alpha.detach().exp()[task] * log_pi - min_qf_pi).mean(), log_pi

    def temperature_loss(self, log_pi: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """Each task's temperature keeps its policy's entropy near the target:
        E[-log alpha_task * (log pi + target entropy)]."""
        return (-self.log_alpha[task] * (log_pi.detach() + self.target_entropy)).mean()

    def _gradients(self, network: str, loss: torch.Tensor, strategy: Strategy) -> None:
        """The network's .grad: its loss's gradient, the strategy's penalty's, synced across ranks."""
        params = self.params[network]
        self.optimizers[network].zero_grad(set_to_none=True)
        loss.backward(inputs=params)  # only this network's parameters (the actor's loss reaches the critic)
        strategy.observe_gradients(network)  # e.g. SI's path integral takes the task loss's own gradient
        penalty = strategy.penalty(network)
        if torch.is_tensor(penalty):
            penalty.backward(inputs=[p for p in params if p.requires_grad])
        self.sync_gradients(params)

    def _step(self, networks: tuple[str, ...], strategy: Strategy) -> None:
        strategy.before_step(networks)
        for network in networks:
            self.optimizers[network].step()
        strategy.after_step(networks)

    def update(self, batch: Batch, strategy: Strategy = NO_STRATEGY) -> dict[str, torch.Tensor]:
        """One gradient step on critics, actor and temperatures. Returns detached loss tensors."""
        batch = Batch(*(x.to(self.device, non_blocking=True) for x in batch))
        if self.cfg.update_order == "simultaneous":
            qf_loss, info = self.critic_loss(batch)
            actor_loss, log_pi = self.actor_loss(batch)
            self._gradients("critic", qf_loss, strategy)
            self._gradients("actor", actor_loss, strategy)
            self._step(("critic", "actor"), strategy)
        else:
            qf_loss, info = self.critic_loss(batch)
            self._gradients("critic", qf_loss, strategy)
            self._step(("critic",), strategy)
            actor_loss, log_pi = self.actor_loss(batch)
            self._gradients("actor", actor_loss, strategy)
            self._step(("actor",), strategy)

        alpha_loss = self.temperature_loss(log_pi, batch.task)
        self.alpha_optimizer.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.sync_gradients([self.log_alpha])
        self.alpha_optimizer.step()

        # Target critics track the critics: theta' <- (1 - tau) theta' + tau theta
        with torch.no_grad():
            torch._foreach_lerp_(self._target_params, self.params["critic"], self.cfg.tau)
            # No host sync here: the flag is read when the trainer checks for divergence.
            self.all_finite &= torch.isfinite(torch.stack([qf_loss, actor_loss, alpha_loss])).all()
        self.num_updates += 1
        return {**info, "loss/actor": actor_loss.detach(), "loss/alpha": alpha_loss.detach(),
                "policy/entropy": -log_pi.detach().mean()}

    def nonfinite(self) -> str | None:
        """Why the learner diverged (a non-finite loss since it was built, or non-finite weights),
        or None. Reads the device: call it at log/checkpoint points, not in the update."""
        if not bool(self.all_finite):
            return "a non-finite loss"
        for name, module in (("actor", self.actor), ("critic", self.critic)):
            if not all(bool(torch.isfinite(p).all()) for p in module.parameters()):
                return f"non-finite {name} weights"
        if not bool(torch.isfinite(self.log_alpha).all()):
            return "a non-finite temperature"
        return None

    def reset_optimizers(self) -> None:
        """Fresh optimizer state (Continual World does this at every new task)."""
        for optimizer in (self.actor_optimizer, self.critic_optimizer, self.alpha_optimizer):
            optimizer.state.clear()

    def state_dict(self) -> dict:
        return {
            "actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
            "critic_target": self.critic_target.state_dict(), "log_alpha": self.log_alpha.detach(),
            "actor_optimizer": self.actor_optimizer.state_dict(),
            "critic_optimizer": self.critic_optimizer.state_dict(),
            "alpha_optimizer": self.alpha_optimizer.state_dict(), "num_updates": self.num_updates,
        }

    def load_state_dict(self, state: dict) -> None:
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.critic_target.load_state_dict(state["critic_target"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self.actor_optimizer.load_state_dict(state["actor_optimizer"])
        self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        self.alpha_optimizer.load_state_dict(state["alpha_optimizer"])
        self.num_updates = state["num_updates"]
