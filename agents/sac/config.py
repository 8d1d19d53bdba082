"""SAC hyperparameters (defaults: multi-head SAC on Meta-World MT10, as in mtrl)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SACConfig:
    hidden_sizes: tuple[int, ...] = (400, 400, 400)
    critic_hidden_sizes: tuple[int, ...] = ()  # the critic's, if it differs (a wider critic); (): hidden_sizes
    trunk: str = "mlp"               # each network's layers below its head: agents.trunks.TRUNKS
                                     # (mlp | hyper | care | moore | bronet)
    head: str = "multi"              # output layer type: see agents.heads.HEADS
    task_input: bool = True          # append a one-hot task id to the network input
    task_embedding_dim: int = 0      # > 0: also append a learned, L2-normalised task embedding (BRC)
    encoder: str = ""                # a shared encoder (a TRUNKS name) on the observation, feeding actor and
                                     # critic; the critic's loss trains it, the actor reads it detached ("": none)
    encoder_sizes: tuple[int, ...] = (256,)  # its layer sizes (its features: the last)
    experts: int = 4                 # care / moore: number of experts (MOORE: 4 for MT10, 6 for MT50)
    layer_norm: bool = False         # first layer Dense -> LayerNorm -> tanh (Continual World)
    activation: str = "relu"         # relu | leaky_relu (slope 0.2, TensorFlow's, as Continual World)
    log_std_min: float = -5.0        # the policy's log-std range ...
    log_std_max: float = 2.0
    log_std_mode: str = "tanh"       # ... reached by a rescaled tanh (CleanRL) or by clipping: clip (CW, Spinning Up)
    hyper_embedding_dim: int = 16    # trunk/head=hyper: size of each task's learned embedding
    hyper_hidden: int = 128          # trunk/head=hyper: hidden units of the hypernetwork
    gamma: float = 0.99
    tau: float = 0.005               # Polyak rate of the target critics
    encoder_tau: float = 0.0         # the shared encoder's (sac.encoder) Polyak rate; 0: sac.tau (mtrl's CARE: 0.05)
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    lr_schedule: str = "constant"    # constant | cosine | linear: every rate times agents/sac/lr_schedule.py's factor
    lr_warmup_updates: int = 0       # linear warm-up of every rate over this many updates
    lr_final_fraction: float = 0.0   # cosine / linear: the rates end at this fraction of their base
    lr_schedule_updates: int = 0     # the schedule's length in updates; 0: the run's planned updates
    init_alpha: float = 1.0          # initial entropy temperature (one per task)
    target_entropy: float | None = None  # None: -action_dim
    batch_size_per_task: int = 128   # every update sees this many transitions of each task
    warmup_steps_per_task: int = 5000  # uniform-random actions before learning starts
    updates_per_round: int = 1       # gradient updates per round (one step of every env)
    shared_temperature: bool = False  # one temperature for every task (Kurin et al., BRC); default: one per task
    actor_weight_decay: float = 0.0  # Adam's L2 term on the actor (Kurin et al.: 3e-4)
    max_grad_norm: float = 0.0       # clip each network's gradient norm before its step; 0: off
    compile: str = "none"            # torch.compile the network passes: none | default | reduce-overhead (CUDA
                                     # graphs on a GPU) | max-autotune (agents/sac/compiled.py)
    update_order: str = "sequential"  # sequential: critic step, then the actor against the updated critic
                                      # (CleanRL, SB3); simultaneous: every gradient from the same networks,
                                      # then every step (Spinning Up, Continual World)
