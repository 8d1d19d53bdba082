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


@pytest.mark.multiproc
@pytest.mark.integration
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


@pytest.mark.multiproc
@pytest.mark.integration
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


@pytest.mark.multiproc
@pytest.mark.integration
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


@pytest.mark.multiproc
@pytest.mark.integration
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
    from launch.config.overrides import to_dict
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


@pytest.mark.multiproc
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
    # learner added the auxiliary loss to a stored loss (here the actor's, policy_loss: no shared
    # encoder, so the auxiliary task trains the actor's trunk) and the head to that optimizer.
    # The exact gradients, for both representations: test_rllib_auxiliary_losses_reach_... below.
    assert all(not torch.equal(a, p) for a, p in zip(head_before, module.aux.parameters()))
    assert any(not torch.equal(a, p) for a, p in zip(critic_before, module.critic.parameters()))
    # The env runner's module is inference-only (the policy alone) and holds the learner's weights.
    runner_module = local_algo.env_runner.module
    assert not hasattr(runner_module, "critic") and not hasattr(runner_module, "aux")
    runner_state = runner_module.get_state()
    learner_state = module.get_state(inference_only=True)
    assert set(runner_state) == set(learner_state) and all(k.startswith("actor.") for k in runner_state)
    assert all(np.array_equal(runner_state[k], learner_state[k]) for k in runner_state)


@pytest.mark.multiproc
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


# -- RLlib's SAC update on a tiny batch: our RLlibSACLearner as RLlib builds it, no Ray, no env runner ----
# The update is TorchLearner._uncompiled_update's: forward_train -> compute_losses ->
# compute_gradients (SACTorchLearner's: one backward per stored loss and optimizer) ->
# apply_gradients; `_gradients` runs its first three steps, `Learner.update` all of it.

MODULE = "default_policy"


def _learner(*settings: str, flags: dict | None = None):
    """Our RLlibSACLearner built by RLlib (AlgorithmConfig.build_learner) for a pointmass config with
    small networks; RLlib seeds torch with the run seed before building the module."""
    import gymnasium as gym

    from envs import make_suite
    from integrations.rllib.algorithm import algorithm_config
    from launch.config import build_config
    cfg = build_config("pointmass", None, {"run.engine": "rllib", **(flags or {})},
                       ["sac.hidden_sizes=[16,16]", "aux.hidden=16", *settings])
    suite = make_suite("pointmass", cfg.env.tasks, 0)
    T = len(suite.tasks)
    task_stage = list(range(T)) if cfg.continual.sequence else [0] * T
    config = algorithm_config(cfg, suite, list(range(T)), task_stage)
    space = gym.spaces.Box(-np.inf, np.inf, (suite.obs_dim + T,), np.float32)
    actions = gym.spaces.Box(-1.0, 1.0, (suite.action_dim,), np.float32)
    return config.build_learner(spaces={MODULE: (space, actions)})


def _batch(learner, size: int = 16, seed: int = 0) -> dict:
    """A replay batch as RLlib's SAC learner reads it, {module: columns}, every task in it."""
    from ray.rllib.core.columns import Columns
    module = learner.module[MODULE].unwrapped()
    T, g = module.num_tasks, torch.Generator().manual_seed(seed)
    d, a = module.observation_space.shape[0] - T, module.action_space.shape[0]
    one_hot = torch.nn.functional.one_hot(torch.arange(size) % T, T).float()
    return {MODULE: {Columns.OBS: torch.cat([torch.randn(size, d, generator=g), one_hot], 1),
                     Columns.NEXT_OBS: torch.cat([torch.randn(size, d, generator=g), one_hot], 1),
                     Columns.ACTIONS: torch.rand(size, a, generator=g) * 2 - 1,
                     Columns.REWARDS: torch.randn(size, generator=g),
                     Columns.TERMINATEDS: torch.zeros(size, dtype=torch.bool),
                     "n_step": torch.ones(size), "weights": torch.ones(size)}}


def _update(learner, batch: dict) -> None:
    """One whole RLlib update (Learner.update) on the batch."""
    from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch
    columns = {k: v.numpy() for k, v in batch[MODULE].items()}
    learner.update(batch=MultiAgentBatch({MODULE: SampleBatch(columns)}, env_steps=len(columns["obs"])))


