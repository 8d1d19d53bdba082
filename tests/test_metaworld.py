"""Real Meta-World v3: MT10 builds, the goal cache is used and exact, a short run logs all tasks."""

import pickle

import metaworld
import numpy as np
import pytest

from envs import make_suite, metaworld_suite
from metrics import evallog
from tests.conftest import scalars, train_in_process

MT10 = ["reach-v3", "push-v3", "pick-place-v3", "door-open-v3", "drawer-open-v3", "drawer-close-v3",
        "button-press-topdown-v3", "peg-insert-side-v3", "window-open-v3", "window-close-v3"]


@pytest.mark.integration
def test_mt10_builds_with_metaworld_goals_and_cache(monkeypatch):
    suite = make_suite("metaworld", "MT10", seed=3)
    assert suite.task_names == MT10 and suite.obs_dim == 39 and suite.action_dim == 4
    # Goals are exactly Meta-World's own MT1(task, seed) goals.
    for name in ("reach-v3", "window-close-v3"):
        expected = np.stack([pickle.loads(t.data)["rand_vec"] for t in metaworld.MT1(name, seed=3).train_tasks])
        np.testing.assert_array_equal(metaworld_suite.goal_table(name, 3), expected)
    first = {name: metaworld_suite.goal_table(name, 3) for name in MT10}
    # A second build must not generate goals: make generation impossible and build again.
    monkeypatch.setattr(metaworld, "MT1", lambda *a, **k: pytest.fail("goal cache not used"))
    again = make_suite("metaworld", "MT10", seed=3)
    assert again.task_names == MT10
    for name in MT10:
        np.testing.assert_array_equal(metaworld_suite.goal_table(name, 3), first[name])
    # Another seed is another goal table (not served from seed 3's cache).
    monkeypatch.undo()
    assert not np.array_equal(metaworld_suite.goal_table("reach-v3", 4), first["reach-v3"])


def test_mt25_and_mt50_presets_are_metaworlds_v3_lists():
    """MT25/MT50 resolve to Meta-World's own v3 lists (their goal tables are cached per task
    exactly as MT10's above; generating MT50's takes ~35 s, so this test does not)."""
    import metaworld.env_dict as env_dict
    presets = metaworld_suite.presets()
    assert presets["MT50"] == list(env_dict.MT50_V3) and len(set(presets["MT50"])) == 50
    assert presets["MT25"] == list(env_dict.MT25_V3) and len(set(presets["MT25"])) == 25
    assert set(presets["MT50"]) <= set(env_dict.ALL_V3_ENVIRONMENTS)


def test_env_seeding_goals_and_success_flag():
    suite = make_suite("metaworld", "reach-v3", seed=0)
    env_a, env_b = suite.make_env(suite.tasks[0], 7), suite.make_env(suite.tasks[0], 7)
    obs_a, info_a = env_a.reset(options={"goal": 4})
    obs_b, _ = env_b.reset(options={"goal": 4})
    np.testing.assert_array_equal(obs_a, obs_b)
    np.testing.assert_allclose(obs_a[-3:], metaworld_suite.goal_table("reach-v3", 0)[4][3:], rtol=1e-6)
    assert info_a["goal"] == 4
    # Goal bounds in our observation space are real (Meta-World's own are [0, 0]).
    assert (env_a.observation_space.high[-3:] > env_a.observation_space.low[-3:]).all()
    action = np.array([0.5, -0.5, 0.2, 0.0], np.float32)
    for _ in range(3):
        step_a, step_b = env_a.step(action), env_b.step(action)
        np.testing.assert_array_equal(step_a[0], step_b[0])
    assert "success" in step_a[4]
    # Random goals at reset are seeded too.
    assert env_a.reset()[1]["goal"] == env_b.reset()[1]["goal"]


@pytest.mark.integration
def test_mt10_short_training_run_logs_every_task(tmp_path):
    run = tmp_path / "run"
    proc = train_in_process("--suite", "metaworld", "--backend", "single", "--tasks", "MT10", "--steps", 300,
                            "--eval-every", 300, "--seed", 3,  # seed 3: the goal tables cached above
                            "--run-dir", run, "--set", "eval.goals=1", "--set", "sac.hidden_sizes=[32,32]",
                            "--set", "sac.warmup_steps_per_task=10", "--set", "sac.batch_size_per_task=8",
                            "--set", "run.log_every=100")
    assert proc.returncode == 0, proc.stderr
    rows = evallog.read(run / "evals.jsonl")
    for step in (0, 300):
        assert sorted(r["task"] for r in rows if r["step"] == step) == sorted(MT10)
    for r in rows:
        assert set(r) >= {"step", "task", "success", "return"} and 0 <= r["success"] <= 1
    assert list((run / "tb").glob("events.out.tfevents.*"))
    assert [s for s, _ in scalars(run / "tb", "eval/success/pick-place-v3")] == [0, 300]
    assert scalars(run / "tb", "loss/qf1")  # updates happened and were logged
    assert scalars(run / "tb", "perf/env_steps_per_s")
