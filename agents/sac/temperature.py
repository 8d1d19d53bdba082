"""The entropy temperatures: per task alpha_t = exp(log alpha_t) (one shared by every task with
`sac.shared_temperature`), their optimizer and their loss. SAC's automatic temperature (Haarnoja
et al. 2018), one per task as in multi-task SAC (Yu et al. 2019):

    J(log alpha_t) = E_t[-log alpha_t * (log pi(a|s) + target entropy)],   log pi held constant,

target entropy -|A| unless `sac.target_entropy` sets it.

The learner (agents/sac/learning.py, `_train_temperature`) trains them after the actor by a step
of their own which, by design, calls no learner hook (no loss terms, no before/after step: the
seats of agents/hooks.py are the networks') and clips no gradient (`sac.max_grad_norm` is the
critic's and the actor's). What does apply: their balancer (agents/balancers; the mean by
default), the synchronizer's `after_backward` and the learning-rate schedule.
"""

from __future__ import annotations

import torch


class Temperature:
    def __init__(self, cfg, num_tasks: int, action_dim: int, device: torch.device):
        """cfg: the SACConfig (init_alpha, target_entropy, alpha_lr, shared_temperature)."""
        self.shared = cfg.shared_temperature
        self.log_alphas = torch.full((1 if self.shared else num_tasks,), float(cfg.init_alpha), device=device).log()
        self.log_alphas.requires_grad_(True)
        self.target_entropy = -float(action_dim) if cfg.target_entropy is None else float(cfg.target_entropy)
        self.optimizer = torch.optim.Adam([self.log_alphas], lr=cfg.alpha_lr, fused=True)

    def log_alpha(self, task: torch.Tensor) -> torch.Tensor:
        """log alpha of each row's task [B] (the shared one, with sac.shared_temperature)."""
        return self.log_alphas[torch.zeros_like(task) if self.shared else task]

    def loss(self, log_pi: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """Per row [B]: -log alpha_task * (log pi + target entropy); no gradient reaches the policy."""
        return -self.log_alpha(task) * (log_pi.detach() + self.target_entropy)