def _gradients(learner, batch: dict) -> dict:
    """{parameter: gradient} as RLlib's SAC learner computes them for the batch (None: zeros),
    with torch's seed fixed so that the actor's samples are the same in every call."""
    torch.manual_seed(0)
    fwd_out = learner.module.forward_train(batch)
    grads = learner.compute_gradients(learner.compute_losses(fwd_out=fwd_out, batch=batch))
    return {p: torch.zeros_like(p) if g is None else g.detach().clone() for p, g in grads.items()}


def _logged(learner, name: str) -> float:
    return float(learner.metrics.peek((MODULE, f"loss/{name}")))


def _optimizer_params(learner, name: str) -> set[int]:
    return {id(p) for group in learner.get_optimizer(MODULE, name).param_groups for p in group["params"]}


@pytest.mark.parametrize("on", ["encoder", "actor"])
def test_rllib_auxiliary_losses_reach_their_representation_scaled_by_their_weights(on):
    """aux.reward=0.5 and aux.dynamics=3 on a shared encoder (their terms belong in the stored
    critic loss, qf_loss) or on the actor's trunk (in policy_loss): RLlib's gradients are the SAC
    loss's plus, exactly, the gradient of the weighted losses written by hand, on the heads and on
    the representation, in that network's optimizer; the other optimizer's gradients are the SAC
    loss's alone; the logged terms are the weighted losses."""
    import torch.nn.functional as F
    from ray.rllib.core.columns import Columns
    encoder = ("sac.encoder=mlp", "sac.encoder_sizes=[16]") if on == "encoder" else ()
    learner = _learner("aux.reward=0.5", "aux.dynamics=3.0", *encoder)
    module = learner.module[MODULE].unwrapped()
    tasks = {task.name: task for task in module.aux_tasks}
    assert set(tasks) == {"reward", "dynamics"} and tasks["reward"].rep.on == on
    batch = _batch(learner)
    with_aux = _gradients(learner, batch)
    logged = {name: _logged(learner, f"aux/{name}") for name in tasks}
    for task in tasks.values():
        task.weight = 0.0  # the same update with the auxiliary terms zeroed: the SAC loss's gradient
    sac_only = _gradients(learner, batch)
    # By hand: z = phi(s) of the representation, the reward MSE and the latent model's 0.5 x MSE.
    obs, task_ids = module.split(batch[MODULE][Columns.OBS])
    next_obs = module.split(batch[MODULE][Columns.NEXT_OBS])[0]
    if on == "encoder":
        representation = list(module.critic.encoder.parameters())
        z, z_next = module.critic.encoder(obs, task_ids), module.critic.encoder(next_obs, task_ids)
    else:
        representation = list(module.actor.net.trunk.parameters())
        z, z_next = (module.actor.net.features(x, task_ids)[0] for x in (obs, next_obs))
    za = torch.cat([z, batch[MODULE][Columns.ACTIONS]], -1)
    losses = {"reward": F.mse_loss(tasks["reward"].head(za).squeeze(-1), batch[MODULE][Columns.REWARDS]),
              "dynamics": 0.5 * F.mse_loss(tasks["dynamics"].head(za), z_next.detach())}
    weights = {"reward": 0.5, "dynamics": 3.0}
    for name in tasks:
        assert logged[name] == pytest.approx(weights[name] * losses[name].item(), rel=1e-5), name
    heads = list(module.aux.parameters())
    own, other = ("qf", "policy") if on == "encoder" else ("policy", "qf")
    assert {id(p) for p in representation + heads} <= _optimizer_params(learner, own)
    expected = torch.autograd.grad(sum(weights[n] * losses[n] for n in losses), representation + heads)
    for p, e in zip(representation + heads, expected):
        assert torch.allclose(with_aux[p] - sac_only[p], e, rtol=1e-4, atol=1e-6)
    assert max(e.abs().max() for e in expected[:len(representation)]) > 1e-3  # the representation is trained
    other_params = [p for p in with_aux if id(p) in _optimizer_params(learner, other)]
    assert other_params and all(torch.equal(with_aux[p], sac_only[p]) for p in other_params)


