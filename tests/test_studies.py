"""Studies (launch/study.py) on real Ray Tune and real training runs: the minimal study to its
report, a SIGKILLed driver resumed, a killed trial retried, a trial that keeps failing, and bad
study files refused before anything starts."""

import contextlib
import hashlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from launch.studies import spec
from launch.study import main as study_main
from metrics import evallog
from tests.conftest import REPO, env_with_home

STUDY = REPO / "launch" / "study.py"
# The minimal study, at a test's budget (600 env steps per task, not 1,500; 4 goals an evaluation)
MINIMAL = """\
name: pm2-methods
base: {suite: pointmass, sequence: PM2, steps_per_task: 600}
set: {run.threads: 1, eval.goals: 4}
grid: {method: [none, ewc], seed: [0, 1]}
references: single-task
"""


@pytest.fixture
def scratch():
    """HOME and TMPDIR of the study's processes: short paths (Ray's sockets live under TMPDIR),
    checked afterwards for anything written outside the study directory."""
    with tempfile.TemporaryDirectory(prefix="pt-", dir="/tmp") as root:
        home, tmp = Path(root) / "home", Path(root) / "t"
        home.mkdir(), tmp.mkdir()
        # matplotlib's font cache (the report's plots) is matplotlib's, not the study's: kept in TMPDIR
        yield env_with_home(home, tmp, MPLCONFIGDIR=str(tmp / "mpl")), home


def _start(tmp_path: Path, text: str, env) -> tuple[Path, subprocess.Popen]:
    """launch/study.py on the study `text`, into tmp_path/study: (the study directory, the driver)."""
    (tmp_path / "study.yaml").write_text(text)
    out = tmp_path / "study"
    return out, subprocess.Popen([sys.executable, str(STUDY), str(tmp_path / "study.yaml"), "--out", str(out)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)


def _rows(study_dir: Path) -> list[dict]:
    path = study_dir / "trials.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _final(study_dir: Path) -> dict:
    """trial -> its last status."""
    return {r["trial"]: r["status"] for r in _rows(study_dir) if r["status"] != "placed"}


def _eval_keys_complete(run: Path, every: int, total: int, tasks: list[str]) -> None:
    """Every evaluation row once: the steps 0, every, ..., total, each task at each."""
    keys = [(r["step"], r["task"]) for r in evallog.read(run / "evals.jsonl")]
    assert len(keys) == len(set(keys)), f"duplicate evaluation rows in {run.name}"
    assert sorted(keys) == sorted((s, t) for s in range(0, total + 1, every) for t in tasks), run.name


def _hashes(run: Path) -> dict:
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(run.rglob("*"))
            if p.is_file()}


