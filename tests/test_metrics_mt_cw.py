"""Multi-task (rliable) and Continual World metrics on small logs with hand-computed answers."""

import json

import numpy as np
import pytest

from metrics import continual as cw
from metrics import multitask as mt
from metrics.runs import make_run

nan = np.nan
CW_SCHEDULE = [(("a",), 0, 100), (("b",), 100, 200)]


def cl_run(steps, a, b, seed=0):
    """A two-task continual run: a trained on steps [0, 100), b on [100, 200)."""
    return make_run(["a", "b"], steps, np.array([a, b]).T, CW_SCHEDULE, seed=seed)


# Seed 0. Windows: a (0, 100] -> steps 50, 100; b (100, 200] plus the late eval at 210 (the last
# stage has no upper bound); "end of run" = the last stage's window (100, inf).
RUN0 = cl_run([0, 50, 100, 150, 200, 210],
              a=[0.0, 0.4, 0.8, 0.6, 0.2, nan],
              b=[0.1, nan, 0.3, 0.5, 0.9, 1.0])
# Seed 1, no late eval.
RUN1 = cl_run([0, 50, 100, 150, 200],
              a=[0.0, 0.6, 1.0, 0.4, 0.4],
              b=[0.0, 0.0, 0.2, 0.6, 0.8], seed=1)


def single(task, steps, success, end, seed=0):
    """A single-task reference run training `task` on [0, end)."""
    return make_run([task], steps, [[s] for s in success], [((task,), 0, end)], seed=seed)


REFS = [
    single("a", [0, 50, 100, 150], [0.0, 0.2, 0.6, 1.0], end=150),  # budget 100: (0.2+0.6)/2 = 0.4
    single("a", [0, 50, 100], [0.5, 0.4, 0.8], end=100, seed=1),    # step 0 excluded: (0.4+0.8)/2 = 0.6
    single("b", [0, 50, 100], [0.0, 0.8, 1.0], end=100),            # (0.8+1.0)/2 = 0.9
    single("b", [0, 50, 100], [0.0, 0.8, 0.8], end=100, seed=1),    # (0.8+0.8)/2 = 0.8
    # trains both tasks, so it is nobody's reference (would pull AUC_ref_a to (0.4+0.6+1)/3)
    make_run(["a", "b"], [0, 100], [[0, 0], [1, 1]], [(("a", "b"), 0, 100)]),
]


# ---------------------------------------------------------------- multi-task: final scores

def test_final_scores_average_the_last_valid_evaluations():
    run = make_run(["x", "y", "z"], [0, 10, 20, 30],
                   [[0.1, 0.2, nan], [0.5, 0.4, nan], [0.7, nan, nan], [0.9, nan, nan]],
                   [(("x", "y", "z"), 0, 30)],
                   returns=[[1, 0, nan], [2, 0, nan], [3, 0, nan], [4, 0, nan]])
    # last_k=1: x 0.9, y 0.4 (its last non-NaN), z never evaluated -> NaN
    np.testing.assert_allclose(mt.final_scores(run), [0.9, 0.4, nan])
    # last_k=2: x (0.7+0.9)/2 = 0.8, y (0.2+0.4)/2 = 0.3
    np.testing.assert_allclose(mt.final_scores(run, last_k=2), [0.8, 0.3, nan])
    # returns of x, last_k=2: (3+4)/2 = 3.5
    assert mt.final_scores(run, "return", last_k=2)[0] == pytest.approx(3.5)
    with pytest.raises(ValueError):
        mt.final_scores(run, last_k=0)


def test_score_matrix_stacks_seeds_and_rejects_mismatched_tasks():
    def run(tasks, finals):
        return make_run(tasks, [0, 10], [[0.0] * len(tasks), finals], [(tuple(tasks), 0, 10)])

    seeds = [run(["x", "y"], [0.1, 0.2]), run(["x", "y"], [0.3, 0.4]), run(["x", "y"], [0.5, 0.6])]
    np.testing.assert_allclose(mt.score_matrix(seeds), [[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]])
    with pytest.raises(ValueError, match="different task lists"):
        mt.score_matrix(seeds + [run(["y", "x"], [0.1, 0.2])])  # same tasks, other order
    with pytest.raises(ValueError, match="different task lists"):
        mt.score_matrix(seeds + [run(["x", "z"], [0.1, 0.2])])
    with pytest.raises(ValueError):
        mt.score_matrix([])


# ---------------------------------------------------------------- multi-task: aggregates

