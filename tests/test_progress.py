"""The progress line's ETA: honest about the fast warm-up and the update-bound rest; what bounds
the run; how actors and learner threads are sized to the machine."""

import io

import torch

from launch.actors import actor_specs
from launch.config import build_config
from launch.machine import plan_workers
from launch.telemetry import Progress


def test_eta_is_estimating_until_a_learning_rate_is_measured_then_adds_both_phases():
    progress = Progress(total_steps=20_000_000, start_step=0, start_updates=0, stream=io.StringIO())
    progress.phase["warmup"] = [50_000, 25.0]       # random actions: 2,000 env-steps/s
    assert progress.eta(warmup_left=0, learning_left=19_950_000) is None  # not 20M / 2,000 = 2.8 h
    line = progress.line(50_000, 2000.0, 0.0, None, None, progress.eta(0, 19_950_000))
    assert "ETA estimating (warm-up)" in line
    progress.phase["learning"] = [9_500, 100.0]     # updates bound the run: 95 env-steps/s
    # 19.95M / 95 = 210,000 s, plus a later stage's 10k warm-up steps at 2,000/s = 5 s
    assert progress.eta(warmup_left=10_000, learning_left=19_950_000) == 210_000 + 5
    assert "ETA 58h20m" in progress.line(59_500, 95.0, 9.5, None, None, 210_005)


def test_a_resumed_run_without_a_warmup_rate_uses_the_learning_rate():
    progress = Progress(1000, 500, 0, stream=io.StringIO())
    progress.phase["learning"] = [100, 10.0]
    assert progress.eta(warmup_left=100, learning_left=400) == 50.0


def test_advance_attributes_time_and_steps_to_the_phase():
    progress = Progress(1000, 0, 0, stream=io.StringIO())
    progress.advance(40, learning=False)
    progress.advance(10, learning=True)
    assert progress.phase["warmup"][0] == 40 and progress.phase["learning"][0] == 10
    assert progress.phase["warmup"][1] >= 0 and progress.phase["learning"][1] >= 0


def test_bound_by_the_learner_or_the_actors_from_the_learners_waiting_share():
    progress = Progress(1000, 0, 0, stream=io.StringIO())
    assert progress.bound() is None  # nothing measured yet (the warm-up)
    progress.learner(waited=0.1, updated=0.9)
    assert progress.bound() == "learner (learner waited 10% for experience)"
    progress.learner(waited=3.0, updated=1.0)  # the line's share restarts; the run's accumulates
    assert progress.bound() == "actors (learner waited 75% for experience)"
    assert progress.bound("run") == "actors (learner waited 62% for experience)"  # 3.1 of 5.0 s
    assert "bound by learner" in progress.line(10, 1.0, 1.0, None, None, None, "learner (learner waited 1%)")


def _plan(device, cores, tasks, *overrides, suite="metaworld"):
    cfg = build_config(suite, overrides=list(overrides))
    return cfg, plan_workers(cfg, torch.device(device), cores, tasks)


def test_workers_sized_to_the_machine():
    """By hand, for the module docstring's rules (launch/machine.py). Sizing splits the run's envs
    over actors and never changes their number (env.envs_per_task per task: part of the experiment)."""
    # GPU learner, 16 free cores, MT10: 14 cores for actors -> the largest divisor of 10 is 10 actors of
    # one task (one env) each; the learner keeps 16 - 10 actors - 1 evaluator = 5 threads.
    cfg, plan = _plan("cuda", (16, 16), 10)
    assert (plan.actors, plan.threads) == (10, 5)
    assert [s.num_envs for s in actor_specs(cfg, plan, list(range(10)), 0, 10, 0)] == [1] * 10
    # MT50: 10 actors of 5 tasks, 5 envs each; the learner 5 threads. Two envs per task: 10 each.
    cfg, plan = _plan("cuda", (16, 16), 50)
    specs = actor_specs(cfg, plan, list(range(50)), 0, 50, 0)
    assert (plan.actors, plan.threads) == (10, 5) and {(len(s.task_indices), s.num_envs) for s in specs} == {(5, 5)}
    cfg, plan = _plan("cuda", (16, 16), 50, "env.envs_per_task=2")
    assert {s.num_envs for s in actor_specs(cfg, plan, list(range(50)), 0, 50, 0)} == {10}
    # CPU learner, 2 cores: one actor with every task's env; the learner every free core, and one
    # fewer while another process keeps a core busy.
    cfg, plan = _plan("cpu", (2, 2), 10)
    assert (plan.actors, plan.threads) == (1, 2)
    assert [s.num_envs for s in actor_specs(cfg, plan, list(range(10)), 0, 10, 0)] == [10]
    assert _plan("cpu", (2, 1), 10)[1].threads == 1
    plan = _plan("cuda", (2, 2), 10)[1]  # a GPU with 2 cores: one actor, the learner one thread
    assert (plan.actors, plan.threads) == (1, 1)
    # A continual stage of one task on the GPU machine: one actor (its one env).
    assert _plan("cuda", (16, 16), 1)[1].actors == 1
    # Explicit settings are kept: 3 actors with 4 envs each, 6 threads.
    cfg, plan = _plan("cuda", (16, 16), 10, "runtime.actors=3", "runtime.envs_per_actor=4", "run.threads=6")
    assert (plan.actors, plan.threads) == (3, 6)
    assert [s.num_envs for s in actor_specs(cfg, plan, list(range(10)), 0, 10, 0)] == [4, 4, 4]
    # The single-process backend steps every env of the rank in its own loop (or the envs asked for).
    cfg, plan = _plan("cpu", (2, 2), 4, "runtime.backend=single", suite="pointmass")
    assert [s.num_envs for s in actor_specs(cfg, plan, [0, 1, 2, 3], 0, 4, 0)] == [4] and plan.threads == 2
    cfg, plan = _plan("cpu", (2, 2), 4, "runtime.backend=single", "runtime.envs_per_actor=2", suite="pointmass")
    assert [s.num_envs for s in actor_specs(cfg, plan, [0, 1, 2, 3], 0, 4, 0)] == [2]