def _context(stage: int):
    from continual.strategies import TaskContext
    return TaskContext(stage, 2, (stage,), tuple(range(stage)), 100, None, np.random.default_rng(0))


def test_rllib_continual_penalty_is_backpropagated_into_the_actor():
    """L2 on PM2, after stage 1 and one update: the actor's gradient RLlib computes is the SAC
    loss's plus the penalty's, 2 coef (theta - theta*) by hand, and the logged penalty is
    coef * ||theta - theta*||^2; the critic's gradients do not change."""
    learner = _learner("continual.coef=100", flags={"continual.sequence": "PM2", "continual.method": "l2"})
    strategy = learner.strategy
    strategy.end_task(_context(0))  # anchors the actor's shared weights (L2: importance 1)
    batch = _batch(learner)
    _update(learner, batch)         # one RLlib update moves them off the anchor
    with_penalty = _gradients(learner, batch)
    shared, anchor = [p for _, p in strategy.shared("actor")], strategy.anchor["actor"]
    by_hand = [2 * 100 * (p - a).detach() for p, a in zip(shared, anchor)]
    assert _logged(learner, "penalty/actor") == pytest.approx(
        100 * sum((p - a).pow(2).sum().item() for p, a in zip(shared, anchor)), rel=1e-4)
    strategy.anchor = {}            # no anchor, no penalty: the SAC loss's gradient alone
    sac_only = _gradients(learner, batch)
    assert max(g.abs().max() for g in by_hand) > 1e-2
    for p, g in zip(shared, by_hand):
        assert torch.allclose(with_penalty[p] - sac_only[p], g, rtol=1e-4, atol=1e-6)
    critic = learner.module[MODULE].unwrapped().critic.parameters()
    assert all(torch.equal(with_penalty[p], sac_only[p]) for p in critic)


def test_rllib_packnet_zeroes_the_frozen_weights_gradients_before_the_optimizer_steps():
    """PackNet on PM2 in stage 2: the gradients the actor's optimizer steps with are zero on every
    weight stage 1 kept (before Adam, not only repaired after it), and not zero on the free ones."""
    learner = _learner("continual.packnet_retrain_steps=0",
                       flags={"continual.sequence": "PM2", "continual.method": "packnet"})
    strategy, batch = learner.strategy, _batch(learner)
    strategy.start_task(_context(0))
    _update(learner, batch)
    strategy.end_task(_context(0))  # prunes: stage 1 keeps (and freezes) part of the actor's trunk
    strategy.start_task(_context(1))
    shared, trainable = [p for _, p in strategy.shared("actor")], strategy.trainable["actor"]
    assert any(t.any() for t in trainable) and any((~t).any() for t in trainable)
    stepped_with = {}

    def record(optimizer, args, kwargs):
        stepped_with.update({p: p.grad.clone() for p in shared if p.grad is not None})

    before = [p.detach().clone() for p in shared]
    handle = learner.get_optimizer(MODULE, "policy").register_step_pre_hook(record)
    try:
        _update(learner, _batch(learner, seed=1))
    finally:
        handle.remove()
    assert len(stepped_with) == len(shared)
    for p, t, b in zip(shared, trainable, before):
        assert torch.count_nonzero(stepped_with[p][~t]) == 0
        assert torch.equal(p.detach()[~t], b[~t])
    assert any(torch.count_nonzero(stepped_with[p][t]) for p, t in zip(shared, trainable))


def test_rllib_checkpoint_keeps_pvns_action_draws(tmp_path):
    """ProtoValues draws its target's actions from its own generator: an RLlib checkpoint of the
    learner (module state) holds it, so a restore repeats the draws; env runners never get it."""
    from integrations.rllib.modules import AUX_DRAWS
    learner = _learner("aux.pvn=1", "aux.pvn_tasks=4")
    module = learner.module[MODULE].unwrapped()
    (pvn,) = module.aux_tasks
    _update(learner, _batch(learner))  # the update draws: the stream is past its seed
    learner.save_to_path(tmp_path / "learner")
    drawn = torch.rand(6, generator=pvn.draws)
    learner.restore_from_path(tmp_path / "learner")
    assert torch.equal(torch.rand(6, generator=pvn.draws), drawn)
    assert AUX_DRAWS in module.get_state() and AUX_DRAWS not in module.get_state(inference_only=True)