SCORES = np.array([[0.0, 0.5, 0.9],
                   [0.2, 0.1, 1.0]])


def test_iqm_mean_median_by_hand():
    # sorted 0, .1, .2, .5, .9, 1; trim int(.25*6) = 1 each end: (.1+.2+.5+.9)/4 = 0.425
    assert mt.iqm(SCORES) == pytest.approx(0.425)
    # task means .1, .3, .95 -> mean 1.35/3 = 0.45
    assert mt.mean(SCORES) == pytest.approx(0.45)
    # median of the task means .1, .3, .95 = 0.3 (the median of all six scores would be 0.35)
    assert mt.median(SCORES) == pytest.approx(0.3)
    # 8 scores: sorted 0, .1, .2, .3, .4, .6, .9, 1; trim 2 each end: (.2+.3+.4+.6)/4 = 0.375
    eight = np.array([[0.0, 0.3, 0.6, 1.0], [0.4, 0.1, 0.9, 0.2]])
    assert mt.iqm(eight) == pytest.approx(0.375)
    # batched: [[0, .5], [.2, .1]] sorted 0, .1, .2, .5, trim 1 each end: (.1+.2)/2 = .15; +1
    np.testing.assert_allclose(mt.iqm(np.stack([SCORES[:, :2], SCORES[:, :2] + 1])), [0.15, 1.15])
    assert np.isnan(mt.iqm(np.array([[0.1, nan], [0.2, 0.3]])))


def test_aggregates_are_batched_over_leading_axes():
    batch = np.stack([SCORES, SCORES[::-1] * 2])
    for statistic in (mt.iqm, mt.mean, mt.median):
        np.testing.assert_allclose(statistic(batch), [statistic(SCORES), statistic(SCORES[::-1] * 2)])
    np.testing.assert_allclose(mt.task_means(SCORES), [0.1, 0.3, 0.95])


# ---------------------------------------------------------------- multi-task: stratified bootstrap

def test_stratified_bootstrap_resamples_each_task_on_its_own():
    # Rows (0, 1) and (1, 0) both have mean 0.5: resampling whole rows would give [0.5, 0.5].
    # Per task: P(mean 0) = P(task 0 draws 0,0) * P(task 1 draws 0,0) = 1/4 * 1/4 = 6.25% > 2.5%,
    # and P(mean 1) likewise, so the 95% percentile interval is [0, 1].
    scores = np.array([[0.0, 1.0], [1.0, 0.0]])
    assert mt.stratified_bootstrap_ci(scores, mt.mean, reps=4000) == (0.0, 1.0)


def test_stratified_bootstrap_degenerate_and_vector_statistics():
    # every run identical per task: each replicate is the same matrix, iqm of .3,.3,.7,.7 = .5
    same = np.array([[0.3, 0.7], [0.3, 0.7]])
    assert mt.stratified_bootstrap_ci(same, mt.iqm, reps=1000) == pytest.approx((0.5, 0.5))
    # per task: task 0 runs {0, 1} -> resampled means 0, .5, 1 w.p. 1/4, 1/2, 1/4 -> [0, 1];
    # task 1 runs {1, 1} -> [1, 1]; means (0+1)/2 = 0.5 and 1
    means, lower, upper = mt.per_task_ci(np.array([[0.0, 1.0], [1.0, 1.0]]), reps=4000)
    np.testing.assert_allclose(means, [0.5, 1.0])
    np.testing.assert_allclose(lower, [0.0, 1.0])
    np.testing.assert_allclose(upper, [1.0, 1.0])


def test_stratified_bootstrap_is_seeded_and_checks_its_input():
    rng = np.random.default_rng(3)
    scores = rng.random((5, 6))
    first = mt.stratified_bootstrap_ci(scores, mt.iqm, reps=2000, seed=7)
    assert mt.stratified_bootstrap_ci(scores, mt.iqm, reps=2000, seed=7) == first
    assert mt.stratified_bootstrap_ci(scores, mt.iqm, reps=2000, seed=8) != first
    lower, upper = first
    assert lower < mt.iqm(scores) < upper
    # a wider confidence gives a wider interval
    lo90, up90 = mt.stratified_bootstrap_ci(scores, mt.iqm, reps=2000, confidence=0.9, seed=7)
    assert lower <= lo90 and up90 <= upper
    with pytest.raises(ValueError, match="statistic must map"):
        mt.stratified_bootstrap_ci(scores, np.mean, reps=10)  # reduces the batch to a scalar
    with pytest.raises(ValueError, match="NaN"):
        mt.stratified_bootstrap_ci(np.array([[0.1, nan]]), mt.mean, reps=10)


