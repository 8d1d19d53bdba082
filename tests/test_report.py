"""report.py on real short pointmass runs; l2logger export/import; end-of-run metrics."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from metrics.l2logger_io import export_run, read_l2logger, run_regimes
from metrics.l2m import LIFETIME_METRICS, L2MSettings, l2m_metrics
from metrics.runs import read_run
from tests.conftest import REPO, scalars, train_many

REPORT = REPO / "launch" / "report.py"
TASKS = "reach-e,reach-n"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def report(*args, cwd=None):
    return subprocess.run([sys.executable, str(REPORT), *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=cwd, check=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two seeds of a 2-task pointmass run and a single-task reference run per task."""
    root = tmp_path_factory.mktemp("runs")
    common = ["--suite", "pointmass", "--backend", "single", "--eval-every", 500, "--set", "eval.goals=10",
              "--set", "run.log_every=200", "--set", "run.threads=1"]
    jobs = {f"mt{seed}": [*common, "--tasks", TASKS, "--steps", 2000, "--seed", seed,
                          "--run-dir", root / f"mt-seed{seed}"] for seed in (1, 2)}
    for task in TASKS.split(","):  # the same per-task budget as the multi-task runs' window
        jobs[task] = [*common, "--tasks", task, "--steps", 2000, "--seed", 0, "--run-dir", root / f"ref-{task}"]
    procs = train_many(jobs)
    for name, proc in procs.items():
        assert proc.returncode == 0, (name, proc.stderr)
    return root, procs


