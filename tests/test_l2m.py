"""Our L2M metrics equal l2metrics 3.1.0's on l2logger logs written by l2logger itself."""

import itertools
import math
import os

import numpy as np
import pytest

from metrics.l2logger_io import read_l2logger, ste_regimes
from metrics.l2m import LIFETIME_METRICS, L2MSettings, l2m_metrics

np.NaN = np.nan  # l2metrics 3.1.0 still uses the alias NumPy 2 removed
l2logger = pytest.importorskip("l2logger.l2logger")
SCENARIO_INFO = {"complexity": "1-low", "difficulty": "2-medium", "scenario_type": "custom"}


def write_log(base, name, blocks, workers=1):
    """blocks: [(block_type, [(task, values), ...]), ...] written with l2logger's DataLogger."""
    logger = l2logger.DataLogger(str(base), name, {"metrics_columns": ["reward"]}, dict(SCENARIO_INFO))
    exp = 0
    for block_num, (block_type, parts) in enumerate(blocks):
        for task, values in parts:
            for v in values:
                for w in range(workers):  # several workers log the same experience number
                    logger.log_record({"block_num": block_num, "exp_num": exp, "block_type": block_type,
                                       "task_name": task, "task_params": {}, "worker_id": f"w{w}",
                                       "reward": float(v) + 0.01 * w})
                exp += 1
    logger.close()
    return logger.scenario_dir


def curve(rng, start, end, n, noise=0.05):
    return np.linspace(start, end, n) + rng.normal(0, noise, n)


def scenarios(rng):
    """Forgetting, forward/backward transfer and recovery, in one lifelong log each."""
    forgetting = [("test", [("a_x", [0.1]), ("b_x", [0.1])]),
                  ("train", [("a_x", curve(rng, 0.1, 1, 60))]),
                  ("test", [("a_x", [0.95]), ("b_x", [0.1])]),
                  ("train", [("b_x", curve(rng, 0.1, 1, 60))]),
                  ("test", [("a_x", [0.3]), ("b_x", [0.9])])]
    transfer = [("test", [("a_x", [0.2]), ("b_x", [0.2]), ("c_x", [0.3])]),
                ("train", [("a_x", curve(rng, 0.2, 0.9, 50))]),
                ("test", [("a_x", [0.85]), ("b_x", [0.5]), ("c_x", [0.25])]),
                ("train", [("b_x", curve(rng, 0.5, 1.0, 50))]),
                ("test", [("a_x", [0.9]), ("b_x", [0.95]), ("c_x", [0.6])]),
                ("train", [("c_x", curve(rng, 0.6, 1.0, 50))]),
                ("test", [("a_x", [0.8]), ("b_x", [0.9]), ("c_x", [1.0])])]
    recovery = [("test", [("a_x", [0.1]), ("b_x", [0.1])])]
    for k in range(4):  # a and b alternate; each return to a starts lower and recovers faster
        recovery += [("train", [("a_x", curve(rng, 0.5 - 0.1 * k, 1.0, 40 - 8 * k))]),
                     ("test", [("a_x", [0.9]), ("b_x", [0.3 + 0.1 * k])]),
                     ("train", [("b_x", curve(rng, 0.2 + 0.1 * k, 0.9, 30))]),
                     ("test", [("a_x", [0.5 + 0.05 * k]), ("b_x", [0.85])])]
    multitask = [("test", [("a_x", [0.1]), ("b_x", [0.1])]),
                 ("train", [("a_x", curve(rng, 0.1, 0.8, 30)), ("b_x", curve(rng, 0.1, 0.7, 30))]),
                 ("test", [("a_x", [0.7]), ("b_x", [0.6])])]
    # sample efficiency's assumptions violated: a's curve peaks then declines (negative slope),
    # b saturates at ~25% of its experts (between the 20% cut-off and 30%)
    weak = [("test", [("a_x", [0.1]), ("b_x", [0.1])]),
            ("train", [("a_x", np.r_[curve(rng, 0.5, 0.9, 10), curve(rng, 0.9, 0.1, 50)])]),
            ("test", [("a_x", [0.2]), ("b_x", [0.1])]),
            ("train", [("b_x", curve(rng, 0.0, 0.25, 40, noise=0.01))]),
            ("test", [("a_x", [0.2]), ("b_x", [0.1])])]
    return {"forgetting": forgetting, "transfer": transfer, "recovery": recovery, "multitask": multitask,
            "weak": weak}


