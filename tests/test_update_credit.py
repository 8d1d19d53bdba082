"""The update-to-data contract (continual/schedule.py: UpdateCredit, updates_per_step), by hand:
what the training loop pays out for the env steps each iteration brings."""

import pytest

from continual.schedule import Stage, UpdateCredit, planned_updates, updates_per_step


def test_a_round_of_every_tasks_envs_earns_updates_per_round():
    stage = Stage(tasks=(0, 1, 2, 3), start=0, end=4000)
    assert updates_per_step(stage, updates_per_round=1, envs_per_task=1) == 0.25
    assert updates_per_step(stage, updates_per_round=2, envs_per_task=5) == pytest.approx(0.1)


def test_whole_updates_are_paid_and_the_fraction_carried():
    credit = UpdateCredit()
    # PM4: 4 tasks x 1 env, 1 update per round -> 0.25 per step; uneven chunk sizes.
    paid = [credit.earn(steps, 0.25, ready=True) for steps in (3, 1, 6, 2, 64, 1)]
    assert paid == [0, 1, 1, 1, 16, 0] and sum(paid) == (3 + 1 + 6 + 2 + 64 + 1) // 4
    assert credit.carried == pytest.approx(0.25)


def test_steps_while_not_ready_earn_nothing_and_drop_the_carry():
    credit = UpdateCredit()
    assert credit.earn(3, 0.25, ready=True) == 0 and credit.carried == pytest.approx(0.75)
    assert credit.earn(100, 0.25, ready=False) == 0 and credit.carried == 0.0  # warm-up or a refill
    assert credit.earn(4, 0.25, ready=True) == 1
    credit.earn(3, 0.25, ready=True)
    credit.reset()  # a stage ends: nothing carries over
    assert credit.earn(1, 0.25, ready=True) == 0


def test_the_loop_pays_what_the_schedule_plans():
    """Over a stage paid chunk by chunk, the credit pays out planned_updates' count (the learning-rate
    schedule's length) when the chunks meet the end of the warm-up; a chunk that crosses it was
    collected before the learner was ready and earns nothing (at most one chunk's worth less)."""
    stage = Stage(tasks=(0, 1, 2), start=0, end=3000)
    warmup, per_round, envs = 200, 2, 1
    per_step = updates_per_step(stage, per_round, envs)
    planned = planned_updates([stage], warmup, per_round, envs)
    assert planned == (3000 - 600) * 2 // 3
    for chunk in (6, 7):
        credit, paid = UpdateCredit(), 0
        for step in range(stage.start, stage.end, chunk):
            paid += credit.earn(min(chunk, stage.end - step), per_step, ready=step >= warmup * len(stage.tasks))
        assert paid == planned if 600 % chunk == 0 else 0 < planned - paid <= chunk * per_step, (chunk, paid)
