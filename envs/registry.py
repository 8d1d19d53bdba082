"""The suite registry: a new suite is one module with a `build` function plus one line here."""

from __future__ import annotations

from envs import metaworld_suite, pointmass
from envs.base import Suite

SUITES = {
    "metaworld": metaworld_suite.build,
    "pointmass": pointmass.build,
}


def sequence_presets(name: str) -> dict[str, list[str]]:
    """Named task orders for continual runs: the suite's sequences (CW10, CW20, PM2, ...) and,
    read in order, its task presets (MT10, PM4, ...)."""
    if name == "metaworld":
        return {**metaworld_suite.presets(), **metaworld_suite.SEQUENCES}
    if name == "pointmass":
        return {**pointmass.PRESETS, **pointmass.SEQUENCES}
    raise ValueError(f"unknown suite {name!r}; valid: {', '.join(SUITES)}")


def make_suite(name: str, tasks: str = "", seed: int = 0, goal_observable: bool = True,
               target_visible: bool = False) -> Suite:
    """Build a suite by name; raises ValueError with the valid choices for unknown names.
    goal_observable=False hides the goal from the observation (Meta-World: its ML benchmarks'
    partial observability; pointmass ignores it). target_visible=True appends pointmass's target to
    its observation (Meta-World ignores it: goal_observable says what it shows)."""
    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}; valid: {', '.join(SUITES)}")
    return SUITES[name](tasks, seed, goal_observable, target_visible)
