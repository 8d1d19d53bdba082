"""Suites of tasks behind one interface: task specs, env construction, evaluation protocol."""

from envs.base import Suite, TaskSpec
from envs.registry import SUITES, make_suite

__all__ = ["Suite", "TaskSpec", "SUITES", "make_suite"]
