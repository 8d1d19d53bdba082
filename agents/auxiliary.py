"""Auxiliary tasks: extra losses that shape a state representation, each a learner hook
(agents/hooks.py) with its own small head, its own weight (`aux.<name>`, 0 = off) and its own
TensorBoard scalar (`loss/aux/<name>`).

The representation z = phi(s) they train (`aux.on`):
  encoder  the shared encoder (sac.encoder): the critic's loss and these losses train it, the
           actor reads it detached (mtrl's and SAC-AE's pattern); the target encoder is the
           target critic's copy;
  actor    the actor's trunk features (it reads the observation only); no target network, so
           targets use the online features, detached.

    reward    r(z, a): the reward from the representation and the action; MSE
    dynamics  latent forward model: predict phi(s') from (z, a), target stop-gradient; 0.5 x MSE
              (DeepMDP's transition loss as in mtrl's deepmdp.py; TD7/SALE's objective)
    inverse   predict a from (z, z') (tanh output); MSE, both embeddings trained
    pvn       proto-value networks (Farebrother et al. 2023; google-research pvn/): `pvn_tasks`
              indicator rewards r_i(s) = 1[f_i(s) + b_i > 0] on the raw observation, f a frozen
              random network, each b_i fitted by the pinball loss mean(u ((1 - p) - 1[u < 0])),
              u = f_i(s) + b_i, so that r_i fires on a fraction p = `pvn_rate` of states; per-indicator
              values Q_i(z, a) learned by TD toward r_i(s) + gamma (1 - d) E_{a'~U}[Q'_i(z', a')]
              (0.5 x squared error, Polyak target heads at rate `pvn_tau`; z' from the target
              encoder, which moves at `sac.encoder_tau` when that is set).

Heads: Linear -> LayerNorm -> ReLU -> Linear (mtrl's DeepMDP heads), width `aux.hidden`.
Deviations from the references, stated: reward prediction reads (z, a), not DeepMDP's predicted
next latent; PVN, defined for discrete actions and trained offline on its own, here runs jointly
with SAC, its values are Q_i(z, a) from a small MLP, its target averages `pvn_actions` actions
drawn uniformly from the action box (their rule: the mean over all actions, i.e. the uniform
policy), its random indicator network is an MLP on the state without a final ReLU (theirs: a
Nature-DQN on pixels, ending in a ReLU), and it has no bias-only warm-up.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from agents import seeding
from agents.hooks import LearnerHook
from agents.replay import Batch


@dataclass
class AuxConfig:
    """Metadata: the constraints launch/config/overrides.py checks."""
    reward: float = field(default=0.0, metadata={"min": 0, "note": "a loss weight; 0: off"})  # loss weights
    dynamics: float = field(default=0.0, metadata={"min": 0, "note": "a loss weight; 0: off"})
    inverse: float = field(default=0.0, metadata={"min": 0, "note": "a loss weight; 0: off"})
    pvn: float = field(default=0.0, metadata={"min": 0, "note": "a loss weight; 0: off"})
    on: str = field(  # the representation they train
        default="", metadata={"choices": ("encoder", "actor"), "empty": "the encoder if there is one"})
    hidden: int = field(default=256, metadata={"above": 0})      # hidden width of the auxiliary heads
    pvn_tasks: int = field(default=100, metadata={"above": 0})   # PVN: number of indicator rewards (the paper's)
    pvn_rate: float = field(default=0.01, metadata={"above": 0, "below": 1})  # PVN: fraction of states each
                                                                              # indicator fires on
    pvn_actions: int = field(default=8, metadata={"above": 0})   # PVN: drawn next actions averaged in the TD target
    pvn_tau: float = field(default=0.01, metadata={"above": 0, "max": 1})  # PVN: Polyak rate of the target
                                                                           # value heads (theirs: 0.01)


NAMES = ("reward", "dynamics", "inverse", "pvn")


def _head(in_features: int, hidden: int, out_features: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_features, hidden), nn.LayerNorm(hidden), nn.ReLU(),
                         nn.Linear(hidden, out_features))


class Representation:
    """phi(s) [B, D] for the auxiliary tasks, computed once per update batch and shared by them."""

    def __init__(self, learner, on: str):
        self.on, self.learner = on, learner
        self.network = "critic" if on == "encoder" else "actor"  # whose optimizer trains it
        self.size = learner.critic.encoder.out_features if on == "encoder" else learner.actor.net.trunk.out_features
        self._cache: tuple | None = None

    def phi(self, obs: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        if self.on == "encoder":
            return self.learner.critic.encoder(obs, task)
        actor = self.learner.actor
        return actor.net.features(actor._input(obs, task), task)[0]

    @torch.no_grad()
    def target(self, obs: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        if self.on == "encoder":
            return self.learner.critic_target.encoder(obs, task)
        return self.phi(obs, task)

    def embed(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(phi(s), phi(s')) of the batch, with gradients; one forward pass per batch."""
        if self._cache is None or self._cache[0] is not batch:
            both = self.phi(torch.cat([batch.obs, batch.next_obs]), torch.cat([batch.task, batch.task]))
            self._cache = (batch, *both.chunk(2))
        return self._cache[1], self._cache[2]


class AuxiliaryTask(LearnerHook):
    name = ""

    def __init__(self, weight: float, representation: Representation, head: nn.Module):
        self.weight, self.rep, self.head = weight, representation, head

    def parameters(self, network: str) -> list[nn.Parameter]:
        return [p for p in self.head.parameters() if p.requires_grad] if network == self.rep.network else []

    def synced_tensors(self, network: str) -> dict[str, torch.Tensor]:
        """Every tensor of the head, trained or frozen (PVN's target heads and indicators)."""
        if network != self.rep.network:
            return {}
        return {f"{self.name}.{k}": v for k, v in self.head.state_dict(keep_vars=True).items()}

    def loss_terms(self, network: str, batch, features) -> dict[str, torch.Tensor]:
        if network != self.rep.network:
            return {}
        return {f"aux/{self.name}": self.weight * self.loss(batch)}

    def loss(self, batch: Batch) -> torch.Tensor:
        raise NotImplementedError

    def state_dict(self) -> dict:
        return self.head.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.head.load_state_dict(state)