@pytest.fixture(scope="module")
def rliable():
    pytest.importorskip("rliable")
    try:
        from rliable import library, metrics
    except (ImportError, TypeError) as e:  # rliable 1.2 needs arch<8; arch 7 breaks on pandas 3
        pytest.skip(f"rliable is installed but does not import: {e!r}")
    return library, metrics


def test_aggregates_match_rliable_exactly(rliable):
    _, metrics = rliable
    scores = np.random.default_rng(1).random((5, 7))
    assert mt.iqm(scores) == metrics.aggregate_iqm(scores)
    assert mt.mean(scores) == metrics.aggregate_mean(scores)
    assert mt.median(scores) == metrics.aggregate_median(scores)


def test_stratified_bootstrap_matches_rliable(rliable):
    library, metrics = rliable
    scores = np.random.default_rng(1).random((5, 7))
    np.random.seed(0)  # rliable's StratifiedBootstrap draws from the global numpy RNG

    def aggregates(x):
        return np.array([metrics.aggregate_iqm(x), metrics.aggregate_mean(x),
                         metrics.aggregate_median(x), *np.mean(x, axis=0)])

    points, intervals = library.get_interval_estimates({"m": scores}, aggregates, reps=2000)
    ours = [mt.stratified_bootstrap_ci(scores, f, reps=50_000) for f in (mt.iqm, mt.mean, mt.median)]
    _, task_lower, task_upper = mt.per_task_ci(scores, reps=50_000)
    lower = [b[0] for b in ours] + list(task_lower)
    upper = [b[1] for b in ours] + list(task_upper)
    # Monte-Carlo error of a 2.5% percentile from 2000 replicates: about 0.005 on these scores
    np.testing.assert_allclose(lower, intervals["m"][0], atol=0.025)
    np.testing.assert_allclose(upper, intervals["m"][1], atol=0.025)
    assert points["m"][0] == mt.iqm(scores)


# ---------------------------------------------------------------- continual: values in windows

def test_value_at_end_uses_the_half_open_window_and_skips_nan():
    # a in (0, 100]: steps 50, 100 -> last 0.8; the step-0 eval is outside (else last_k=3 would
    # give (0+.4+.8)/3 = 0.4)
    assert cw.value_at_end(RUN0, "a", (0, 100), last_k=1) == pytest.approx(0.8)
    assert cw.value_at_end(RUN0, "a", (0, 100), last_k=3) == pytest.approx(0.6)  # (.4+.8)/2
    # b in (0, 100]: step 50 NaN, step 100 0.3 -> 0.3
    assert cw.value_at_end(RUN0, "b", (0, 100), last_k=2) == pytest.approx(0.3)
    # end of run = (100, inf): a 0.6, 0.2, NaN -> last 2 non-NaN (.6+.2)/2 = 0.4 (not 0.2)
    assert cw.value_at_end(RUN0, "a", last_k=2) == pytest.approx(0.4)
    # b: 0.5, 0.9, 1.0 (step 210 is past the schedule's end but counts) -> (.9+1)/2 = 0.95
    assert cw.value_at_end(RUN0, "b", last_k=2) == pytest.approx(0.95)
    # a window with no evaluation -> NaN
    assert np.isnan(cw.value_at_end(RUN0, "a", (60, 90)))


def test_performance_matrix_by_hand():
    # stage a (0,100]: a last = .8, b last non-NaN = .3; stage b (100,inf): a .2, b 1.0
    np.testing.assert_allclose(cw.performance_matrix(RUN0, last_k=1), [[0.8, 0.2], [0.3, 1.0]])
    # last 2: a (.4+.8)/2 = .6 | (.6+.2)/2 = .4;  b only .3 | (.9+1)/2 = .95
    np.testing.assert_allclose(cw.performance_matrix(RUN0, last_k=2), [[0.6, 0.4], [0.3, 0.95]])
    assert cw.performance_matrix(RUN0).shape == (2, 2)


