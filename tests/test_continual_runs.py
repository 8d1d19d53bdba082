"""Continual learning on real runs: on a pointmass sequence of conflicting tasks fine-tuning
forgets and every method forgets less while still learning the new task; runs killed and
resumed; single-task references; a short Meta-World sequence; scoring repeated tasks."""

import numpy as np
import pytest
import yaml

from continual.strategies import METHODS
from metrics import continual, evallog
from metrics.runs import read_run
from tests.conftest import (
    checkpoint_steps,
    kill_after_checkpoint,
    run_train,
    scalars,
    start_train,
    train_in_process,
    train_many,
)

CW10 = ["hammer-v3", "push-wall-v3", "faucet-close-v3", "push-back-v3", "stick-pull-v3",
        "handle-press-side-v3", "push-v3", "shelf-place-v3", "window-close-v3", "peg-unplug-side-v3"]


# -- real runs: fine-tuning forgets, every method forgets less ----------------------------------

STEPS_PER_TASK = 1000
RUNS = {  # name -> extra flags; hnet needs a hypernetwork, so it has a fine-tuning baseline of its own
    "none": [], **{m: ["--method", m] for m in METHODS  # task-free methods: tests/test_task_free_runs.py
                   if m not in ("none", "hnet") and not getattr(METHODS[m], "task_free", False)},
    "none-hyper": ["--set", "sac.head=hyper", "--set", "sac.trunk=hyper"],
    "hnet": ["--method", "hnet", "--set", "sac.head=hyper", "--set", "sac.trunk=hyper"],
}


@pytest.fixture(scope="module")
def pm2_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pm2")
    common = ["--suite", "pointmass", "--sequence", "PM2", "--steps-per-task", STEPS_PER_TASK, "--backend", "single",
              "--seed", 0, "--set", "run.threads=1"]
    results = train_many({name: [*common, "--run-dir", root / name, *flags] for name, flags in RUNS.items()})
    for name, result in results.items():
        assert result.returncode == 0, f"{name}: {result.stderr[-2000:]}"
    runs = _Runs({name: read_run(root / name) for name in RUNS})
    runs.dirs = {name: root / name for name in RUNS}
    return runs


class _Runs(dict):
    """name -> Run, and .dirs: name -> run directory."""


@pytest.mark.integration
@pytest.mark.multiproc
def test_continual_run_records_schedule_and_evaluates_every_task_at_every_stage_end(pm2_runs):
    run = pm2_runs["none"]
    assert run.tasks == ("reach-e", "reach-w")
    assert [(s.tasks, s.start, s.end) for s in run.schedule] == [
        (("reach-e",), 0, STEPS_PER_TASK), (("reach-w",), STEPS_PER_TASK, 2 * STEPS_PER_TASK)]
    for end in (STEPS_PER_TASK, 2 * STEPS_PER_TASK):
        row = list(run.steps).index(end)  # an evaluation exactly at each stage's end
        assert not np.isnan(run.success[row]).any()
    assert not np.isnan(run.success).any()  # both tasks evaluated at every evaluation
    # Training episodes come from the stage's task only.
    first = run.episodes.step <= STEPS_PER_TASK
    assert set(run.episodes.task[first]) == {0} and set(run.episodes.task[~first]) == {1}


LAST_K = 2  # evaluations averaged at a window's end (5 per stage here: CW's 5 would reach back to the start)


@pytest.mark.integration
@pytest.mark.multiproc
def test_finetuning_forgets_the_first_task(pm2_runs):
    run = pm2_runs["none"]
    learned = continual.value_at_end(run, "reach-e", run.training_window("reach-e"), LAST_K)
    assert learned >= 0.8  # it learned reach-e ...
    assert continual.forgetting(run, LAST_K).per_task[0] >= 0.6  # ... and lost it training reach-w


@pytest.mark.parametrize("method", [m for m in RUNS if not m.startswith("none")])
@pytest.mark.integration
@pytest.mark.multiproc
def test_every_method_forgets_less_than_finetuning_and_still_learns_the_new_task(pm2_runs, method):
    baseline = pm2_runs["none-hyper" if method == "hnet" else "none"]
    run = pm2_runs[method]
    forgot = continual.forgetting(run, LAST_K).per_task[0]
    assert forgot <= continual.forgetting(baseline, LAST_K).per_task[0] - 0.4, (method, forgot)
    # ... and not by refusing to learn: reach-w is learned in its stage as well as fine-tuning learns it.
    learned = continual.value_at_end(run, "reach-w", run.training_window("reach-w"), LAST_K)
    assert learned >= 0.7, (method, learned)


def _updates(run) -> int:
    from launch import checkpoint
    return checkpoint.load_latest(run / "checkpoints")["learner"]["num_updates"]