class RewardPrediction(AuxiliaryTask):
    name = "reward"

    def loss(self, batch):
        z, _ = self.rep.embed(batch)
        return F.mse_loss(self.head(torch.cat([z, batch.action], -1)).squeeze(-1), batch.reward)


class LatentDynamics(AuxiliaryTask):
    name = "dynamics"

    def loss(self, batch):
        z, z_next = self.rep.embed(batch)
        return 0.5 * F.mse_loss(self.head(torch.cat([z, batch.action], -1)), z_next.detach())


class InverseDynamics(AuxiliaryTask):
    name = "inverse"

    def loss(self, batch):
        z, z_next = self.rep.embed(batch)
        return F.mse_loss(torch.tanh(self.head(torch.cat([z, z_next], -1))), batch.action)


class ProtoValues(AuxiliaryTask):
    name = "pvn"

    class Parts(nn.Module):
        def __init__(self, obs_dim, action_dim, size, cfg: AuxConfig, generator: torch.Generator):
            super().__init__()
            # The frozen random indicator network: an MLP (Xavier weights, zero biases). Theirs ends in a
            # ReLU; on low-dimensional states that leaves some indicators zero almost everywhere (dead).
            self.indicator = nn.Sequential(nn.Linear(obs_dim, cfg.hidden), nn.ReLU(),
                                           nn.Linear(cfg.hidden, cfg.pvn_tasks))
            with torch.no_grad():
                for layer in self.indicator[0::2]:
                    bound = (6 / sum(layer.weight.shape)) ** 0.5
                    layer.weight.copy_(torch.rand(layer.weight.shape, generator=generator) * 2 * bound - bound)
                    layer.bias.zero_()
            self.indicator.requires_grad_(False)
            self.bias = nn.Parameter(torch.zeros(cfg.pvn_tasks))  # fitted so that each fires on p of states
            self.values = _head(size + action_dim, cfg.hidden, cfg.pvn_tasks)
            self.target = copy.deepcopy(self.values).requires_grad_(False)

    def __init__(self, weight, representation, obs_dim, action_dim, cfg: AuxConfig, gamma: float, seed: int):
        generator = torch.Generator().manual_seed(seeding.seed_for(seed, "pvn-indicators"))
        super().__init__(weight, representation, self.Parts(obs_dim, action_dim, representation.size, cfg, generator))
        self.rate, self.actions, self.tau, self.gamma = cfg.pvn_rate, cfg.pvn_actions, cfg.pvn_tau, gamma
        # Its own stream for the drawn actions: turning PVN on leaves the learner's draws as they were.
        self.draws = torch.Generator().manual_seed(seeding.seed_for(seed, "pvn-actions"))

    def indicators(self, obs: torch.Tensor) -> torch.Tensor:
        """u = f(s) + b [B, T]; indicator i fires where u_i > 0."""
        return self.head.indicator(obs) + self.head.bias

    def loss(self, batch):
        u = self.indicators(batch.obs)
        pinball = (u * ((1 - self.rate) - (u < 0).float())).mean()   # moves only the biases
        rewards = (u > 0).float().detach()
        z, _ = self.rep.embed(batch)
        q = self.head.values(torch.cat([z, batch.action], -1))
        with torch.no_grad():
            z_next = self.rep.target(batch.next_obs, batch.task)
            k, b = self.actions, len(z_next)
            actions = (torch.rand(k, b, batch.action.shape[-1], generator=self.draws) * 2 - 1).to(z.device)
            q_next = self.head.target(torch.cat([z_next.expand(k, -1, -1), actions], -1)).mean(0)
            y = rewards + self.gamma * (1 - batch.terminated)[:, None] * q_next
        return 0.5 * (q - y).pow(2).mean() + pinball

    def state_dict(self) -> dict:
        return {"head": self.head.state_dict(), "draws": self.draws.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.head.load_state_dict(state["head"])
        self.draws.set_state(state["draws"])

    @torch.no_grad()
    def after_step(self, networks) -> None:
        if self.rep.network in networks:
            torch._foreach_lerp_(list(self.head.target.parameters()), list(self.head.values.parameters()), self.tau)


def make_auxiliary_tasks(cfg: AuxConfig, learner, obs_dim: int, action_dim: int, seed: int) -> list[AuxiliaryTask]:
    """The auxiliary tasks with a positive weight, on one shared Representation."""
    if not any(getattr(cfg, name) for name in NAMES):
        return []
    on = cfg.on or ("encoder" if learner.critic.encoder is not None else "actor")
    rep = Representation(learner, on)
    d, a, h = rep.size, action_dim, cfg.hidden
    tasks = []
    if cfg.reward:
        tasks.append(RewardPrediction(cfg.reward, rep, _head(d + a, h, 1)))
    if cfg.dynamics:
        tasks.append(LatentDynamics(cfg.dynamics, rep, _head(d + a, h, d)))
    if cfg.inverse:
        tasks.append(InverseDynamics(cfg.inverse, rep, _head(2 * d, h, a)))
    if cfg.pvn:
        tasks.append(ProtoValues(cfg.pvn, rep, obs_dim, action_dim, cfg, learner.cfg.gamma, seed))
    device = learner.device
    for task in tasks:
        task.head.to(device)
    return tasks