@pytest.mark.multiproc
@pytest.mark.integration
def test_report_writes_every_file(runs, tmp_path):
    root, _ = runs
    out = tmp_path / "report"
    proc = report(root / "mt-seed1", root / "mt-seed2", "--reference", root / "ref-reach-e", root / "ref-reach-n",
                  "--out", out, "--reps", 500)
    assert proc.returncode == 0, proc.stderr
    assert "average performance" in proc.stdout and "forward transfer" in proc.stdout
    for name in ("report.md", "report.html", "metrics.json", "success_curves.png", "performance_matrix.png",
                 "forgetting_transfer.png", "plasticity.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    import matplotlib.image
    for png in out.glob("*.png"):
        assert png.read_bytes().startswith(PNG_SIGNATURE)
        assert matplotlib.image.imread(png).shape[0] > 100  # decodes to a real image
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4 and 'src="success_curves.png"' not in html
    md = (out / "report.md").read_text()
    assert "![Success curves](success_curves.png)" in md and "| Method | Seeds |" in md

    metrics = json.loads((out / "metrics.json").read_text())
    (group,) = metrics["groups"].values()  # two seeds of one method form one group
    assert group["seeds"] == [1, 2] and group["tasks"] == TASKS.split(",")
    # numbers agree with the pure functions on the same runs
    from metrics import continual
    mt_runs = [read_run(root / "mt-seed1"), read_run(root / "mt-seed2")]
    expected = np.mean([continual.average_performance(r) for r in mt_runs])
    assert group["continual"]["performance"]["mean"] == pytest.approx(expected)
    assert group["continual"]["forward_transfer"]["mean"] is not None   # references given
    assert group["l2m"]["lifetime"]["ste_rel_perf"]["mean"] is not None  # STEs from the references
    assert group["multitask"]["iqm"]["lower"] <= group["multitask"]["iqm"]["mean"] <= group["multitask"]["iqm"]["upper"]
    # the plasticity section: the diagnostics' last row, averaged over the seeds
    from metrics.plasticity import final_diagnostics
    ends = [final_diagnostics(root / f"mt-seed{s}")["critic/srank"] for s in (1, 2)]
    assert group["plasticity"]["end"]["critic/srank"] == pytest.approx(np.mean(ends))
    assert "## Plasticity" in md and "![Plasticity](plasticity.png)" in md
    matrix = group["performance_matrix"]
    assert len(matrix["mean"]) == 2  # tasks x stage ends
    assert matrix["evaluation_steps"] == list(range(0, 2001, 500))  # the heatmap: tasks x evaluations
    assert len(matrix["by_evaluation"]) == 2 and len(matrix["by_evaluation"][0]) == 5


@pytest.mark.multiproc
@pytest.mark.integration
def test_methods_are_grouped_side_by_side(runs, tmp_path):
    root, _ = runs
    out = tmp_path / "report"
    proc = report(root / "mt-seed1", root / "mt-seed2", root / "ref-reach-e", "--out", out, "--reps", 200)
    # the reference run evaluates other tasks, so it is a different method and a separate group
    assert proc.returncode == 0, proc.stderr
    groups = json.loads((out / "metrics.json").read_text())["groups"]
    assert sorted(len(g["seeds"]) for g in groups.values()) == [1, 2]
    assert all(label in (out / "report.md").read_text() for label in groups)


@pytest.mark.multiproc
@pytest.mark.integration
def test_round_trip_through_l2logger(runs, tmp_path):
    root, _ = runs
    run = read_run(root / "mt-seed1")
    ours = run_regimes(run, "success")
    scenario = export_run(run, tmp_path / "l2log")
    back = read_l2logger(scenario, "success")
    assert [(r.block_num, r.block_type, r.task) for r in back] == [(r.block_num, r.block_type, r.task) for r in ours]
    assert all(np.array_equal(a.values, b.values) and np.array_equal(a.exp_nums, b.exp_nums)
               for a, b in zip(ours, back))
    # test block, train block (one regime per task), test block
    assert [r.block_type for r in ours] == ["test", "test", "train", "train", "test", "test"]
    settings = L2MSettings()
    direct, via_log = l2m_metrics(ours, {}, settings), l2m_metrics(back, {}, settings)
    for name in LIFETIME_METRICS:
        assert np.isclose(direct["lifetime"][name], via_log["lifetime"][name], equal_nan=True), name


@pytest.mark.multiproc
@pytest.mark.integration
def test_l2metrics_scores_our_exported_run(runs, tmp_path, monkeypatch):
    """The l2metrics tool runs on our export and agrees with our metrics, STE data included."""
    np.NaN = np.nan  # l2metrics 3.1.0 refers to the alias NumPy 2 removed
    pytest.importorskip("l2metrics")
    monkeypatch.setenv("L2DATA", str(tmp_path / "l2data"))
    from l2metrics import util
    from l2metrics.report import MetricsReport

    root, _ = runs
    ste = {}
    for task in TASKS.split(","):
        ref = read_run(root / f"ref-{task}")
        util.store_ste_data(export_run(ref, tmp_path / f"ste-{task}"))
        ste[task] = [run_regimes(ref, "success")]
    scenario = export_run(read_run(root / "mt-seed1"), tmp_path / "mt")
    theirs = MetricsReport(log_dir=scenario, perf_measure="success", maintenance_method="both", transfer_method="both")
    theirs.calculate()
    ours = l2m_metrics(run_regimes(read_run(root / "mt-seed1"), "success"), ste, L2MSettings())
    for name in LIFETIME_METRICS:
        value = theirs.ll_metrics_dict[name]
        assert np.isclose(ours["lifetime"][name], np.nan if value is None else value, equal_nan=True), name
    assert not np.isnan(ours["lifetime"]["ste_rel_perf"]) and not np.isnan(ours["lifetime"]["sample_efficiency"])


@pytest.mark.multiproc
@pytest.mark.integration
def test_run_ends_with_metrics_in_terminal_and_tensorboard(runs):
    root, procs = runs
    assert "metrics: final success" in procs["mt1"].stdout
    final = scalars(root / "mt-seed1" / "tb", "metrics/final_success")
    evals = [json.loads(line) for line in (root / "mt-seed1" / "evals.jsonl").read_text().splitlines()]
    last = [r["success"] for r in evals if r["step"] == 2000]
    assert final == [(2000, pytest.approx(np.mean(last)))]


@pytest.mark.parametrize("case", ["missing", "empty_dir", "no_evals", "bad_config", "bad_evals", "bad_flag"])
@pytest.mark.multiproc
@pytest.mark.integration
def test_bad_run_dirs_get_one_line_and_exit_2(runs, tmp_path, case):
    root, _ = runs
    target = tmp_path / "run"
    extra = []
    if case == "empty_dir":
        target.mkdir()
    elif case in ("no_evals", "bad_config", "bad_evals"):
        target.mkdir()
        (target / "config.yaml").write_text((root / "mt-seed1" / "config.yaml").read_text())
        if case == "bad_config":
            (target / "config.yaml").write_text("run: [unclosed\n")
        if case == "bad_evals":
            (target / "evals.jsonl").write_text('{"step": 0, "task": "reach-e"}\n')
    elif case == "bad_flag":
        target, extra = root / "mt-seed1", ["--measure", "reward"]
    proc = report(target, *extra, "--out", tmp_path / "out")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("report.py: error:"), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists() and not any(p.name.startswith(".out") for p in tmp_path.iterdir())


@pytest.mark.multiproc
@pytest.mark.integration
def test_default_output_goes_into_the_run_dir(runs, tmp_path):
    root, _ = runs
    run = tmp_path / "copy"
    import shutil
    shutil.copytree(root / "mt-seed1", run)
    assert report(run, "--reps", 100).returncode == 0
    assert (run / "report" / "report.html").is_file()
    # a second report replaces the first, leaving no temp folders behind
    assert report(run, "--reps", 100).returncode == 0
    assert sorted(p.name for p in run.iterdir() if "report" in p.name) == ["report"]
    assert oct((run / "report").stat().st_mode & 0o777) == oct(0o777 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
