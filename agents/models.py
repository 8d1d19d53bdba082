"""What a config builds: SAC's feed-forward networks (agents/networks.py) and flat replay
(agents/replay.py), or with sac.memory recurrent networks (agents/recurrent.py) and sequence replay
(agents/sequence_replay.py), or 3RL's context-window ones (agents/context.py, with
sac.memory_context). The learner, the actors and the evaluator build theirs here."""

from __future__ import annotations

import numpy as np
import torch

from agents import networks, replay
from agents.context import ContextActor, ContextCritic, ContextReplay
from agents.recurrent import RecurrentActor, RecurrentCritic
from agents.sequence_replay import SequenceReplay


def build_actor_and_critic(sac, obs_dim: int, action_dim: int, num_tasks: int):
    """(actor, twin critic) for a SACConfig."""
    if sac.memory == "none":
        return networks.build_actor_and_critic(sac, obs_dim, action_dim, num_tasks)
    actor, critic = (ContextActor, ContextCritic) if sac.memory_context else (RecurrentActor, RecurrentCritic)
    return actor(obs_dim, action_dim, num_tasks, sac), critic(obs_dim, action_dim, num_tasks, sac)


def build_policy(sac, obs_dim: int, action_dim: int, num_tasks: int):
    """A policy to act with (actors, evaluator) whose `parameters()` match the learner's actor's, in
    order, so a flat weight vector fits."""
    if sac.memory == "none":
        return networks.build_policy(sac, obs_dim, action_dim, num_tasks)
    return build_actor_and_critic(sac, obs_dim, action_dim, num_tasks)[0]


def network_task(task, num_tasks: int):
    """The task index a network of `num_tasks` tasks is given for env task ids `task` (an array or a
    tensor): the id itself, or 0 for a one-task network (continual.boundaries=hidden: one network for a
    stream of tasks it is never told apart; a single-task run's ids are 0 anyway)."""
    if num_tasks > 1:
        return task
    return torch.zeros_like(task) if torch.is_tensor(task) else np.zeros_like(task)


def make_replay(cfg, sac, num_tasks: int, obs_dim: int, action_dim: int,
                learner_device: torch.device) -> replay.MultiTaskReplay:
    """Replay for the learner of `sac`: windows of sac.memory_sequence steps (recurrent), single
    transitions with sac.memory_context steps before each (3RL), else agents/replay.py's
    make_replay. Sequence replay lives on the host (replay.device=learner is refused with
    sac.memory: launch/config/validate.py; `auto` picks the host)."""
    if sac.memory == "none":
        return replay.make_replay(cfg, num_tasks, obs_dim, action_dim, learner_device)
    if sac.memory_context:
        return ContextReplay(num_tasks, cfg.capacity_per_task, obs_dim, action_dim, sac.memory_context,
                             normalize_rewards=cfg.normalize_rewards)
    return SequenceReplay(num_tasks, cfg.capacity_per_task, obs_dim, action_dim, sac.memory_sequence,
                          normalize_rewards=cfg.normalize_rewards)
