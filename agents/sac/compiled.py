"""`sac.compile`: the learner's network passes compiled with torch.compile.

Every network evaluation of a SAC update sits in two pure tensor functions of the learner
(agents/sac/learning.py): `critic_pass` (the target's actor sample and target critics, the
critics on the batch) and `actor_pass` (the policy sample and the critics on it). The losses
call them as `learner.passes.critic` and `.actor`: the methods themselves, or with
`sac.compile` set their compiled versions; FAMO's re-computations (no gradient) run eagerly.
Compiled, they are compiled at the first update and every later update of the same
batch shape replays them (a new shape compiles again: a continual stage whose rehearsal adds
tasks to the batch, A-GEM's memory batch; past Dynamo's recompile limit torch falls back to
eager); their backward passes are compiled with them (AOTAutograd), so the whole forward and
backward of every loss runs as generated kernels:

    none              eager (the default)
    default           torch.compile's default mode (Inductor kernels; on CPU, C++)
    reduce-overhead   the same, replayed as CUDA graphs on a GPU: one launch per pass instead
                      of one per kernel, the overhead that bounds small-batch updates on a GPU
                      (on a CPU it is `default`)
    max-autotune      Inductor also benchmarks matmul kernels (slow to compile)

What stays eager: the loss means and their backward call, the balancer, the hooks' loss terms,
the optimizer steps (fused Adam: one kernel per parameter group), the temperature and the
target update (one fused lerp). With the `mean` balancer and no continual strategy none of
them reads the device from the host: the update has no `.item()`, and the divergence flag stays
on the device (the trainer reads an asynchronous copy, as late as the GPU lags behind the host;
the checks before every evaluation and checkpoint wait for it). Uncertainty weighting and FAMO
(their per-task loss split) and A-GEM (its projection test) do synchronise.

Random draws: compiled code uses torch's own generator (Inductor's `fallback_random`), so a
compiled run draws exactly the noise the eager run draws; tests/test_learner_path.py checks that
compiled updates match eager ones on CPU. A gradient-combining balancer reads the linear
layers' inputs through forward hooks, which compiled code does not run: it needs `none`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune")


class Passes(NamedTuple):
    critic: Callable
    actor: Callable


def compile_passes(learner, mode: str) -> Passes:
    """The passes the losses of `learner` run: its own methods, or their compiled versions."""
    if mode == "none":
        return Passes(learner.critic_pass, learner.actor_pass)
    if mode not in COMPILE_MODES:
        raise ValueError(f"unknown sac.compile {mode!r}; valid: {', '.join(COMPILE_MODES)}")
    import torch._inductor.config as inductor

    inductor.fallback_random = True  # the eager run's random streams, draw for draw
    options = dict(mode=None if mode == "default" else mode, dynamic=False)
    return Passes(torch.compile(learner.critic_pass, **options), torch.compile(learner.actor_pass, **options))