def test_average_performance_by_hand():
    # end of run, last 1: a .2, b 1.0 -> (.2+1)/2 = 0.6
    assert cw.average_performance(RUN0, last_k=1) == pytest.approx(0.6)
    # last 2: a (.6+.2)/2 = .4, b (.9+1)/2 = .95 -> 1.35/2 = 0.675
    assert cw.average_performance(RUN0, last_k=2) == pytest.approx(0.675)
    # default last 5 (window has fewer): a (.6+.2)/2 = .4, b (.5+.9+1)/3 = .8 -> 0.6
    assert cw.average_performance(RUN0) == pytest.approx(0.6)
    np.testing.assert_allclose(cw.final_performance(RUN0), [0.4, 0.8])
    # seed 1: a (.4+.4)/2 = .4, b (.6+.8)/2 = .7 -> 0.55
    assert cw.average_performance(RUN1) == pytest.approx(0.55)


def test_forgetting_by_hand():
    # last 1: F_a = p_a(end of a) - p_a(end) = .8 - .2 = .6; F_b = 1 - 1 = 0; mean over both = 0.3
    # (excluding the last task would give 0.6; the opposite sign -0.3; a [start, end) window
    # would give p_a(end of a) = .4 and F_a = .2)
    per_task, mean = cw.forgetting(RUN0, last_k=1)
    np.testing.assert_allclose(per_task, [0.6, 0.0])
    assert mean == pytest.approx(0.3)
    # last 2: F_a = (.4+.8)/2 - (.6+.2)/2 = .6 - .4 = .2, F_b = 0 -> 0.1
    per_task, mean = cw.forgetting(RUN0, last_k=2)
    np.testing.assert_allclose(per_task, [0.2, 0.0], atol=1e-12)
    assert mean == pytest.approx(0.1)
    # seed 1, default: F_a = (.6+1)/2 - (.4+.4)/2 = .8 - .4 = .4, F_b = 0 -> 0.2
    assert cw.forgetting(RUN1).mean == pytest.approx(0.2)
    # a task never evaluated in its window -> NaN, and so is the mean
    gap = cl_run([0, 150, 200], a=[0.0, 0.5, 0.5], b=[0.0, 0.5, 0.5])
    per_task, mean = cw.forgetting(gap)
    assert np.isnan(per_task[0]) and np.isnan(mean)


def test_forward_transfer_by_hand():
    # AUC_a = mean of a in (0,100] = (.4+.8)/2 = .6; AUC_b = b in (100,inf) = (.5+.9+1)/3 = .8
    # AUC_ref_a = (.4+.6)/2 = .5 -> FT_a = (.6-.5)/(1-.5) = 0.2
    # AUC_ref_b = (.9+.8)/2 = .85 -> FT_b = (.8-.85)/(1-.85) = -1/3; mean (.2-1/3)/2 = -1/15
    per_task, mean = cw.forward_transfer(RUN0, REFS)
    np.testing.assert_allclose(per_task, [0.2, -1 / 3])
    assert mean == pytest.approx(-1 / 15)
    # seed 1: AUC_a = (.6+1)/2 = .8 -> (.8-.5)/.5 = .6; AUC_b = (.6+.8)/2 = .7 -> (.7-.85)/.15 = -1
    np.testing.assert_allclose(cw.forward_transfer(RUN1, REFS).per_task, [0.6, -1.0])


def test_forward_transfer_reference_edge_cases():
    # a perfect reference (AUC_ref = 1) leaves FT undefined
    perfect = [single("a", [0, 50, 100], [1.0, 1.0, 1.0], end=100), *REFS[2:4]]
    per_task, mean = cw.forward_transfer(RUN0, perfect)
    assert np.isnan(per_task[0]) and per_task[1] == pytest.approx(-1 / 3) and np.isnan(mean)
    with pytest.raises(ValueError, match="no reference run trains only a"):
        cw.forward_transfer(RUN0, REFS[2:])
    with pytest.raises(ValueError, match="fewer than the 100"):
        cw.forward_transfer(RUN0, [single("a", [0, 50], [0.0, 0.5], end=50), *REFS[2:4]])


# ---------------------------------------------------------------- continual: CIs and summary

