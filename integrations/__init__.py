"""Bridges from polytask's suites, networks and continual strategies to other RL frameworks
(today RLlib: integrations/rllib). They sit beside continual/ in the layers: they may import
continual, agents and envs, and launch/ imports them."""
