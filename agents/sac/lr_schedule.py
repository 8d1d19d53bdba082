"""Learning-rate schedules: the rate at update u is `base_lr * lr_factor(u)`, the same factor for
actor, critic and temperatures (and the hooks' own parameters, which share their optimizers).

    constant   1 (after the warm-up)
    cosine     final + (1 - final) * (1 + cos(pi * p)) / 2,   p = (u - warmup) / (total - warmup)
    linear     final + (1 - final) * (1 - p)
with a linear warm-up from 0 over the first `warmup` updates (factor (u + 1) / warmup) and p
clipped to [0, 1]. The factor is a pure function of the update count, so a resumed run follows
the same schedule without any scheduler state in its checkpoint.

Local SGD's Quadratic Synchronization Rule reads the decaying rate (launch/distributed/local_sgd.py); with a
constant rate it is a fixed period.
"""

from __future__ import annotations

import math

SCHEDULES = ("constant", "cosine", "linear")


def lr_factor(kind: str, update: int, total: int, warmup: int = 0, final: float = 0.0) -> float:
    """The multiplier of every base learning rate at update `update` (0-based) of `total`."""
    if update < warmup:
        return (update + 1) / warmup
    if kind == "constant":
        return 1.0
    progress = min(max((update - warmup) / max(total - warmup, 1), 0.0), 1.0)
    if kind == "cosine":
        return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if kind == "linear":
        return final + (1.0 - final) * (1.0 - progress)
    raise ValueError(f"unknown learning-rate schedule {kind!r}; valid: {', '.join(SCHEDULES)}")
