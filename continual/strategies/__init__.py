"""Continual-learning strategies, one small class each behind the interface in base.py.
A new method is one class plus one line in METHODS."""

from continual.strategies.agem import AGEM
from continual.strategies.base import NO_STRATEGY, Strategy, TaskContext
from continual.strategies.hnet import HypernetRegularizer
from continual.strategies.packnet import PackNet
from continual.strategies.penalties import EWC, L2, MAS, SI, OnlineEWC
from continual.strategies.replay import BehaviourCloning, Replay
from continual.strategies.task_free import CLEAR, MIR, Reservoir, ThreeRL
from continual.strategies.tfmas import TaskFreeMAS

METHODS = {
    "none": Strategy,            # fine-tuning
    "l2": L2,
    "ewc": EWC,
    "online-ewc": OnlineEWC,
    "si": SI,
    "mas": MAS,
    "packnet": PackNet,
    "agem": AGEM,
    "replay": Replay,            # perfect memory
    "bc": BehaviourCloning,      # behaviour-cloning replay (ClonEx-SAC's cloning half)
    "hnet": HypernetRegularizer,
    # task-free (continual.boundaries=hidden): continual/strategies/task_free.py, tfmas.py
    "reservoir": Reservoir,
    "mir": MIR,
    "clear": CLEAR,
    "3rl": ThreeRL,
    "tfmas": TaskFreeMAS,
}


def make_strategy(cfg, learner, task_stage: list[int], seed: int = 0) -> Strategy:
    return METHODS[cfg.method](cfg, learner, task_stage, seed)


__all__ = ["METHODS", "NO_STRATEGY", "Strategy", "TaskContext", "make_strategy"]