@pytest.mark.parametrize("tasks, runners, updates, env_steps", [
    ("PM4", 1, 16, 64),   # 4 envs x 16 steps per round, 16 updates: 0.25 = 1 per 4 tasks, exact
    ("PM8", 3, 24, 189),  # 3 envs x 21 steps x 3 runners: 23.625 wanted, RLlib rounds to 24 (+1.6%)
])
def test_rllib_update_ratio_is_ours_up_to_rllibs_integer_rounding(tasks, runners, updates, env_steps):
    """RLlib's own calculate_rr_weights on our AlgorithmConfig: updates per sampling round =
    training_intensity / native ratio, rounded to an integer (the docstring of
    integrations/rllib/algorithm.py: exact when the wanted updates per round are an integer)."""
    from ray.rllib.algorithms.dqn.dqn import calculate_rr_weights

    from envs import make_suite
    from integrations.rllib.algorithm import algorithm_config
    from launch.config import build_config
    cfg = build_config("pointmass", None, {"run.engine": "rllib", "runtime.actors": runners}, [f"env.tasks={tasks}"])
    suite = make_suite("pointmass", cfg.env.tasks, 0)
    T = len(suite.tasks)
    config = algorithm_config(cfg, suite, list(range(T)), [0] * T)
    round_steps = config.rollout_fragment_length * config.num_envs_per_env_runner * max(config.num_env_runners, 1)
    assert round_steps == env_steps
    samples, trained = calculate_rr_weights(config)
    assert (samples, trained) == (1, updates)
    wanted = cfg.sac.updates_per_round / (T * cfg.env.envs_per_task)  # ours: per env step
    native = config.total_train_batch_size / (env_steps / max(runners, 1) * (runners + 1))
    assert config.training_intensity / native == pytest.approx(wanted * env_steps)  # before RLlib's rounding
    assert updates / env_steps == pytest.approx(wanted, rel=0.02) and (updates / env_steps == wanted) == (T == 4)


@pytest.mark.parametrize("args, message", [
    (("--engine", "nosuch"), "unknown engine 'nosuch'"),
    (("--engine", "rllib", "--algo", "dqn"), "unknown RLlib algorithm 'dqn'"),
    (("--algo", "ppo"), "--algo chooses RLlib's algorithm: it needs --engine rllib"),
    (("--engine", "rllib", "--balancer", "pcgrad"), "--engine rllib does not support --balancer pcgrad"),
    (("--engine", "rllib", "--backend", "ray"), "--backend and --mode single-task do not apply"),
    (("--engine", "rllib", "--sequence", "PM2", "--method", "si"), "continual method si"),
    (("--engine", "rllib", "--algo", "ppo", "--set", "aux.reward=1"), "auxiliary losses with --algo ppo"),
    (("--engine", "rllib", "--set", "sac.compile=default"), "sac.compile and replay.device=learner"),
    (("--engine", "rllib", "--set", "sac.encoder=mlp", "--set", "sac.encoder_tau=0.05"), "sac.encoder_tau"),
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


def test_rllib_env_runners_build_envs_with_the_goal_hidden_when_the_run_says_so():
    """env.goal_observable=false reaches RLlib's env creator through the algorithm's env_config."""
    from ray.rllib.env.env_context import EnvContext

    from envs import make_suite
    from integrations.rllib import env as rllib_env
    from integrations.rllib.algorithm import algorithm_config
    from launch.config import build_config

    cfg = build_config("metaworld", None, {"run.engine": "rllib", "env.tasks": "reach-v3"},
                       ["env.goal_observable=false"])
    suite = make_suite("metaworld", "reach-v3", 0, goal_observable=False)
    config = algorithm_config(cfg, suite, [0], [0])
    env = rllib_env.make_env(EnvContext(config.env_config, worker_index=1, num_workers=1))
    obs, _ = env.reset(seed=0)
    assert obs.shape == (39 + 1,) and obs[:36].any() and not obs[36:39].any() and obs[39] == 1.0
