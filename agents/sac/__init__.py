"""Multi-task soft actor-critic: config, learner (networks live in agents.networks)."""

from agents.sac.config import SACConfig
from agents.sac.learning import SACLearner
from agents.sac.recurrent import ContextSACLearner, RecurrentSACLearner


def make_learner(cfg: SACConfig, *args, **kwargs) -> SACLearner:
    """The learner of a config: recurrent SAC with sac.memory (3RL's context windows with
    sac.memory_context), else SAC."""
    if cfg.memory == "none":
        return SACLearner(cfg, *args, **kwargs)
    return (ContextSACLearner if cfg.memory_context else RecurrentSACLearner)(cfg, *args, **kwargs)


__all__ = ["SACConfig", "SACLearner", "RecurrentSACLearner", "ContextSACLearner", "make_learner"]