def test_bootstrap_ci_by_hand():
    # 3 seeds .1 .4 .7: all-.1 resamples have probability 1/27 = 3.7% < 5%, the next lowest mean
    # (2*.1+.4)/3 = .2 brings it to 4/27 = 14.8%: the 90% interval is [.2, .6] (symmetric)
    mean, lower, upper = cw.bootstrap_ci([0.1, 0.4, 0.7])
    assert (mean, lower, upper) == pytest.approx((0.4, 0.2, 0.6))
    # at 95% the 2.5% quantile falls inside the 3.7% mass of the all-.1 resamples: [.1, .7]
    assert cw.bootstrap_ci([0.1, 0.4, 0.7], confidence=0.95) == pytest.approx((0.4, 0.1, 0.7))
    # Continual World's own BootstrapCI (continualworld/results_processing/tables.py at awarelab/
    # continual_world 73f63bb, called as its calculate_metrics does: num_bootstrap=4000,
    # confidence=0.9, seed=0, statistic np.mean over seeds; run with NumPy 2's `method=` for its
    # `interpolation=`) gives these bounds for these 8 per-seed values. Irrational values keep
    # neighbouring replicate means distinct, so another random stream or linear interpolation
    # would give other bounds.
    values = np.sqrt([2, 3, 5, 7, 11, 13, 17, 19]) / 5
    mean, lower, upper = cw.bootstrap_ci(values)
    assert mean == pytest.approx(0.5858066073371019, rel=1e-12)
    assert (lower, upper) == pytest.approx((0.4671139322092512, 0.6975085723025303), rel=1e-12)
    with pytest.raises(ValueError):
        cw.bootstrap_ci([])


def test_forward_transfer_ci_by_hand():
    # Point: per task (mean over seeds of AUC - mean ref) / (1 - mean ref):
    # a ((.6+.8)/2 - .5)/.5 = .4, b ((.8+.7)/2 - .85)/.15 = -2/3 -> (.4 - 2/3)/2 = -2/15.
    # Replicates: method seeds (AUC_a, AUC_b) resampled to (.6,.8) 1/4, (.7,.75) 1/2, (.8,.7) 1/4;
    # reference rows to (.4,.9) 1/4, (.5,.85) 1/2, (.6,.8) 1/4. Smallest FT: method (.8,.7) with
    # refs (.4,.9): ((.8-.4)/.6 + (.7-.9)/.1)/2 = (2/3 - 2)/2 = -2/3, mass 1/16 = 6.25% > 5%;
    # refs (.6,.8) give FT 0 for every method resample (largest, mass 1/4): interval [-2/3, 0].
    point, lower, upper = cw.forward_transfer_ci([RUN0, RUN1], REFS)
    assert (point, lower, upper) == pytest.approx((-2 / 15, -2 / 3, 0.0))
    with pytest.raises(ValueError, match="same number of reference runs"):
        cw.forward_transfer_ci([RUN0, RUN1], REFS[1:])


def test_summarize_by_hand():
    summary = cw.summarize([RUN0, RUN1], REFS)
    json.dumps(summary)  # JSON-serializable
    assert summary["seeds"] == [0, 1] and summary["confidence"] == 0.9 and summary["reps"] == 4000
    # performance per seed .6, .55 -> mean .575; two seeds: the 90% interval is [min, max]
    # (all-min resamples have mass 1/4 > 5%); per task a (.4+.4)/2 = .4, b (.8+.7)/2 = .75
    perf = summary["performance"]
    assert (perf["mean"], perf["lower"], perf["upper"]) == pytest.approx((0.575, 0.55, 0.6))
    assert perf["per_task"] == pytest.approx({"a": 0.4, "b": 0.75})
    # forgetting per seed .1, .2 -> .15 in [.1, .2]; per task a (.2+.4)/2 = .3, b 0
    forg = summary["forgetting"]
    assert (forg["mean"], forg["lower"], forg["upper"]) == pytest.approx((0.15, 0.1, 0.2))
    assert forg["per_task"] == pytest.approx({"a": 0.3, "b": 0.0})
    # forward transfer as in test_forward_transfer_ci_by_hand; per task a (.2+.6)/2 = .4,
    # b (-1/3 - 1)/2 = -2/3
    ft = summary["forward_transfer"]
    assert (ft["mean"], ft["lower"], ft["upper"]) == pytest.approx((-2 / 15, -2 / 3, 0.0), abs=1e-9)
    assert ft["per_task"] == pytest.approx({"a": 0.4, "b": -2 / 3})
    # without references there is no forward transfer; NaN is written as None
    gap = cl_run([0, 150, 200], a=[0.0, 0.5, 0.5], b=[0.0, 0.5, 0.5])
    summary = cw.summarize([gap])
    assert "forward_transfer" not in summary
    assert summary["forgetting"]["mean"] is None and summary["forgetting"]["per_task"]["a"] is None
    assert summary["performance"]["mean"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="different task lists"):
        cw.summarize([RUN0, make_run(["b", "a"], [0], [[0, 0]], CW_SCHEDULE)])
