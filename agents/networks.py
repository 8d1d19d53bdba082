"""Task-conditioned networks, fused so that one forward pass serves a whole multi-task batch.

A `TaskNetwork` is a trunk (agents/trunks.py: TRUNKS) followed by a head (agents/heads.py:
HEADS), evaluated for K ensemble members at once (K=2 fuses SAC's twin critics; K=1 is the
actor). Task identity reaches it two ways, combinable:
  - `task_input`: a one-hot of the task index is appended to the input;
  - the head: "single" (one shared output layer), "multi" (one per task), "hyper" (generated
    per task by a hypernetwork); and a trunk may be task-conditioned itself ("hyper").
Task id hidden from the policy: task_input=False with head=single and a shared trunk.

Shared and per-task parameters: `named_shared_parameters()` yields what every task uses (the
trunk's shared layers; a shared head), leaving out per-task heads and task embeddings. Continual
World's regularizers and PackNet work on these only (CW's `common_variables`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from agents.heads import HEADS
from agents.trunks import TRUNKS

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


def hyper_options(sac) -> dict:
    """agents/hypernets.py Hypernetwork keyword arguments from a SACConfig."""
    return dict(embedding_dim=sac.hyper_embedding_dim, hyper_hidden=sac.hyper_hidden, kind=sac.hypernet,
                chunk_size=sac.hyper_chunk_size, chunk_embedding_dim=sac.hyper_chunk_embedding_dim,
                growth=sac.hyper_growth)


def _trunk_options(sac, trunk: str) -> dict:
    options = dict(activation=sac.activation, layer_norm=sac.layer_norm)
    if trunk == "hyper":
        options.update(hyper_options(sac))
    if trunk in ("care", "moore"):
        options["experts"] = sac.experts
    return options


def network_options(sac, critic: bool = False) -> dict:
    """TaskNetwork keyword arguments from a SACConfig (one place for the actor, critic and copies).
    Behind a shared encoder the task reaches a network through the encoder (and its head)."""
    task = dict(task_input=sac.task_input, task_embedding_dim=sac.task_embedding_dim) if not sac.encoder else \
        dict(task_input=False, task_embedding_dim=0)
    sizes = sac.critic_hidden_sizes if critic and sac.critic_hidden_sizes else sac.hidden_sizes
    return dict(hidden_sizes=tuple(sizes), trunk=sac.trunk, head=sac.head, **task,
                trunk_options=_trunk_options(sac, sac.trunk),
                head_options=hyper_options(sac) if sac.head == "hyper" else {})


def encoder_options(sac) -> dict:
    """SharedEncoder keyword arguments from a SACConfig (sac.encoder set)."""
    return dict(trunk=sac.encoder, hidden_sizes=tuple(sac.encoder_sizes), task_input=sac.task_input,
                task_embedding_dim=sac.task_embedding_dim, trunk_options=_trunk_options(sac, sac.encoder))


def actor_options(sac) -> dict:
    """SquashedGaussianActor keyword arguments from a SACConfig: the network's and the log-std range."""
    return dict(network_options(sac), log_std_min=sac.log_std_min, log_std_max=sac.log_std_max,
                log_std_mode=sac.log_std_mode)


