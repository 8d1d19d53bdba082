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


def test_a_hidden_goal_zeroes_the_goal_coordinates_and_nothing_else():
    """env.goal_observable=false: the last 3 numbers read 0, as Meta-World's ML benchmarks hide the
    goal; the rest of the observation (the previous frame included), rewards and success are those
    of the same episode with the goal shown; the evaluation's fixed goals are unchanged."""
    shown = make_suite("metaworld", "reach-v3", 0)
    hidden = make_suite("metaworld", "reach-v3", 0, goal_observable=False)
    env_shown, env_hidden = shown.make_env(shown.tasks[0], 7), hidden.make_env(hidden.tasks[0], 7)
    obs_shown, _ = env_shown.reset(options={"goal": 4})
    obs_hidden, _ = env_hidden.reset(options={"goal": 4})
    assert obs_shown[-3:].any() and not obs_hidden[-3:].any()
    np.testing.assert_array_equal(obs_shown[:-3], obs_hidden[:-3])
    action = np.array([0.5, -0.5, 0.2, 0.0], np.float32)
    for _ in range(3):
        a, b = env_shown.step(action), env_hidden.step(action)
        assert not b[0][-3:].any()
        np.testing.assert_array_equal(a[0][:-3], b[0][:-3])
        assert a[1] == b[1] and a[4]["success"] == b[4]["success"]
    assert (env_hidden.observation_space.low[-3:] == 0).all() and (env_hidden.observation_space.high[-3:] == 0).all()


def test_actors_and_the_evaluator_see_the_goal_hidden_when_the_run_says_so():
    """The setting reaches every env a run builds: the actors' (from actor_specs) and the evaluator's."""
    from launch.actors import actor_specs
    from launch.actors.actor import Actor
    from launch.config import build_config
    from launch.evaluation.evaluator import Evaluation

    cfg = build_config("metaworld", flags={"env.tasks": "reach-v3"},
                       overrides=["env.goal_observable=false", "sac.hidden_sizes=[8]", "runtime.backend=single"])
    spec = actor_specs(cfg, None, [0], 0, 1, 0)[0]  # the single backend: one actor, no plan
    chunk = Actor(spec).collect(20)
    assert chunk.obs[:, :-3].any() and not chunk.obs[:, -3:].any() and not chunk.next_obs[:, -3:].any()
    evaluation = Evaluation("metaworld", "reach-v3", 0, cfg.sac, 1, "mean", cfg.env.goal_observable)
    try:
        assert not evaluation.envs[0].reset(options={"goal": 0})[0][-3:].any()
    finally:
        evaluation.close()
