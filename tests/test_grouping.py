"""Which runs are seeds of one method (metrics/grouping.py): configs that differ only in seed and
in how the run was executed group together; a learning setting splits them."""

import numpy as np

from metrics.grouping import group_runs
from metrics.runs import Run


def _run(seed: int, **config) -> Run:
    tree = {"env": {"suite": "pointmass", "tasks": "PM4"}, "run": {"seed": seed}, "sac": {"actor_lr": 1e-3},
            **config}
    return Run(tasks=("reach-e",), steps=np.array([0]), success=np.zeros((1, 1)), returns=np.zeros((1, 1)),
               schedule=(), seed=seed, config=tree)


def test_runs_differing_in_seed_and_launch_are_one_method():
    torchrun = {"launch": {"world_size": 2, "elastic_run_id": "abc"}}
    runs = [_run(0, **torchrun), _run(1, launch={"world_size": 2, "elastic_run_id": "def"}),
            _run(2, launch={"world_size": 1, "elastic_run_id": None}), _run(3, runtime={"backend": "ray"})]
    (group,) = group_runs(runs).values()
    assert [r.seed for r in group] == [0, 1, 2, 3]


def test_a_learning_setting_splits_the_groups():
    groups = group_runs([_run(0), _run(1), _run(0, sac={"actor_lr": 3e-4})])
    assert sorted(len(g) for g in groups.values()) == [1, 2]
    assert any("sac.actor_lr=0.0003" in label for label in groups)


def test_a_key_added_later_reads_as_the_behaviour_it_replaced():
    """plasticity.reset_temperature came after runs that reset without it: they kept the temperature,
    which is its false; true is another method. Likewise continual.change_scale: std before it came."""
    old = _run(0, plasticity={"reset": 99})
    new = _run(1, plasticity={"reset": 99, "reset_temperature": False})
    other = _run(2, plasticity={"reset": 99, "reset_temperature": True})
    groups = group_runs([old, new, other])
    assert sorted([r.seed for r in g] for g in groups.values()) == [[0, 1], [2]]
    assert any("plasticity.reset_temperature=True" in label for label in groups)
    before = _run(3, continual={"detector": "change"})  # continual.change_scale came later: std
    after = _run(4, continual={"detector": "change", "change_scale": "std"})
    robust = _run(5, continual={"detector": "change", "change_scale": "mad"})
    groups = group_runs([before, after, robust])
    assert sorted([r.seed for r in g] for g in groups.values()) == [[3, 4], [5]]
