"""--engine rllib: our suites, networks, auxiliary losses, continual strategies and run directory on
RLlib's new API stack (real Ray, real RLlib, 1 remote env runner; kept short)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import scalars, train_in_process

pytest.importorskip("ray.rllib")


def _evals(run: Path) -> dict[int, float]:
    by_step: dict[int, list[float]] = {}
    for line in (run / "evals.jsonl").read_text().splitlines():
        row = json.loads(line)
        by_step.setdefault(row["step"], []).append(row["success"])
    return {step: float(np.mean(v)) for step, v in sorted(by_step.items())}


def _episodes(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "episodes.jsonl").read_text().splitlines()]


def test_rllib_sac_with_our_module_learns_pm4_and_reports(tmp_path):
    run = tmp_path / "sac"
    proc = train_in_process("--engine", "rllib", "--suite", "pointmass", "--steps", 2400, "--eval-every", 800,
                            "--actors", 1, "--run-dir", run, "--set", "sac.warmup_steps_per_task=100",
                            "--set", "sac.batch_size_per_task=32")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RLlib SAC, 1 env runners" in proc.stdout
    curve = _evals(run)
    assert curve[0] <= 0.3 and curve[max(curve)] >= 0.5, curve
    # Training episodes come from the remote env runner's inference-only module: success rises
    # only if the learner's weights reach it.
    episodes = _episodes(run)
    fifth = len(episodes) // 5
    assert np.mean([e["success"] for e in episodes[-fifth:]]) > np.mean([e["success"] for e in episodes[:fifth]]) + 0.3
    summary = json.loads((run / "learners.json").read_text())
    assert summary["updates"] == pytest.approx((summary["env_steps"] - 400) / 4, abs=20)  # our update-to-data ratio
    per_task = summary["task_steps_by_stage"][0]
    assert set(per_task) == {"reach-e", "reach-n", "reach-w", "reach-s"}
    assert max(per_task.values()) - min(per_task.values()) <= 60  # every task its equal share (+- 2 episodes)
    # Side by side with our own loop on the same settings: two groups, told apart by the engine.
    ours = tmp_path / "ours"
    proc = train_in_process("--suite", "pointmass", "--steps", 800, "--eval-every", 800, "--backend", "single",
                            "--run-dir", ours, "--set", "sac.warmup_steps_per_task=100",
                            "--set", "sac.batch_size_per_task=32")
    assert proc.returncode == 0, proc.stderr
    from launch.report import main as report_main
    assert report_main([str(run), str(ours), "--out", str(tmp_path / "report")]) == 0
    text = (tmp_path / "report" / "report.md").read_text()
    assert "run.engine=rllib" in text and "run.engine=polytask" in text


def test_rllib_ppo_runs_two_iterations_resumes_from_its_checkpoint_and_reports(tmp_path):
    run = tmp_path / "ppo"
    ppo = ("--set", "rllib.ppo_batch_size=256", "--set", "rllib.ppo_minibatch_size=64", "--set", "rllib.ppo_epochs=2",
           "--set", "eval.goals=4")
    proc = train_in_process("--engine", "rllib", "--algo", "ppo", "--suite", "pointmass", "--steps", 512,
                            "--eval-every", 256, "--actors", 0, "--run-dir", run, *ppo)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run / "learners.json").read_text())
    assert summary["algo"] == "ppo" and summary["updates"] == 2 and summary["env_steps"] >= 512
    # --resume goes through RLlib's own checkpoint: the iteration count and env steps continue.
    resumed = train_in_process("--resume", run, "--steps", 768)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stdout
    summary = json.loads((run / "learners.json").read_text())
    assert summary["updates"] == 3 and summary["env_steps"] >= 768
    steps = [json.loads(line)["step"] for line in (run / "evals.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and len(set(steps)) * 4 == len(steps)  # no duplicated evaluation rows
    from metrics.runs import read_run
    from metrics.summary import run_summary
    assert read_run(run).config["run"]["engine"] == "rllib" and "final_success" in run_summary(read_run(run))


def _continual_pm2(run: Path, method: str, steps_per_task: int, *settings: str) -> None:
    """A PM2 run on RLlib in this process, sampling in the driver (no remote env runner: faster)."""
    proc = train_in_process("--engine", "rllib", "--suite", "pointmass", "--sequence", "PM2", "--steps-per-task",
                            steps_per_task, "--method", method, "--eval-every", steps_per_task, "--actors", 0,
                            "--run-dir", run, "--set", "sac.warmup_steps_per_task=100",
                            "--set", "sac.batch_size_per_task=32", *settings)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_rllib_continual_pm2_switches_tasks_at_the_boundary_and_ewc_penalizes_stage_two(tmp_path):
    run = tmp_path / "ewc"
    _continual_pm2(run, "ewc", 384, "--set", "run.log_every=64")
    stages = json.loads((run / "learners.json").read_text())["task_steps_by_stage"]
    assert list(stages[0]) == ["reach-e"] and list(stages[1]) == ["reach-w"]
    # One sampling round is 64 env steps (2 envs x 32): the stage ends exactly at step 384.
    for row in _episodes(run):
        assert row["task"] == ("reach-e" if row["step"] <= 384 else "reach-w"), row
    penalty = scalars(run / "tb", "loss/penalty/actor")
    assert penalty and min(step for step, _ in penalty) > 384 and all(v > 0 for _, v in penalty)


def test_rllib_packnet_keeps_the_first_tasks_network_bit_for_bit(tmp_path):
    """PackNet inside RLlib's learner: after stage 2, task 1 is evaluated with the weights stage 1
    kept (masked gradients, restored weights), so its evaluation repeats exactly."""
    run = tmp_path / "packnet"
    _continual_pm2(run, "packnet", 256, "--set", "continual.packnet_retrain_steps=10")
    rows = [json.loads(line) for line in (run / "evals.jsonl").read_text().splitlines()]
    first = [(r["step"], r["return"]) for r in rows if r["task"] == "reach-e"]
    second = [(r["step"], r["return"]) for r in rows if r["task"] == "reach-w"]
    end_of_stage_1 = [ret for step, ret in first if 256 <= step < 512][-1]
    assert first[-1][1] == end_of_stage_1 and first[-1][0] >= 512
    assert second[-1][1] != [ret for step, ret in second if 256 <= step < 512][-1]  # stage 2 did train


@pytest.mark.parametrize("trunk, head", [("mlp", "hyper"), ("care", "multi"), ("moore", "multi")])
def test_sac_module_emits_what_rllibs_sac_learner_reads_for_every_trunk_and_head(trunk, head):
    import gymnasium as gym
    from ray.rllib.core.columns import Columns

    from agents.auxiliary import AuxConfig
    from agents.sac.config import SACConfig
    from integrations.rllib.modules import SACModule
    from launch.overrides import to_dict
    T, obs_dim, act_dim, B = 3, 5, 2, 8
    space = gym.spaces.Box(-np.inf, np.inf, (obs_dim + T,), np.float32)
    actions = gym.spaces.Box(-1.0, 1.0, (act_dim,), np.float32)
    config = {"sac": to_dict(SACConfig(hidden_sizes=(16, 16), trunk=trunk, head=head, encoder="mlp",
                                       encoder_sizes=(16,))),
              "aux": to_dict(AuxConfig(dynamics=1.0)), "num_tasks": T, "seed": 0}
    learner_module = SACModule(observation_space=space, action_space=actions, inference_only=False,
                               model_config=config)
    learner_module.make_target_networks()
    task = torch.arange(B) % T
    obs = torch.cat([torch.randn(B, obs_dim), torch.nn.functional.one_hot(task, T).float()], 1)
    out = learner_module.forward_train({Columns.OBS: obs, Columns.NEXT_OBS: obs, Columns.ACTIONS: torch.zeros(B, 2)})
    for key in ("qf_preds", "qf_twin_preds", "logp_resampled", "logp_next_resampled", "q_curr", "q_target_next"):
        assert out[key].shape == (B,), key
    assert out[Columns.ACTION_DIST_INPUTS].shape == out["action_dist_inputs_next"].shape == (B, 2 * act_dim)
    out["q_curr"].sum().backward()  # the straight-through pass: reaches the actor, never the critic
    assert all(p.grad is None for p in learner_module.critic.parameters())
    assert any(p.grad is not None for p in learner_module.actor.own_parameters())
    runner_module = SACModule(observation_space=space, action_space=actions, inference_only=True, model_config=config)
    runner_module.set_state(learner_module.get_state(inference_only=True))
    assert set(runner_module.state_dict()) == set(learner_module.get_state(inference_only=True))
    assert torch.equal(runner_module.forward_inference({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS],
                       learner_module.forward_inference({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS])


@pytest.fixture(scope="module")
def local_algo(tmp_path_factory):
    """An RLlib SAC algorithm with our module and learner, sampling in the driver (no remote
    env runners), with the reward-prediction auxiliary loss on."""
    import os

    import ray

    from envs import make_suite
    from integrations.rllib.algorithm import algorithm_config, build_algo
    from launch.config import build_config
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    temp = tmp_path_factory.mktemp("ray")
    ray.init(num_cpus=1, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
             _temp_dir=str(temp), configure_logging=False)
    cfg = build_config("pointmass", None, {"run.engine": "rllib"}, ["aux.reward=1.0", "sac.warmup_steps_per_task=32"])
    suite = make_suite("pointmass", cfg.env.tasks, 0)
    algo = build_algo(algorithm_config(cfg, suite, [0, 1, 2, 3], [0, 0, 0, 0]).env_runners(num_env_runners=0), temp)
    yield algo
    algo.stop()
    ray.shutdown()


def test_rllib_learner_trains_the_auxiliary_head_and_env_runner_gets_the_policy(local_algo):
    learner = local_algo.learner_group._learner
    module = learner.module["default_policy"]
    head_before = [p.detach().clone() for p in module.aux.parameters()]
    critic_before = [p.detach().clone() for p in module.critic.parameters()]
    for _ in range(3):
        result = local_algo.train()
    assert result["learners"]["default_policy"]["num_module_steps_trained_lifetime"] > 0
    assert "loss/aux/reward" in result["learners"]["default_policy"]
    # SACTorchLearner backpropagates only its stored losses: the head moves only because our
    # learner added the auxiliary loss to the stored critic loss and the head to its optimizer.
    assert all(not torch.equal(a, p) for a, p in zip(head_before, module.aux.parameters()))
    assert any(not torch.equal(a, p) for a, p in zip(critic_before, module.critic.parameters()))
    # The env runner's module is inference-only (the policy alone) and holds the learner's weights.
    runner_module = local_algo.env_runner.module
    assert not hasattr(runner_module, "critic") and not hasattr(runner_module, "aux")
    runner_state = runner_module.get_state()
    learner_state = module.get_state(inference_only=True)
    assert set(runner_state) == set(learner_state) and all(k.startswith("actor.") for k in runner_state)
    assert all(np.array_equal(runner_state[k], learner_state[k]) for k in runner_state)


def test_rllib_policy_picks_its_per_task_head_by_the_one_hot(local_algo):
    module = local_algo.learner_group._learner.module["default_policy"]
    state = torch.tensor([[0.1, -0.2]])
    outputs = []
    for task in range(4):
        flat = torch.cat([state, torch.nn.functional.one_hot(torch.tensor([task]), 4).float()], dim=1)
        out = module.forward_inference({"obs": flat})["action_dist_inputs"]
        mean, log_std = module.actor(state, torch.tensor([task]))
        assert torch.allclose(out, torch.cat([mean, log_std], -1))  # our actor on (obs, task id)
        outputs.append(out)
    assert all(not torch.allclose(outputs[0], o) for o in outputs[1:])  # a head per task


@pytest.mark.parametrize("args, message", [
    (("--engine", "nosuch"), "unknown engine 'nosuch'"),
    (("--engine", "rllib", "--algo", "dqn"), "unknown RLlib algorithm 'dqn'"),
    (("--algo", "ppo"), "--algo chooses RLlib's algorithm: it needs --engine rllib"),
    (("--engine", "rllib", "--balancer", "pcgrad"), "--engine rllib does not support --balancer pcgrad"),
    (("--engine", "rllib", "--backend", "ray"), "--backend and --mode single-task do not apply"),
    (("--engine", "rllib", "--sequence", "PM2", "--method", "si"), "continual method si"),
    (("--engine", "rllib", "--algo", "ppo", "--set", "aux.reward=1"), "auxiliary losses with --algo ppo"),
    (("--engine", "rllib", "--set", "sac.compile=default"), "sac.compile and replay.device=learner"),
    (("--engine", "rllib", "--sequence", "reach-e:100,reach-w:100", "--set", "rllib.envs_per_runner=3",
      "--actors", 2),
     "every stage's length must be a multiple of the env steps RLlib samples at once (3 envs x 2 env runners"),
])
def test_unsupported_rllib_settings_are_one_line_and_exit_2(tmp_path, args, message):
    run = tmp_path / "run"
    steps = () if "--sequence" in args else ("--steps", 100)
    proc = train_in_process("--suite", "pointmass", *steps, "--run-dir", run, *args)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not run.exists()