@pytest.mark.parametrize("method, save_replay", [("replay", False), ("ewc", True)])
@pytest.mark.integration
@pytest.mark.multiproc
def test_continual_run_killed_at_a_boundary_and_mid_stage_resumes_as_if_never_stopped(tmp_path, pm2_runs, method,
                                                                                       save_replay):
    """SIGKILL right after the checkpoint at the stage boundary (1,000), resume, SIGKILL right
    after the one in the middle of stage 2 (1,500), resume: the run finishes with the same
    evaluation and logging steps as the uninterrupted run, keeps reach-e and learns reach-w.
    replay (rehearsal, replay not checkpointed): stage 2 rehearses reach-e from the replay
    written at the end of stage 1; after the mid-stage resume reach-w's buffer refills with 300
    steps first, so exactly 300 updates fewer. ewc with the replay checkpointed: exactly the
    uninterrupted run's updates."""
    run = tmp_path / method
    flags = ["--suite", "pointmass", "--sequence", "PM2", "--steps-per-task", STEPS_PER_TASK, "--backend", "single",
             "--seed", 0, "--set", "run.threads=1", "--method", method, "--set", "run.checkpoint_every=500",
             "--set", f"replay.save_in_checkpoint={str(save_replay).lower()}"]
    proc = start_train(*flags, "--run-dir", run)
    kill_after_checkpoint(proc, run, 1000)
    proc = start_train("--resume", run)
    kill_after_checkpoint(proc, run, 1500)
    assert max(checkpoint_steps(run)) == 1500
    finished = run_train("--resume", run)
    assert finished.returncode == 0, finished.stderr
    assert "resuming" in finished.stdout and "from step 1,500" in finished.stdout

    resumed, uninterrupted = read_run(run), pm2_runs[method]
    assert list(resumed.steps) == list(uninterrupted.steps)  # every evaluation once, none missing
    assert not np.isnan(resumed.success).any()
    assert scalars(run / "tb", "eval/success_mean")[-1][0] == 2 * STEPS_PER_TASK
    assert sorted(set(resumed.episodes.step.tolist())) == sorted(set(uninterrupted.episodes.step.tolist()))
    refill = 0 if save_replay else 300
    assert _updates(run) == _updates(pm2_runs.dirs[method]) - refill == 2 * (STEPS_PER_TASK - 300) - refill
    assert continual.forgetting(resumed, LAST_K).per_task[0] <= 0.2
    reach_w = resumed.success[:, 1]
    assert reach_w[list(resumed.steps).index(STEPS_PER_TASK)] <= 0.1 and reach_w[-1] >= 0.4  # it learned reach-w
    if method == "replay":
        assert (run / "checkpoints" / "rehearsal" / "task-0000.pt").is_file()


@pytest.mark.integration
def test_single_task_reference_mode_writes_one_run_per_task(tmp_path):
    root = tmp_path / "refs"
    result = train_in_process("--suite", "pointmass", "--sequence", "reach-e:400,reach-w,reach-e",
                              "--steps-per-task", 300,
                       "--mode", "single-task", "--backend", "single", "--run-dir", root,
                       "--set", "eval.every=200", "--set", "sac.warmup_steps_per_task=100")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in root.iterdir()) == ["reach-e", "reach-w"]
    ref = read_run(root / "reach-e")
    assert ref.trained_tasks() == {"reach-e"} and ref.schedule[0].end == 400  # its longest stage
    config = yaml.safe_load((root / "reach-e" / "config.yaml").read_text())
    assert config["continual"]["sequence"] == "" and config["env"]["tasks"] == "reach-e"
    assert evallog.read(root / "reach-w" / "evals.jsonl")[-1]["step"] == 300


@pytest.mark.integration
def test_cw10_is_in_v3_names_and_a_short_metaworld_sequence_covers_every_stage(tmp_path):
    """Every CW10 task is a Meta-World v3 env; a short continual run on its first three tasks
    trains each stage and evaluates every task at every stage end (the full CW10 would spend a
    minute on its 11 x 10 evaluation episodes of 500 steps, checking nothing more)."""
    from envs import metaworld_suite
    assert metaworld_suite.SEQUENCES["CW10"] == CW10
    assert set(CW10) <= set(metaworld_suite._env_dict().ALL_V3_ENVIRONMENTS)
    run_dir = tmp_path / "cw3"
    result = train_in_process("--suite", "metaworld", "--sequence", ",".join(CW10[:3]), "--steps-per-task", 30,
                       "--backend", "single", "--run-dir", run_dir, "--set", "eval.goals=1",
                       "--set", "eval.every=1000000", "--set", "sac.warmup_steps_per_task=10",
                       "--set", "sac.batch_size_per_task=8", "--set", "sac.hidden_sizes=[32,32]",
                       "--set", "run.log_every=30")
    assert result.returncode == 0, result.stderr
    run = read_run(run_dir)
    assert run.tasks == tuple(CW10[:3])
    expected = [((n,), 30 * i, 30 * (i + 1)) for i, n in enumerate(CW10[:3])]
    assert [(s.tasks, s.start, s.end) for s in run.schedule] == expected
    assert list(run.steps) == [0, 30, 60, 90]  # the start, then every stage's end
    assert not np.isnan(run.success).any()
    assert all(f"stage {i}/3" in result.stdout for i in range(1, 4))
    config = yaml.safe_load((run_dir / "config.yaml").read_text())  # Continual World's preset applied
    assert config["sac"]["task_input"] is False and config["eval"]["policy"] == "sample"
    assert {r["policy"] for r in evallog.read(run_dir / "evals.jsonl")} == {"sample"}


def test_a_repeated_task_is_scored_against_its_base_tasks_reference_run():
    from metrics.runs import make_run
    run = make_run(["a", "a#2"], [10, 20, 30, 40], [[0.2, 0.0], [0.4, 0.0], [0.0, 0.6], [0.0, 0.8]],
                   [(["a"], 0, 20), (["a#2"], 20, 40)], envs=("a", "a"))  # the log says a#2 runs a
    reference = make_run(["a"], [10, 20], [[0.0], [0.5]], [(["a"], 0, 20)])
    # AUC: a = (0.2 + 0.4) / 2 = 0.3, a#2 = (0.6 + 0.8) / 2 = 0.7; reference AUC = 0.25
    ft = continual.forward_transfer(run, [reference]).per_task
    np.testing.assert_allclose(ft, [(0.3 - 0.25) / 0.75, (0.7 - 0.25) / 0.75])
