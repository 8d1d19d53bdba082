"""Property-based tests of the pure contracts: override parsing (launch/config/overrides.py), schedule
arithmetic (continual/schedule.py, agents/sac/lr_schedule.py) and metric invariants
(metrics/multitask.py). Hypothesis runs a modest, derandomized set of examples (the same ones on
every run, so CI never flakes); the explicit @example cases pin the inputs each property exists for.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from agents.sac.lr_schedule import SCHEDULES, lr_factor
from continual.schedule import planned_updates, schedule_from, stage_at, steps_left
from launch.config.overrides import check_value, parse_override, set_key
from launch.errors import UserError
from metrics.multitask import iqm, mean, median, per_task_ci

PROPERTY = settings(max_examples=60, derandomize=True, deadline=None, database=None)


# ---- overrides: numbers as people type them --------------------------------------------------------

@dataclasses.dataclass
class _Sac:
    lr: float = 0.1
    steps: int = 1
    name: str = ""


@dataclasses.dataclass
class _Root:
    sac: _Sac = dataclasses.field(default_factory=_Sac)


def _digits(first_nonzero: bool):
    """Decimal digits, optionally grouped by single underscores (1_000); no leading zero when asked
    (YAML 1.1 reads 010 as octal, not what anyone means by it)."""
    group = st.text("0123456789", min_size=1, max_size=3)
    lead = st.sampled_from("123456789") if first_nonzero else st.sampled_from("0123456789")
    return st.tuples(lead, st.lists(group, max_size=3), st.booleans()).map(
        lambda t: t[0] + ("_" if t[2] else "").join([""] + t[1]) if t[1] else t[0])


@st.composite
def typed_numbers(draw):
    """A decimal number as typed on a command line: sign, digits (with _ groups), optional
    fraction (.5, 5., 2.5), optional exponent (e/E, signed or not)."""
    sign = draw(st.sampled_from(["", "-", "+"]))
    whole = draw(st.one_of(st.just("0"), _digits(first_nonzero=True)))
    frac = draw(st.one_of(st.just(None), st.text("0123456789", max_size=4)))
    if frac is not None and frac == "" and draw(st.booleans()):
        body = "." + draw(st.text("0123456789", min_size=1, max_size=3))  # .5
    else:
        body = whole + ("" if frac is None else "." + frac)
    exp = draw(st.one_of(st.just(""), st.tuples(st.sampled_from("eE"), st.sampled_from(["", "-", "+"]),
                                                 st.integers(0, 20)).map(lambda t: f"{t[0]}{t[1]}{t[2]}")))
    return sign + body + exp


@PROPERTY
@given(typed_numbers())
@example("-1e-3").via("a sign and an unsigned-dot-less exponent: YAML 1.1 leaves it a string")
@example("3E-4").via("upper-case exponent")
@example("1_000").via("underscore groups")
@example("+.5e2").via("explicit plus, no whole part")
def test_a_float_key_takes_every_number_as_typed(text):
    """`--set sac.lr=<number>` sets the float the text denotes, whatever spelling YAML 1.1 gives it."""
    cfg = _Root()
    set_key(cfg, *parse_override(f"sac.lr={text}"))
    assert isinstance(cfg.sac.lr, float)
    assert cfg.sac.lr == float(text.replace("_", ""))


@PROPERTY
@given(typed_numbers())
@example("-1e3").via("a negative whole number in exponent form")
@example("1.5")
def test_an_int_key_takes_whole_numbers_and_rejects_the_rest(text):
    value = float(text.replace("_", ""))
    cfg = _Root()
    if value.is_integer() and abs(value) < 2**53:
        set_key(cfg, *parse_override(f"sac.steps={text}"))
        assert type(cfg.sac.steps) is int and cfg.sac.steps == int(value)
    else:
        with pytest.raises(UserError):
            set_key(cfg, *parse_override(f"sac.steps={text}"))


_KEYS = st.lists(st.from_regex(r"[a-z_][a-z0-9_]{0,6}", fullmatch=True), min_size=1, max_size=3).map(".".join)


@PROPERTY
@given(_KEYS, st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=12),
       st.sampled_from(["", " "]))
@example("run.name", "a=b", "").via("a value holding '=' splits at the first '='")
def test_parse_override_splits_at_the_first_equals_and_keeps_the_value(key, value, pad):
    """key=<a quoted string> gives back the key (stripped) and exactly the string."""
    assert parse_override(f"{pad}{key}{pad}={json.dumps(value)}") == (key, value)


@PROPERTY
@given(_KEYS, st.integers(-10**12, 10**12))
@example("sac.steps", -3).via("a negative int keeps its sign")
def test_parse_override_reads_ints_with_their_sign(key, n):
    assert parse_override(f"{key}={n}") == (key, n)


# A field's declared bounds (launch/config/overrides.py) and the set of numbers each one admits.
_BOUNDS = [({"above": 0}, lambda x: x > 0, "positive"), ({"min": 0}, lambda x: x >= 0, ">= 0"),
           ({"min": 0, "max": 1}, lambda x: 0 <= x <= 1, "in [0, 1]"),
           ({"above": 0, "max": 1}, lambda x: 0 < x <= 1, "in (0, 1]"),
           ({"above": 0, "below": 1}, lambda x: 0 < x < 1, "in (0, 1)")]


@PROPERTY
@given(st.sampled_from(range(len(_BOUNDS))), st.one_of(st.integers(-3, 3), st.floats(-2, 2)))
@example(0, 0).via("positive refuses 0")
@example(3, 1.0).via("an inclusive upper bound takes itself")
@example(4, 1.0).via("an exclusive one does not")
def test_a_bound_refuses_exactly_the_numbers_outside_it_in_one_line_that_says_it(which, x):
    meta, admits, words = _BOUNDS[which]
    if admits(x):
        check_value("sac.k", x, meta)
    else:
        with pytest.raises(UserError, match=rf"^sac\.k must be {re.escape(words)}, got "):
            check_value("sac.k", x, meta)


# ---- continual/schedule.py: stages, steps left, planned updates --------------------------------------

_PRESETS = {"PM2": ["a", "b"]}


@st.composite
def schedules(draw):
    """A sequence as --sequence takes it (task[+task...][:steps], tasks may repeat) and its plan."""
    stages = draw(st.lists(st.tuples(st.lists(st.sampled_from("abcd"), min_size=1, max_size=3, unique=True),
                                     st.one_of(st.none(), st.integers(1, 400))), min_size=1, max_size=5))
    text = ",".join("+".join(tasks) + ("" if steps is None else f":{steps}") for tasks, steps in stages)
    steps_per_task = draw(st.integers(1, 200))
    return stages, steps_per_task, schedule_from(text, _PRESETS, steps_per_task)


@PROPERTY
@given(schedules())
def test_stages_tile_the_run_with_their_budgets(case):
    written, steps_per_task, schedule = case
    assert schedule.stages[0].start == 0
    for before, after in zip(schedule.stages, schedule.stages[1:]):
        assert after.start == before.end
    for (tasks, budget), stage in zip(written, schedule.stages):
        assert stage.steps == (budget if budget is not None else steps_per_task * len(tasks))
        assert [schedule.names[t].split("#")[0] for t in stage.tasks] == tasks
    assert len(set(schedule.names)) == len(schedule.names)


@PROPERTY
@given(schedules(), st.data())
def test_stage_at_names_the_stage_that_trains_the_step(case, data):
    stages = list(case[2].stages)
    end = stages[-1].end
    step = data.draw(st.integers(0, end + 50))
    k = stage_at(stages, step)
    if step < end:
        assert stages[k].start <= step < stages[k].end
    else:
        assert k == len(stages) - 1
    for stage in stages:  # boundaries: a stage's first step is its own, its end the next stage's
        assert stages[stage_at(stages, stage.start)] == stage


@PROPERTY
@given(schedules(), st.integers(0, 60))
def test_steps_left_counts_down_one_step_at_a_time(case, warmup):
    """Warm-up + learning steps left after `step` is exactly the schedule's remaining steps; each
    step spends one of them; the warm-up ones are each stage's first warmup x tasks steps."""
    stages = list(case[2].stages)
    end = stages[-1].end
    warm0, learn0 = steps_left(stages, 0, warmup)
    assert warm0 == sum(min(s.steps, warmup * len(s.tasks)) for s in stages)
    previous = (warm0, learn0)
    for step in range(0, end + 2):
        warm, learn = steps_left(stages, step, warmup)
        assert warm >= 0 and learn >= 0
        assert warm + learn == max(0, end - step)
        if step:
            assert (previous[0] - warm) + (previous[1] - learn) == (1 if step <= end else 0)
        previous = (warm, learn)


