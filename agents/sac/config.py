"""SAC hyperparameters (defaults: multi-head SAC on Meta-World MT10, as in mtrl). A field's
metadata constrains its value (launch/config/overrides.py reads it); registries are read when a
value is checked, so a trunk, head or schedule added to its registry is valid at once."""

from __future__ import annotations

from dataclasses import dataclass, field


def _trunks():
    from agents.trunks import TRUNKS
    return TRUNKS


def _heads():
    from agents.heads import HEADS
    return HEADS


def _activations():
    from agents.trunks import ACTIVATIONS
    return ACTIVATIONS


def _schedules():
    from agents.sac.lr_schedule import SCHEDULES
    return SCHEDULES


def _precisions():
    from agents.sac.precision import PRECISIONS
    return PRECISIONS


def _compile_modes():
    from agents.sac.compiled import COMPILE_MODES
    return COMPILE_MODES


@dataclass
class SACConfig:
    hidden_sizes: tuple[int, ...] = field(default=(400, 400, 400), metadata={"above": 0, "nonempty": True})
    critic_hidden_sizes: tuple[int, ...] = field(  # the critic's, if it differs (a wider critic)
        default=(), metadata={"above": 0, "empty": "sac.hidden_sizes"})
    trunk: str = field(default="mlp", metadata={"choices": _trunks})  # each network's layers below its head
    head: str = field(default="multi", metadata={"choices": _heads})  # its output layer
    task_input: bool = True          # append a one-hot task id to the network input
    task_embedding_dim: int = field(default=0, metadata={"min": 0})  # > 0: also append a learned,
                                     # L2-normalised task embedding (BRC)
    encoder: str = field(default="", metadata={"choices": _trunks, "empty": "none"})  # a shared encoder (a
                                     # trunk) on the observation, feeding actor and critic; the critic's
                                     # loss trains it, the actor reads it detached
    encoder_sizes: tuple[int, ...] = (256,)  # its layer sizes (its features: the last)
    experts: int = field(default=4, metadata={"above": 0})  # care / moore: number of experts (MOORE: 4
                                     # for MT10, 6 for MT50)
    layer_norm: bool = False         # first layer Dense -> LayerNorm -> tanh (Continual World)
    activation: str = field(default="relu", metadata={"choices": _activations})  # leaky_relu: slope 0.2
                                     # (TensorFlow's, as Continual World)
    log_std_min: float = -5.0        # the policy's log-std range ...
    log_std_max: float = 2.0
    log_std_mode: str = field(default="tanh", metadata={"choices": ("tanh", "clip")})  # ... reached by a
                                     # rescaled tanh (CleanRL) or by clipping (CW, Spinning Up)
    hyper_embedding_dim: int = 16    # trunk/head=hyper: size of each task's learned embedding
    hyper_hidden: int = 128          # trunk/head=hyper: hidden units of the hypernetwork (rnn: the LSTM's)
    hypernet: str = field(default="mlp", metadata={"choices": ("mlp", "chunked", "rnn")})  # the hypernetworks'
                                     # kind (agents/hypernets.py): one MLP; Ehret et al.'s structured chunks;
                                     # Chandra et al.'s LSTM over chunks
    hyper_chunk_units: int = field(default=8, metadata={"above": 0})  # chunked: a recurrent layer's output
                                     # units per chunk (StructuredHMLP's default 8; divides sac.memory_hidden)
    hyper_chunk_size: int = field(default=2586, metadata={"above": 0})  # rnn: weights per chunk
    hyper_chunk_embedding_dim: int = field(default=16, metadata={"above": 0})  # chunked / rnn: each chunk's
                                     # learned embedding
    hyper_growth: bool = False       # rnn with --method hnet: Chandra et al.'s network growth, an LSTM input
                                     # map per task (agents/hypernets.py)
    gamma: float = field(default=0.99, metadata={"min": 0, "max": 1})
    tau: float = field(default=0.005, metadata={"above": 0, "max": 1})  # Polyak rate of the target critics
    encoder_tau: float = field(  # the shared encoder's (sac.encoder) Polyak rate (mtrl's CARE: 0.05)
        default=0.0, metadata={"min": 0, "max": 1, "note": "0: the encoder follows sac.tau"})
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    lr_schedule: str = field(  # every rate times agents/sac/lr_schedule.py's factor
        default="constant", metadata={"choices": _schedules})
    lr_warmup_updates: int = field(default=0, metadata={"min": 0})  # linear warm-up of every rate
    lr_final_fraction: float = field(  # cosine / linear: the rates end at this fraction of their base
        default=0.0, metadata={"min": 0, "max": 1})
    lr_schedule_updates: int = field(  # the schedule's length in updates
        default=0, metadata={"min": 0, "note": "0: the run's planned updates"})
    init_alpha: float = 1.0          # initial entropy temperature (one per task)
    target_entropy: float | None = None  # None: -action_dim
    batch_size_per_task: int = field(default=128, metadata={"above": 0})  # transitions of each task per update
                                     # (with sac.memory: subsequences)
    warmup_steps_per_task: int = field(default=5000, metadata={"min": 0})  # uniform-random actions first
    updates_per_round: int = field(default=1, metadata={"min": 0})  # per round (one step of every env)
    shared_temperature: bool = False  # one temperature for every task (Kurin et al., BRC); default: one per task
    actor_weight_decay: float = field(default=0.0, metadata={"min": 0})  # Adam's L2 term on the actor
                                     # (Kurin et al.: 3e-4)
    max_grad_norm: float = field(  # clip each network's gradient norm before its step
        default=0.0, metadata={"min": 0, "note": "0: off"})
    compile: str = field(default="none", metadata={"choices": _compile_modes})  # torch.compile the network
                                     # passes (reduce-overhead: CUDA graphs on a GPU; agents/sac/compiled.py)
    precision: str = field(default="fp32", metadata={"choices": _precisions})  # the learner's network passes:
                                     # bf16: under autocast; auto: bf16 on bf16 matrix units (agents/sac/precision.py)
    memory: str = field(default="none", metadata={"choices": ("none", "gru", "lstm")})  # recurrent SAC (Ni et
                                     # al. 2022): actor and critic read (o_t, a_{t-1}, r_{t-1}) through a
                                     # GRU or LSTM each (agents/recurrent.py); replay samples subsequences
    memory_hidden: int = field(default=128, metadata={"above": 0})  # the recurrent layer's units
    memory_sequence: int = field(default=64, metadata={"above": 0})  # steps per sampled subsequence;
                                     # batch_size_per_task then counts subsequences
    memory_context: int = field(default=0, metadata={"min": 0})  # > 0 (sac.memory=gru): 3RL's context
                                     # window, the last K transitions through a GRU, no stored state
                                     # (agents/context.py; 3RL: K = 15, memory_hidden = 30)
    memory_burn_in: int = field(default=0, metadata={"min": 0})  # a subsequence's first steps only warm the
                                     # memory up (no loss on them; R2D2's burn-in)
    update_order: str = field(default="sequential", metadata={"choices": ("sequential", "simultaneous")})
                                     # sequential: critic step, then the actor against the updated critic
                                     # (CleanRL, SB3); simultaneous: every gradient from the same networks,
                                     # then every step (Spinning Up, Continual World)