@pytest.fixture(scope="module")
def l2(tmp_path_factory):
    """Logs, and STE data stored the way l2metrics stores it (under $L2DATA/taskinfo)."""
    root = tmp_path_factory.mktemp("l2data")
    old = os.environ.get("L2DATA")
    os.environ["L2DATA"] = str(root)
    from l2metrics import util
    rng = np.random.default_rng(0)
    logs = {name: write_log(root / "logs", name, blocks) for name, blocks in scenarios(rng).items()}
    logs["two_workers"] = write_log(root / "logs", "two_workers", scenarios(rng)["forgetting"], workers=2)
    ste = {}
    for task, (start, n) in {"a_x": (0.1, 80), "b_x": (0.0, 70), "c_x": (0.2, 60)}.items():
        for seed in range(2):  # two STE runs per task: l2metrics averages over them
            d = write_log(root / "logs", f"ste_{task}_{seed}",
                          [("train", [(task, curve(rng, start, 1.0, n + 10 * seed))]), ("test", [(task, [0.95])])])
            util.store_ste_data(__import__("pathlib").Path(d), mode="a")
            ste.setdefault(task, []).append(ste_regimes(d, "reward")[1])
    yield logs, ste
    if old is None:
        os.environ.pop("L2DATA")
    else:
        os.environ["L2DATA"] = old


SETTINGS = [L2MSettings(),
            L2MSettings(smoothing="none", normalization="none"),
            L2MSettings(smoothing="hanning", window_length=9, smooth_eval_data=True),
            L2MSettings(clamp_outliers=True, normalization="run", aggregation="median"),
            L2MSettings(ste_averaging="time")]


def same(ours, theirs):
    if theirs is None or (isinstance(theirs, float) and math.isnan(theirs)):
        return ours is None or (isinstance(ours, float) and math.isnan(ours))
    if isinstance(theirs, dict):
        return isinstance(ours, dict) and ours.keys() == theirs.keys() and all(same(ours[k], theirs[k]) for k in theirs)
    if isinstance(theirs, (list, tuple, np.ndarray)):
        return len(ours) == len(theirs) and all(same(a, b) for a, b in zip(ours, theirs))
    return math.isclose(float(ours), float(theirs), rel_tol=1e-9, abs_tol=1e-9)


@pytest.mark.parametrize("name,settings", list(itertools.product(
    ["forgetting", "transfer", "recovery", "multitask", "weak", "two_workers"], SETTINGS)))
def test_equal_to_l2metrics(l2, name, settings):
    from l2metrics.report import MetricsReport
    logs, ste = l2
    theirs = MetricsReport(log_dir=logs[name], perf_measure="reward", maintenance_method="both",
                           transfer_method="both", smoothing_method=settings.smoothing,
                           window_length=settings.window_length, do_smooth_eval_data=settings.smooth_eval_data,
                           clamp_outliers=settings.clamp_outliers, normalization_method=settings.normalization,
                           aggregation_method=settings.aggregation, ste_averaging_method=settings.ste_averaging)
    theirs.calculate()
    ours = l2m_metrics(read_l2logger(logs[name], "reward"), ste, settings)
    for metric in LIFETIME_METRICS:
        assert same(ours["lifetime"][metric], theirs.ll_metrics_dict.get(metric)), metric
    task_keys = ["perf_recovery", "recovery_times", "avg_train_perf", "avg_eval_perf", "perf_maintenance_mrlep",
                 "perf_maintenance_mrtlp", "forward_transfer_ratio", "backward_transfer_ratio",
                 "forward_transfer_contrast", "backward_transfer_contrast", "ste_rel_perf", "sample_efficiency"]
    assert list(ours["tasks"]) == list(theirs.ll_metrics_dict["task_metrics"])
    for task, their_task in theirs.ll_metrics_dict["task_metrics"].items():
        for key in task_keys:
            assert same(ours["tasks"][task][key], their_task[key]), (task, key)
    their_regimes = theirs.regime_metrics_df
    assert same([r["term_perf"] for r in ours["regimes"]], list(their_regimes["term_perf"]))
    assert same([r["saturation"] for r in ours["regimes"]], list(their_regimes["saturation"]))