class TaskInput(nn.Module):
    """What a network's input carries about the task: a one-hot (`task_input`) and/or a learned
    task embedding, L2-normalised (BRC's: e / ||e||, initialised N(0, 1/d)). Deviation from BRC:
    every network has its own embedding, trained by its own loss; BRC's actor reads the critic's
    embedding (jaxrl/agent/update.py build_actor_input), which the actor loss does not train."""

    def __init__(self, num_tasks: int, one_hot: bool, embedding_dim: int):
        super().__init__()
        self.one_hot = one_hot
        self.size = (num_tasks if one_hot else 0) + embedding_dim
        self.register_buffer("task_codes", torch.eye(num_tasks), persistent=False)  # one-hot rows
        self.embedding = nn.Parameter(torch.randn(num_tasks, embedding_dim) / embedding_dim ** 0.5) \
            if embedding_dim else None

    def task_axes(self) -> dict[str, tuple[int, int]]:
        return {"embedding": (0, 1)} if self.embedding is not None else {}  # row t: task t's

    def forward(self, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        parts = [x]
        if self.one_hot:
            parts.append(self.task_codes[task].to(x.dtype))
        if self.embedding is not None:
            e = self.embedding[task]
            parts.append(e / e.norm(dim=-1, keepdim=True))
        return torch.cat(parts, dim=-1) if len(parts) > 1 else x


class SharedEncoder(nn.Module):
    """One trunk (sac.encoder) on the observation whose features feed the actor and the critic
    (mtrl's and SAC-AE's pattern): the critic owns it and its loss (and auxiliary losses) train it;
    the actor reads it detached. (obs [B, d], task [B]) -> [B, H]."""

    def __init__(self, obs_dim: int, num_tasks: int, trunk: str, hidden_sizes: tuple[int, ...], task_input: bool,
                 task_embedding_dim: int = 0, trunk_options: dict | None = None):
        super().__init__()
        self.task_input = TaskInput(num_tasks, task_input, task_embedding_dim)
        self.trunk = TRUNKS[trunk](1, obs_dim + self.task_input.size, tuple(hidden_sizes), num_tasks,
                                   **(trunk_options or {}))
        self.out_features = self.trunk.out_features

    def forward(self, obs: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        return self.trunk(self.task_input(obs, task), task)[0]

    def named_shared_parameters(self):
        for name, p in self.named_parameters():
            if name == "task_input.embedding" or (name.startswith("trunk.")
                                                  and self.trunk.task_specific(name.removeprefix("trunk."))):
                continue
            yield name, p


class TaskNetwork(nn.Module):
    """K task-conditioned networks evaluated together: (x[B, in], task[B]) -> [K, B, out]."""

    def __init__(self, ensemble: int, in_features: int, out_features: int, num_tasks: int,
                 hidden_sizes: tuple[int, ...], trunk: str = "mlp", head: str = "multi", task_input: bool = True,
                 task_embedding_dim: int = 0, trunk_options: dict | None = None, head_options: dict | None = None):
        super().__init__()
        self.ensemble, self.num_tasks = ensemble, num_tasks
        self.task_input = TaskInput(num_tasks, task_input, task_embedding_dim)
        self.trunk = TRUNKS[trunk](ensemble, in_features + self.task_input.size, tuple(hidden_sizes),
                                   num_tasks, **(trunk_options or {}))
        self.head = HEADS[head](ensemble, self.trunk.out_features, out_features, num_tasks, **(head_options or {}))

    def features(self, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """The trunk's output [K, B, H]: what the head, and auxiliary losses, read."""
        return self.trunk(self.task_input(x, task), task)

    def forward(self, x: torch.Tensor, task: torch.Tensor, with_features: bool = False):
        features = self.features(x, task)
        if not torch.is_autocast_enabled(features.device.type):
            out = self.head(features, task)
        else:  # sac.precision=bf16: the trunk ran in bf16, the output layer runs in fp32 (a bf16 Q of
            # ~1,000 would be rounded to steps of 4, coarser than a step's reward)
            features = features.float()
            with torch.autocast(features.device.type, enabled=False):
                out = self.head(features, task)
        return (out, features) if with_features else out

    def named_shared_parameters(self):
        """(name, parameter) of what every task uses: not per-task heads, not task embeddings."""
        for name, p in self.named_parameters():
            if (name.startswith("head.") and self.head.per_task) or name == "task_input.embedding":
                continue
            if name.startswith("trunk.") and self.trunk.task_specific(name.removeprefix("trunk.")):
                continue
            yield name, p


class SquashedGaussianActor(nn.Module):
    """pi(a|s, task): a Gaussian squashed by tanh into the action box (SAC, Haarnoja et al. 2018).
    The network's log-std output is bounded to [log_std_min, log_std_max] by a rescaled tanh
    (log_std_mode="tanh", CleanRL's) or by clipping (log_std_mode="clip", Spinning Up's and
    Continual World's, with [-20, 2])."""

    def __init__(self, obs_dim: int, action_dim: int, num_tasks: int, log_std_min: float = LOG_STD_MIN,
                 log_std_max: float = LOG_STD_MAX, log_std_mode: str = "tanh", encoder: SharedEncoder | None = None,
                 **network_kwargs):
        """encoder: a SharedEncoder the actor reads detached (its parameters are part of the policy
        vector actors receive, but the actor's loss never trains them: `own_parameters`)."""
        super().__init__()
        self.encoder = encoder
        in_features = encoder.out_features if encoder is not None else obs_dim
        self.net = TaskNetwork(1, in_features, 2 * action_dim, num_tasks, **network_kwargs)
        self.log_std_min, self.log_std_max, self.log_std_mode = log_std_min, log_std_max, log_std_mode

    def own_parameters(self) -> list[nn.Parameter]:
        """What the actor's loss trains: everything but a shared encoder."""
        return list(self.net.parameters())

    def _input(self, obs: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        return obs if self.encoder is None else self.encoder(obs, task).detach()

    def _gaussian(self, out: torch.Tensor):
        mean, log_std = out[0].chunk(2, dim=-1)
        if self.log_std_mode == "clip":
            log_std = log_std.clamp(self.log_std_min, self.log_std_max)
        else:
            log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (torch.tanh(log_std) + 1)
        return mean, log_std

    def forward(self, obs: torch.Tensor, task: torch.Tensor):
        """(mean, log_std) of the Gaussian before the tanh."""
        return self._gaussian(self.net(self._input(obs, task), task))

    def sample(self, obs: torch.Tensor, task: torch.Tensor, with_features: bool = False):
        """Reparameterised sample a = tanh(u), u ~ N(mean, std), and its log-probability (and the
        trunk's features [1, B, H] with_features)."""
        out, features = self.net(self._input(obs, task), task, with_features=True)
        mean, log_std = self._gaussian(out)
        u = mean + log_std.exp() * torch.randn_like(mean)
        log_prob = (-0.5 * ((u - mean) / log_std.exp()).pow(2) - log_std
                    - 0.5 * math.log(2 * math.pi)).sum(-1)
        # log|d tanh(u)/du| = log(1 - tanh(u)^2), written in a numerically stable form.
        log_prob = log_prob - (2 * (math.log(2) - u - F.softplus(-2 * u))).sum(-1)
        return (torch.tanh(u), log_prob, features) if with_features else (torch.tanh(u), log_prob)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, task: torch.Tensor, deterministic: bool,
            generator: torch.Generator | None = None) -> torch.Tensor:
        """An action to take (no log-probability): tanh(mean), or a sample drawn with `generator`
        (a CPU generator; None: torch's global one)."""
        mean, log_std = self(obs, task)
        if deterministic:
            return torch.tanh(mean)
        noise = (torch.randn_like(mean) if generator is None
                 else torch.randn(mean.shape, generator=generator).to(mean.device))
        return torch.tanh(mean + log_std.exp() * noise)

    def named_shared_parameters(self):
        return ((f"net.{n}", p) for n, p in self.net.named_shared_parameters())


class TwinCritic(nn.Module):
    """Q1(s, a, task) and Q2(s, a, task), fused: returns [2, B] (and the trunk's features [2, B, H]).
    With a shared encoder the critic owns it: Q(s, a) = net([encoder(s), a]), trained by its loss."""

    def __init__(self, obs_dim: int, action_dim: int, num_tasks: int, encoder: SharedEncoder | None = None,
                 **network_kwargs):
        super().__init__()
        self.encoder = encoder
        in_features = encoder.out_features if encoder is not None else obs_dim
        self.net = TaskNetwork(2, in_features + action_dim, 1, num_tasks, **network_kwargs)

    def forward(self, obs: torch.Tensor, action: torch.Tensor, task: torch.Tensor, with_features: bool = False):
        state = obs if self.encoder is None else self.encoder(obs, task)
        out = self.net(torch.cat([state, action], dim=-1), task, with_features=with_features)
        return (out[0].squeeze(-1), out[1]) if with_features else out.squeeze(-1)

    def named_shared_parameters(self):
        encoder = self.encoder.named_shared_parameters() if self.encoder is not None else ()
        return [*((f"encoder.{n}", p) for n, p in encoder),
                *((f"net.{n}", p) for n, p in self.net.named_shared_parameters())]


def task_axes(module: nn.Module) -> dict[str, tuple[int, int]]:
    """{parameter name: (axis, block)} of every parameter of `module` that holds one slice per task:
    task t's entries are [t * block, (t + 1) * block) along `axis`, and only task t's loss trains
    them (per-task heads, task embeddings, MOORE's task weights). Data-parallel ranks that own
    different tasks keep each slice from its owner (launch/distributed/local_sgd.py). Declared by each module's
    `task_axes()`; a shared hypernetwork (trained by every task) is not per task."""
    axes = {}
    for prefix, sub in module.named_modules():
        own = sub.task_axes() if hasattr(sub, "task_axes") else {}
        axes.update({f"{prefix}.{name}" if prefix else name: axis for name, axis in own.items()})
    return axes


def build_actor_and_critic(sac, obs_dim: int, action_dim: int, num_tasks: int):
    """The SAC networks of a config: (actor, twin critic), sharing an encoder if sac.encoder is set
    (recurrent ones: agents/models.py)."""
    encoder = SharedEncoder(obs_dim, num_tasks, **encoder_options(sac)) if sac.encoder else None
    actor = SquashedGaussianActor(obs_dim, action_dim, num_tasks, encoder=encoder, **actor_options(sac))
    return actor, TwinCritic(obs_dim, action_dim, num_tasks, encoder=encoder, **network_options(sac, critic=True))


def build_policy(sac, obs_dim: int, action_dim: int, num_tasks: int) -> SquashedGaussianActor:
    """A policy to act with (actors, evaluator): the actor and, if any, its own copy of the encoder;
    `parameters()` match the learner's actor's, in order, so a flat weight vector fits."""
    encoder = SharedEncoder(obs_dim, num_tasks, **encoder_options(sac)) if sac.encoder else None
    return SquashedGaussianActor(obs_dim, action_dim, num_tasks, encoder=encoder, **actor_options(sac))
