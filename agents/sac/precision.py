"""`sac.precision`: the learner's network passes in bf16 mixed precision, or in fp32.

    fp32   every pass in fp32 (SACConfig's default, the pointmass and Continual World presets')
    bf16   the network passes of an update under `torch.autocast(device, torch.bfloat16)`
    tf32   fp32 everywhere, but a CUDA GPU's matmuls on its TF32 tensor cores (compute capability 8.0+;
           refused elsewhere): torch.backends.cuda.matmul.allow_tf32 for the learner's process
    auto   bf16 where the learner's device has bf16 matrix units (a CPU with AMX or AVX512-BF16,
           a CUDA GPU that supports bf16), else fp32; the start-up line says which, and why (the
           Meta-World preset's default: learning parity measured, BENCHMARKS.md)

What runs in bf16: the matmuls of the learner's passes (agents/sac/learning.py: `critic_pass`,
`actor_pass` and FAMO's re-computations) below each network's output layer: every trunk layer and
the shared encoder, the target critics' included. Autocast casts the weights to bf16 per call. The
output layer (the head: agents/networks.py, TaskNetwork) runs in fp32 on the trunk's features cast
to fp32, so Q values, the policy's mean and log-std come out at fp32 resolution (a bf16 Q near
1,000 would be rounded to steps of 4, coarser than one step's reward on Meta-World), and
everything after them is fp32: the tanh-squashed Gaussian's log-probability and its correction,
the soft Bellman target, the entropy term, every loss and its reduction, the temperatures and
their loss. What stays fp32
throughout: the master weights, Adam's moments, the gradients (so torchrun's all-reduces and
local SGD's averages are fp32), the target critics' Polyak update, checkpoints (they load in either
precision), the auxiliary tasks' own passes, behaviour cloning's penalty pass and hnet's generated
weights (continual strategies' passes outside the learner's), EWC's and MAS's per-sample gradients
at a task's end, the actors and the evaluator (they run their own fp32 copy). A-GEM's reference gradient runs
through the learner's passes, so in the update's precision.

Adam's steps run with subnormal floats flushed to zero (`subnormals_flushed`, on a CPU, in either
precision). A unit that stops receiving gradient (a dead ReLU) leaves its weights' Adam moments
decaying geometrically (exp_avg by 0.9, exp_avg_sq by 0.999 per step) through the subnormal range
below 1.2e-38, where x86 arithmetic takes a microcode assist per value: a 2x256x256 Adam step went
from 163 us to 1,973 us with subnormal moments on this CPU, and reach-v3's update slowed by a third
over 2,000 env steps. Flushing changes no parameter: a subnormal moment moves a weight by at most
lr * 1e-38 / eps = 3e-34, below the rounding step of any weight larger than 1e-26 in magnitude, so
the weights come out bit-identical (tests/test_precision.py checks it); only those moments read 0
instead of a subnormal.

References: torch's automatic mixed precision (torch.amp); keeping master weights, optimizer
state and reductions in fp32 is Micikevicius et al. 2018's recipe (bf16 needs no loss scaling:
it has fp32's exponent range).
"""

from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("fp32", "bf16", "tf32", "auto")


def bf16_units(device: torch.device) -> str | None:
    """The bf16 matrix units of `device` ("AMX", "AVX512-BF16", "CUDA bf16"), or None."""
    if device.type == "cuda":
        # bf16 tensor cores (compute capability 8.0+); not the emulation older GPUs also accept
        return "CUDA bf16" if torch.cuda.get_device_capability(device) >= (8, 0) else None
    if device.type == "cpu":
        if torch.cpu._is_amx_tile_supported():
            return "AMX"
        if torch.cpu._is_avx512_bf16_supported():
            return "AVX512-BF16"
    return None


def resolve_precision(name: str, device: torch.device, units=None) -> tuple[str, str]:
    """(fp32 | bf16, why): `sac.precision` for a learner on `device`. units: the capability check
    (a function of the device; tests simulate a device without bf16 units)."""
    if name not in PRECISIONS:
        raise ValueError(f"unknown sac.precision {name!r}; valid: {', '.join(PRECISIONS)}")
    if name == "tf32" and not (device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 0)):
        raise ValueError(f"sac.precision=tf32 runs fp32 matmuls on a CUDA GPU's TF32 tensor cores (compute "
                         f"capability 8.0+); this learner runs on {device}")
    if name != "auto":
        return name, "set"
    found = (units or bf16_units)(device)
    return ("bf16", f"auto: {found}") if found else ("fp32", f"auto: no bf16 units on {device.type}")


def use_tf32(precision: str) -> None:
    """sac.precision=tf32: CUDA matmuls and convolutions of this process in TF32 (10-bit mantissa
    products, fp32 accumulation and storage); everything else stays as fp32 has it."""
    if precision == "tf32":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def autocast(device: torch.device, precision: str):
    """The context the learner's network passes run in."""
    if precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


@contextlib.contextmanager
def subnormals_flushed(device: torch.device):
    """Flush subnormal results and inputs to zero (x86 FTZ/DAZ) inside the block, on a CPU; the
    optimizer steps run in it (see the module docstring). The flush mode is a per-thread register
    that torch's worker threads do not share, so the block runs on the calling thread alone (Adam
    is memory-bound: MT10's critic step takes 660 us on 1 thread against 430 us on 2). Flushing is
    off again afterwards: torch keeps it off unless a program turns it on, and ours never does
    outside this block."""
    if device.type != "cpu" or not torch.set_flush_denormal(True):
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)
        torch.set_num_threads(threads)