@PROPERTY
@given(schedules(), st.integers(0, 60), st.integers(1, 8), st.integers(1, 4))
def test_planned_updates_pays_the_learning_steps_of_each_stage(case, warmup, per_round, envs):
    """planned_updates = the updates each stage's learning (non-warm-up) steps earn, a round being
    one step of each of the stage's tasks' envs; never below 1; unchanged when envs and updates
    per round scale together. Exact: the integer floor of each stage's count (27 learning steps x 13
    updates per round / 3 envs is 117, which learning x (13 / 3) in floats would floor to 116)."""
    stages = list(case[2].stages)
    exact = sum(steps_left([s], s.start, warmup)[1] * per_round // (len(s.tasks) * envs) for s in stages)
    assert planned_updates(stages, warmup, per_round, envs) == max(exact, 1)
    assert planned_updates(stages, warmup, 2 * per_round, 2 * envs) == planned_updates(stages, warmup, per_round, envs)


# ---- agents/sac/lr_schedule.py: lr_factor ---------------------------------------------------------------

@PROPERTY
@given(st.sampled_from(SCHEDULES), st.integers(1, 500), st.integers(0, 50),
       st.floats(0.0, 1.0, allow_nan=False), st.data())
def test_lr_factor_warms_up_then_decays_from_one_to_final(kind, length, warmup, final, data):
    total = warmup + length
    factors = [lr_factor(kind, u, total, warmup, final) for u in range(total + 5)]
    for u in range(warmup):
        assert factors[u] == pytest.approx((u + 1) / warmup)
    assert factors[warmup] == pytest.approx(1.0)  # the decay starts where the warm-up ends
    after = factors[warmup:]
    assert all(b <= a + 1e-12 for a, b in zip(after, after[1:]))  # non-increasing
    assert all(min(final, 1.0) - 1e-12 <= f <= 1.0 + 1e-12 for f in after)
    held = 1.0 if kind == "constant" else final
    assert all(f == pytest.approx(held) for f in factors[total:])  # at and past the end: held


# ---- metrics/multitask.py: aggregate invariants ------------------------------------------------------

_SCORE = st.floats(0.0, 1.0, allow_nan=False).map(lambda x: round(x, 3))


@st.composite
def score_matrices(draw):
    runs, tasks = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    return np.array(draw(st.lists(st.lists(_SCORE, min_size=tasks, max_size=tasks), min_size=runs,
                                  max_size=runs)))


@PROPERTY
@given(score_matrices(), st.randoms(use_true_random=False), st.floats(-2.0, 2.0, allow_nan=False))
def test_aggregates_are_order_free_bounded_and_shift_with_the_scores(scores, rnd, shift):
    runs = list(range(scores.shape[0]))
    rnd.shuffle(runs)
    tasks = list(range(scores.shape[1]))
    rnd.shuffle(tasks)
    shuffled = scores[runs][:, tasks]
    flat = np.sort(scores, axis=None)
    cut = int(0.25 * flat.size)
    assert iqm(scores) == pytest.approx(float(np.mean(flat[cut:flat.size - cut])))  # rliable's trimmed mean
    for aggregate in (iqm, mean, median):
        value = aggregate(scores)
        assert scores.min() - 1e-12 <= value <= scores.max() + 1e-12
        assert aggregate(shuffled) == pytest.approx(value)
        assert aggregate(scores + shift) == pytest.approx(value + shift)
    assert mean(scores) == pytest.approx(float(np.mean(scores)))  # equal runs per task: the grand mean
    # mean and median see only the per-task means over runs (rliable's aggregate_mean/median)
    task_level = np.broadcast_to(scores.mean(axis=0), scores.shape)
    assert mean(task_level) == pytest.approx(mean(scores)) and median(task_level) == pytest.approx(median(scores))


@PROPERTY
@given(score_matrices(), st.data())
def test_a_missing_score_makes_every_aggregate_nan(scores, data):
    r = data.draw(st.integers(0, scores.shape[0] - 1))
    t = data.draw(st.integers(0, scores.shape[1] - 1))
    scores = scores.copy()
    scores[r, t] = np.nan
    for aggregate in (iqm, mean, median):
        assert math.isnan(aggregate(scores))


@PROPERTY
@given(score_matrices(), st.integers(0, 3))
def test_per_task_intervals_stay_within_each_tasks_own_runs(scores, seed):
    """The stratified bootstrap resamples each task's runs on their own: a task's interval lies
    within the range of its own scores and holds its mean's replicates (same seed, same bounds)."""
    means, lower, upper = per_task_ci(scores, reps=200, seed=seed)
    assert np.all(scores.min(axis=0) - 1e-12 <= lower) and np.all(upper <= scores.max(axis=0) + 1e-12)
    assert np.all(lower <= upper)
    again = per_task_ci(scores, reps=200, seed=seed)
    assert np.array_equal(again[1], lower) and np.array_equal(again[2], upper)
    np.testing.assert_allclose(means, scores.mean(axis=0))
