"""SAC hyperparameters (defaults: multi-head SAC on Meta-World MT10, as in mtrl)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SACConfig:
    hidden_sizes: tuple[int, ...] = (400, 400, 400)
    head: str = "multi"              # output layer type: see agents.networks.HEADS
    task_input: bool = True          # append a one-hot task id to the network input
    layer_norm: bool = False         # LayerNorm after the first layer (Continual World)
    activation: str = "relu"         # relu | leaky_relu (Continual World)
    hyper_embedding_dim: int = 16    # head=hyper: size of each task's learned embedding
    hyper_hidden: int = 128          # head=hyper: hidden units of the hypernetwork
    hyper_generates: str = "head"    # head=hyper: head (the output layer) | all (every layer; small nets)
    gamma: float = 0.99
    tau: float = 0.005               # Polyak rate of the target critics
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    init_alpha: float = 1.0          # initial entropy temperature (one per task)
    target_entropy: float | None = None  # None: -action_dim
    batch_size_per_task: int = 128   # every update sees this many transitions of each task
    warmup_steps_per_task: int = 5000  # uniform-random actions before learning starts
    updates_per_round: int = 1       # gradient updates per round (one step of every env)