@pytest.mark.multiproc
@pytest.mark.integration
def test_minimal_study_runs_to_its_report_and_writes_only_its_directory(tmp_path, scratch):
    env, home = scratch
    out, proc = _start(tmp_path, MINIMAL, env)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
    grid = ["method=none,seed=0", "method=none,seed=1", "method=ewc,seed=0", "method=ewc,seed=1"]
    references = [f"reference={task},seed={seed}" for seed in (0, 1) for task in ("reach-e", "reach-w")]
    # one run directory per grid point and one per distinct reference (the method shares them)
    assert sorted(p.name for p in out.iterdir() if (p / "config.yaml").exists()) == sorted(grid)
    assert sorted(p.name for p in (out / "references").iterdir() if p.is_dir()) == sorted(references)
    assert set(_final(out).values()) == {"done"} and sorted(_final(out)) == sorted(grid + references)
    config = yaml.safe_load((out / "method=ewc,seed=1" / "config.yaml").read_text())
    assert (config["continual"]["method"], config["run"]["seed"], config["continual"]["steps_per_task"]) == \
        ("ewc", 1, 600)
    reference = yaml.safe_load((out / "references" / "reference=reach-w,seed=1" / "config.yaml").read_text())
    assert (reference["env"]["tasks"], reference["run"]["seed"], reference["run"]["steps"]) == ("reach-w", 1, 600)
    for run in grid:
        _eval_keys_complete(out / run, 300, 1200, ["reach-e", "reach-w"])
    # the report: one row per method, its two seeds aggregated, forward transfer from the references
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    assert sorted(metrics["groups"]) == ["method=ewc", "method=none"]
    for group in metrics["groups"].values():
        assert group["seeds"] == [0, 1]
        assert group["continual"]["forward_transfer"]["mean"] is not None
        assert sorted(group["references"]) == ["reach-e", "reach-w"]
    assert "| method=ewc |" in (out / "report" / "report.md").read_text()
    assert "study: 8 trials |" in stdout and "0 pending, 0 running, 8 done, 0 failed" in stdout
    assert re.search(r"\d running, .* ETA \d+m\d\ds", stdout)  # an estimate while trials ran
    # Ray Tune's experiments are inside the study directory; nothing in HOME (no ~/ray_results, ~/.ray)
    assert (out / "tune" / "session-1").is_dir()
    assert list(home.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["study", "study.yaml"]


def _wait(predicate, proc, timeout=300):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def _train_processes(out: Path) -> list[int]:
    """The train.py processes writing into the study directory `out`."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "launch/train.py" in cmdline and str(out) in cmdline:
            pids.append(int(proc.name))
    return pids


KILLED = """\
name: pm2-killed
base: {suite: pointmass, sequence: PM2, steps_per_task: 1000, eval_every: 250}
set: {run.checkpoint_every: 250, eval.goals: 4}
grid: {method: [none, ewc], seed: [0]}
max_concurrent: 1
"""


@pytest.mark.multiproc
@pytest.mark.integration
def test_sigkilled_driver_resumes_without_running_a_trial_twice(tmp_path, scratch):
    env, _ = scratch
    out, proc = _start(tmp_path, KILLED, env)
    runs = lambda: [p for p in out.iterdir() if (p / "config.yaml").exists()] if out.exists() else []  # noqa: E731

    def one_done_one_checkpointed():
        done = [r for r in runs() if (r / "learners.json").exists()]
        midway = [r for r in runs() if not (r / "learners.json").exists() and any((r / "checkpoints").glob("*"))]
        return done and midway
    _wait(one_done_one_checkpointed, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # the trials' train.py processes get SIGTERM with their Ray workers: they checkpoint and stop
    deadline = time.monotonic() + 60
    while _train_processes(out):
        assert time.monotonic() < deadline, "train.py processes outlived the killed study"
        time.sleep(0.2)
    done = {r.name: _hashes(r) for r in runs() if (r / "learners.json").exists()}
    resumable = [r.name for r in runs() if not (r / "learners.json").exists() and any((r / "checkpoints").glob("*"))]
    assert done and resumable
    proc = subprocess.run([sys.executable, str(STUDY), "--resume", str(out)], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = ["method=none,seed=0", "method=ewc,seed=0"]
    assert sorted(r.name for r in runs()) == sorted(names)  # exactly the grid's, none duplicated
    for name in names:
        _eval_keys_complete(out / name, 250, 2000, ["reach-e", "reach-w"])
    for name, hashes in done.items():  # finished trials untouched, not started again
        assert _hashes(out / name) == hashes, name
        assert not [r for r in _rows(out) if r["trial"] == name and r["session"] == 2]
    for name in resumable:  # continued from its checkpoint, not trained again from the start
        log = (out / "logs" / f"{name}.log").read_text()
        assert log.count("train.py --resume") == 1 and log.count("--run-dir") == 1, log[-2000:]
    assert sorted(json.loads((out / "report" / "metrics.json").read_text())["groups"]) == ["method=ewc", "method=none"]


RETRIED = """\
name: retried
base: {suite: pointmass, tasks: reach-e, steps: 900, eval_every: 300}
set: {run.checkpoint_every: 300, eval.goals: 4}
grid: {seed: [0, 1]}
retries: 1
max_concurrent: 2
"""


@pytest.mark.multiproc
@pytest.mark.integration
def test_a_killed_trial_is_retried_and_one_that_keeps_failing_is_reported(tmp_path, scratch):
    env, _ = scratch
    out, proc = _start(tmp_path, RETRIED, env)
    killed = set()

    def kill_placed():
        """Kill seed 0's train.py once after its first checkpoint; seed 1's every time it starts."""
        for row in _rows(out):
            pid, name = row.get("pid"), row["trial"]
            if row["status"] != "placed" or pid in killed:
                continue
            if name == "seed=0" and any(r["trial"] == name for r in _rows(out) if r["status"] == "retrying"):
                continue
            if name == "seed=0" and not any((out / name / "checkpoints").glob("*")):
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            killed.add(pid)
        return proc.poll() is not None
    deadline = time.monotonic() + 400
    while not kill_placed():
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert proc.returncode == 1, proc.stderr.read()[-3000:]
    statuses = [r["status"] for r in _rows(out) if r["trial"] == "seed=0"]
    assert statuses.count("retrying") == 1 and statuses[-1] == "done"  # killed once, resumed, finished
    log = (out / "logs" / "seed=0.log").read_text()
    assert log.count("train.py --resume") == 1 and log.count("--run-dir") == 1, log[-2000:]
    assert [r["status"] for r in _rows(out) if r["trial"] == "seed=1"][-1] == "failed"
    _eval_keys_complete(out / "seed=0", 300, 900, ["reach-e"])
    assert "1 trial(s) failed: seed=1" in proc.stderr.read()
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    assert [g["seeds"] for g in metrics["groups"].values()] == [[0]]  # the report covers the others


@pytest.mark.parametrize("text, fragment", [
    ("grid: {methd: [none, ewc]}", "grid: unknown train.py flag 'methd'"),
    ("grid: {sac.learning_rate: [1e-3]}", "grid: unknown config key 'sac.learning_rate'"),
    ("grid: {method: [none, nosuch]}", "trial method=nosuch: unknown continual.method 'nosuch'"),
    ("grid: {sac.actor_lr: [1e-3, fast]}", "trial sac.actor_lr=fast: config key sac.actor_lr expects float"),
    ("grid: {}", "grid must name at least one axis"),
    ("grid: {seed: []}", "grid axis 'seed' has no values"),
    ("base: {seed: 3}\ngrid: {seed: [0, 1]}", "grid axis 'seed' sets run.seed, which is set elsewhere"),
    ("grid: {seed: [0]}\nreferences: all", "references must be single-task"),
    ("grid: {seed: [0]}\nretries: -1", "retries must be an integer >= 0"),
    ("grid: {seed: [0]}\nresources: {cpu: 0}", "resources.cpu must be a number from 1 to 4096"),
    ("grid: {seed: [0]}\nresources: {cpu: 4096}", "a trial needs 4096 CPUs (resources.cpu); this machine has"),
    ("grid: {seed: [0]}\nschedule: asha", "unknown key 'schedule'"),
    ("grid: {run_dir: [a, b]}", "run_dir is the study's to set"),
    ("grid: {seed: [0]\n", "is not readable YAML"),
    ("grid: {seed: [0]}\nresources: {cpu: .nan}", "resources.cpu must be a number from 1 to 4096, got nan"),
    ("name: x", "grid must name at least one axis"),
    ("grid: {seed: [0]}\nreport: {ou: /tmp/x}", "report: out, reference and export_l2logger are the study's"),
    ("grid: {seed: [2024-01-01]}", "datetime.date(2024, 1, 1) is not a value a setting takes"),
    ("grid: {seed: [0], set: [run.seed=5]}", "set is the study's to set"),
    ("grid: {seed: [0], dist_timeout: [60]}", "dist_timeout is the study's to set"),
    ("grid: {seed: [0]}\nreport: {out: /tmp/x}", "report: out is the study's"),
    ("grid: {seed: [0]}\nreport: {last_k: 0}", "report: --last-k and --reps must be positive"),
    ("grid: {tasks: [reach-e, nosuch]}", "trial tasks=nosuch: unknown task nosuch"),
    ("grid: {seed: [0]}\nranks: 2", "trial seed=0:"),
    ("grid: {seed: [0]}\nname: 7", "study name 7 must be a word"),
    ("grid: {seed: [0]}\ntrials: []", "unknown key 'trials'"),
    ("- a list", "must be a mapping"),
])
def test_bad_study_files_are_refused_before_anything_starts(tmp_path, text, fragment):
    path = tmp_path / "bad.yaml"
    base = "base: {suite: pointmass}\n" if "tasks" in text else "base: {suite: pointmass, sequence: PM2}\n"
    path.write_text(base + text if text.startswith("grid") else text)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = study_main([str(path), "--out", str(tmp_path / "study")])
    lines = err.getvalue().strip().splitlines()
    assert code == 2 and len(lines) == 1 and fragment in lines[0], err.getvalue()
    assert not (tmp_path / "study").exists() and [p.name for p in tmp_path.iterdir()] == ["bad.yaml"]


def test_resume_of_a_directory_that_is_no_study_is_refused(tmp_path):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = study_main(["--resume", str(tmp_path)])
    assert code == 2 and "no study.yaml (not a study directory)" in err.getvalue()


def test_trials_are_train_py_commands_and_references_are_shared_across_methods():
    study = spec.build(yaml.safe_load(MINIMAL))
    grid = [t for t in study.trials if not t.reference]
    assert [t.name for t in grid] == ["method=none,seed=0", "method=none,seed=1", "method=ewc,seed=0",
                                      "method=ewc,seed=1"]
    ewc = grid[3].argv
    assert ewc[:6] == ["--backend", "single", "--suite", "pointmass", "--sequence", "PM2"]
    assert "--set" in ewc and "run.threads=1" in ewc and ewc[-4:] == ["--method", "ewc", "--seed", "1"]
    assert all(t.steps == 1200 for t in grid)
    references = [t for t in study.trials if t.reference]
    assert [t.name for t in references] == ["reference=reach-e,seed=0", "reference=reach-w,seed=0",
                                            "reference=reach-e,seed=1", "reference=reach-w,seed=1"]
    for ref in references:  # --mode single-task's configs: the task alone, method none, the stage's budget
        assert (ref.config["continual"]["method"], ref.config["continual"]["sequence"]) == ("none", "")
        assert (ref.config["env"]["tasks"], ref.config["run"]["steps"]) == (ref.reference, 600)
        assert ref.config["run"]["threads"] == 1
    # a grid axis of named variants: each variant's settings, the variant's name in the trial's
    variants = spec.build({"base": {"suite": "pointmass", "steps": 500}, "resources": {"cpu": 2},
                           "grid": {"variant": {"mlp": {}, "wide": {"sac.hidden_sizes": [128, 128]}}}})
    assert [t.name for t in variants.trials] == ["variant=mlp", "variant=wide"]
    assert variants.trials[1].argv[-2:] == ["--set", "sac.hidden_sizes=[128,128]"]
    assert "run.threads=2" in variants.trials[0].argv  # the trial's CPUs, where the study does not say


def test_the_progress_line_counts_trials_and_estimates_from_this_sessions_rate(tmp_path):
    from launch.studies.driver import StudyProgress
    study = spec.build({"base": {"suite": "pointmass", "steps": 1000}, "grid": {"seed": [0, 1, 2, 3]}})
    progress = StudyProgress(study, tmp_path, 1, stream=io.StringIO())
    assert "4 pending, 0 running, 0 done, 0 failed | 0% of env steps" in progress.line()
    assert "ETA unknown" in progress.line()
    progress.state.update({"seed=0": "done", "seed=1": "running", "seed=2": "failed"})
    progress.fraction.update({"seed=0": 1.0, "seed=1": 0.5})
    progress.started -= 30  # 1.5 trials' steps in 30 s; 1.5 left (the failed one is not): 30 s
    line = progress.line()
    # the failed trial is out of the share; the ETA is the pending and running trials' steps at this session's rate
    assert "1 pending, 1 running, 1 done, 1 failed | 50% of env steps" in line
    assert "ETA 0m30s" in line


def test_each_group_of_a_study_report_gets_its_own_trials_references(tmp_path):
    """A-GEM's update order changes its single-task runs: its trials get references of their own,
    and the report compares each group with its own (launch/studies/results.py)."""
    from launch.studies import results
    from launch.study import create
    study = spec.build({"base": {"suite": "pointmass", "sequence": "PM2"}, "references": "single-task",
                        "grid": {"method": ["none", "ewc", "agem"], "seed": [0]}})
    assert [t.name for t in study.trials if t.reference] == [
        "reference=reach-e,seed=0", "reference=reach-w,seed=0",
        "reference=reach-e,method=agem,seed=0", "reference=reach-w,method=agem,seed=0"]
    create(study, tmp_path / "study")
    for trial in study.trials:  # every run finished (results.py reads only that a run ended)
        (tmp_path / "study" / trial.run_dir).mkdir(parents=True)
        (tmp_path / "study" / trial.run_dir / "learners.json").write_text("{}")
    refs = {label: sorted(p.name for p in dirs) for label, dirs in results.reference_runs(tmp_path / "study").items()}
    assert refs == {"method=none": ["reference=reach-e,seed=0", "reference=reach-w,seed=0"],
                    "method=ewc": ["reference=reach-e,seed=0", "reference=reach-w,seed=0"],
                    "method=agem": ["reference=reach-e,method=agem,seed=0", "reference=reach-w,method=agem,seed=0"]}
    assert {label: [p.name for p in dirs] for label, dirs in results.grid_runs(tmp_path / "study").items()} == {
        "method=none": ["method=none,seed=0"], "method=ewc": ["method=ewc,seed=0"],
        "method=agem": ["method=agem,seed=0"]}


def test_references_drop_continual_settings_and_names_tell_them_apart():
    """A detector, blended switches or a task-free method change nothing on one task: those trials
    share their references (launch/config single_task_configs), which keep the network hidden
    boundaries imply; a smaller replay is a reference of its own, and two references whose trials
    share the same values are named by their first trial's."""
    small = {"replay.capacity_per_task": 1000}
    variants = {"finetune": {}, "ewc+change": {"method": "ewc", "continual.detector": "change"},
                "reservoir": {"method": "reservoir"}, "small": small,
                "reservoir-small": {"method": "reservoir", **small}}
    study = spec.build({"base": {"suite": "pointmass", "sequence": "PM2"}, "references": "single-task",
                        "set": {"continual.boundaries": "hidden"},
                        "grid": {"variant": variants, "continual.blend_steps": [0, 200], "seed": [0]}})
    refs = [t for t in study.trials if t.reference]
    assert [t.name for t in refs] == [
        "reference=reach-e,variant=finetune,continual.blend_steps=0,seed=0",
        "reference=reach-w,variant=finetune,continual.blend_steps=0,seed=0",
        "reference=reach-e,variant=small,continual.blend_steps=0,seed=0",
        "reference=reach-w,variant=small,continual.blend_steps=0,seed=0"]
    for ref in refs:
        c = ref.config["continual"]
        assert (c["method"], c["boundaries"], c["detector"], c["blend_steps"]) == ("none", "given", "", 0)
        assert (ref.config["sac"]["task_input"], ref.config["sac"]["head"]) == (False, "single")
        assert ref.config["replay"]["save_in_checkpoint"] is False  # reservoir's implied true: not a result
    assert [r["replay"]["capacity_per_task"] for r in (refs[0].config, refs[2].config)] == [50000, 1000]
    by_trial = {t.name: t.references for t in study.trials if not t.reference}
    assert by_trial["variant=ewc+change,continual.blend_steps=200,seed=0"] == [t.name for t in refs[:2]]
    assert by_trial["variant=reservoir-small,continual.blend_steps=0,seed=0"] == [t.name for t in refs[2:]]


def test_a_list_of_grids_is_their_trials_together():
    """A study that is not one rectangle: task-aware methods beside task-free ones, each sub-grid
    with its own axes, the report's labels from each trial's own values."""
    study = spec.build({"base": {"suite": "pointmass", "sequence": "PM2"},
                        "grid": [{"method": ["ewc", "packnet"], "seed": [0]},
                                 {"method": ["3rl"], "continual.boundaries": ["hidden"], "seed": [0]}]})
    assert [t.name for t in study.trials] == ["method=ewc,seed=0", "method=packnet,seed=0",
                                              "method=3rl,continual.boundaries=hidden,seed=0"]
    assert "continual.boundaries=hidden" in study.trials[2].argv
    assert not any("continual.boundaries=hidden" in t.argv for t in study.trials[:2])
    with pytest.raises(spec.UserError, match="grid must name at least one axis"):
        spec.build({"base": {"suite": "pointmass"}, "grid": [{"seed": [0]}, {}]})
