"""Multi-task soft actor-critic: config, learner (networks live in agents.networks)."""

from agents.sac.config import SACConfig
from agents.sac.learning import SACLearner

__all__ = ["SACConfig", "SACLearner"]
