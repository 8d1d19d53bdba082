"""Every random stream of a run derives from the run seed and a named purpose, listed here.

    seed_for(run_seed, "replay", rank)   -> an int seed, independent of every other purpose/index
    rng(run_seed, "agem-memory")         -> a numpy Generator on that seed

A purpose is a name; the indices after it tell apart the consumers of one purpose (a rank, an
actor and its incarnation, an env). The numbers below only have to be distinct; changing one
changes that stream, so they are fixed.
"""

from __future__ import annotations

import numpy as np

PURPOSES = {
    "networks": 0,      # initial weights (identical on every learner rank)
    "replay": 1,        # replay sampling and strategies' state sampling, per learner rank
    "eval-envs": 3,     # building the evaluator's envs
    "eval": 4,          # each evaluation's env reseeding and sampled actions
    "actor": 5,         # an actor's envs, random actions and policy noise (actor id, incarnation, ...)
    "agem-memory": 6,   # A-GEM: which transitions are kept, which are drawn for the reference gradient
    "bc-memory": 7,     # behaviour-cloning replay: drawing from the kept states
    "learner": 8,       # the learner's torch stream (SAC's sampled actions), per rank
    "pvn-indicators": 9,  # the frozen random networks of the proto-value-network auxiliary task
    "pvn-actions": 10,  # the proto-value-network's uniformly drawn next actions
    "balancer": 11,     # a gradient combiner's own draws (PCGrad's task order), per network, the same on every rank
    "reservoir": 12,    # reservoir replay's slot draws (agents/stream_replay.py)
    "mir": 13,          # MIR's candidate draws
    "blend": 14,        # blended switches: each episode's task (continual.blend_steps), per actor
    "plasticity-probe": 15,  # the plasticity diagnostics' probe batches from replay
    "plasticity-init": 16,   # the fresh weights of plasticity remedies (ReDo, CBP, shrink and perturb, resets)
    "cbp": 17,          # continual backprop: its stochastic rounding (0) and its new units' weights (1)
}


def seed_for(seed: int, purpose: str, *index: int) -> int:
    """An independent 31-bit seed for (run seed, purpose, indices)."""
    if purpose not in PURPOSES:
        raise KeyError(f"unknown random-stream purpose {purpose!r}; add it to agents.seeding.PURPOSES")
    words = [seed, PURPOSES[purpose], *index]
    return int(np.random.SeedSequence(words).generate_state(1)[0] & 0x7FFFFFFF)


def rng(seed: int, purpose: str, *index: int) -> np.random.Generator:
    return np.random.default_rng(seed_for(seed, purpose, *index))
