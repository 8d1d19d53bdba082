"""Recurrent SAC (sac.memory; agents/recurrent.py, agents/sac/recurrent.py): the memory read step by
step while acting equals the memory read over the whole episode in training; actors and the
evaluator reset it at each episode's start; padding and burn-in steps carry no loss."""

import numpy as np
import pytest
import torch

from agents.recurrent import EnvMemories, RecurrentActor
from agents.sac import SACConfig, make_learner
from agents.sequence_replay import SequenceReplay

CPU = torch.device("cpu")


def _cfg(cell="gru", **kw):
    return SACConfig(**{"hidden_sizes": (32, 32), "memory": cell, "memory_hidden": 16, "batch_size_per_task": 8,
                        "task_input": False, "head": "single", **kw})


@pytest.mark.parametrize("cell,trunk", [("gru", "mlp"), ("lstm", "mlp"), ("gru", "hyper"), ("lstm", "hyper")])
def test_acting_step_by_step_equals_reading_the_episode_at_once(cell, trunk):
    """EnvMemories over an episode (reset at its start, fed each previous action and reward) gives the
    actions the sequence forward gives for (o_t, a_{t-1}, r_{t-1}) with zeros first: the actors'
    and the evaluator's memories are the learner's (generated memories too: sac.trunk=hyper)."""
    torch.manual_seed(0)
    actor = RecurrentActor(3, 2, 1, _cfg(cell, trunk=trunk)).requires_grad_(False)
    obs, reward = torch.randn(1, 12, 3), torch.randn(1, 12)
    memories = EnvMemories(actor, 1, 2)
    memories.start(torch.tensor([True]))
    actions = []
    for t in range(12):
        actions.append(memories.act(obs[:, t], torch.zeros(1, dtype=torch.long), slice(None), deterministic=True))
        memories.rewarded(slice(None), reward[:, t])
    actions = torch.stack(actions, dim=1)
    prev_action = torch.cat([torch.zeros(1, 1, 2), actions[:, :-1]], dim=1)
    prev_reward = torch.cat([torch.zeros(1, 1), reward[:, :-1]], dim=1)
    mean, _ = actor(obs, prev_action, prev_reward, torch.zeros(1, dtype=torch.long))
    torch.testing.assert_close(actions[0], torch.tanh(mean[0]), rtol=1e-5, atol=1e-6)
    # a new episode forgets: the same first observation gives the first action again
    memories.start(torch.tensor([True]))
    again = memories.act(obs[:, 0], torch.zeros(1, dtype=torch.long), slice(None), deterministic=True)
    torch.testing.assert_close(again, actions[:, 0])


def _replay(seed=0):
    rng = np.random.default_rng(seed)
    replay = SequenceReplay(2, 1000, 3, 2, 10)
    n, length = 2 * 6 * 8, 8  # 2 tasks x 6 episodes of 8 steps
    task = np.repeat([0, 1], n // 2)
    step = np.tile(np.arange(length), n // length)
    replay.add(task, rng.normal(size=(n, 3)).astype(np.float32), rng.uniform(-1, 1, (n, 2)).astype(np.float32),
               rng.normal(size=n).astype(np.float32), rng.normal(size=(n, 3)).astype(np.float32),
               np.zeros(n, np.float32), stream=task, first=step == 0)
    return replay


def _update(batch, cell="gru", **kw):
    torch.manual_seed(0)
    learner = make_learner(_cfg(cell, **kw), 3, 2, 2, CPU)
    torch.manual_seed(1)
    logged = learner.update(batch)
    grads = [p.grad.clone() for net in ("critic", "actor") for p in learner.params[net] if p.grad is not None]
    return {k: float(v) for k, v in logged.items()}, grads


def test_padding_and_burn_in_carry_no_loss():
    """Changing what padded steps hold changes no loss and no gradient; changing a real step does;
    burn-in steps weigh nothing."""
    batch = _replay().sample(8, np.random.default_rng(0))
    assert 0 < float(batch.mask.mean()) < 1
    pad = ~batch.mask.bool()
    moved = batch._replace(reward=torch.where(pad, batch.reward + 100.0, batch.reward),
                           next_obs=torch.where(pad[..., None], batch.next_obs + 5.0, batch.next_obs))
    base, base_grads = _update(batch)
    same, same_grads = _update(moved)
    assert base == same and all(torch.equal(a, b) for a, b in zip(base_grads, same_grads))
    real = batch.mask.bool() & (torch.arange(batch.mask.shape[1]) == 1)
    changed, _ = _update(batch._replace(reward=torch.where(real, batch.reward + 100.0, batch.reward)))
    assert changed["loss/qf1"] != base["loss/qf1"]
    # burn-in: the first 2 steps of a window that starts mid-episode weigh nothing in any loss (they
    # still feed the memories); a window from its episode's first step has the exact zero state and
    # keeps them, else an episode's first steps would never be learned from
    learner = make_learner(_cfg(memory_burn_in=2), 3, 2, 2, CPU)
    plain = make_learner(_cfg(), 3, 2, 2, CPU).weights(batch)
    weights = learner.weights(batch)
    mid, first = ~batch.first.bool(), batch.first.bool()
    assert mid.any() and first.any()
    assert (weights[mid, :2] == 0).all() and (weights[first, :2] > 0).all()
    assert ((weights[:, 2:] > 0) == (plain[:, 2:] > 0)).all()
    for task in (0, 1):  # each task's weights average 1 over its rows: its loss is its masked mean
        assert float(weights[batch.task == task].mean()) == pytest.approx(1.0)
    burned, _ = _update(batch, memory_burn_in=2)
    assert burned["loss/qf1"] != base["loss/qf1"]


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_an_update_trains_both_memories_and_keeps_the_targets_apart(cell):
    learner = make_learner(_cfg(cell), 3, 2, 2, CPU)
    before = {k: v.clone() for k, v in learner.critic.state_dict().items()}
    target_before = {k: v.clone() for k, v in learner.critic_target.state_dict().items()}
    actor_before = {k: v.clone() for k, v in learner.actor.state_dict().items()}
    logged = learner.update(_replay().sample(8, np.random.default_rng(1)))
    assert all(np.isfinite(float(v)) for v in logged.values())
    def moved(now, then, prefix):
        return any(not torch.equal(now[k], then[k]) for k in now if k.startswith(prefix))
    assert moved(learner.critic.state_dict(), before, "memory.rnn")
    assert moved(learner.actor.state_dict(), actor_before, "memory.rnn")
    # the target critic (memory included) follows by Polyak averaging: moved, but not onto the critic
    target = learner.critic_target.state_dict()
    assert moved(target, target_before, "memory.rnn")
    assert not torch.equal(target["memory.rnn.weight_hh_l0"], learner.critic.state_dict()["memory.rnn.weight_hh_l0"])


def test_an_evaluation_of_a_recurrent_policy_replays_step_by_step_through_the_network():
    """launch/evaluation/evaluator.py's Evaluation of a GRU policy on pointmass (2 goals: the memory is reset
    between them) takes exactly the actions the network gives when it reads each whole episode at
    once: (o_t, a_{t-1}, r_{t-1}) from zeros."""
    from agents import seeding
    from envs import make_suite
    from launch.evaluation.evaluator import Evaluation

    cfg = _cfg()
    evaluation = Evaluation("pointmass", "reach-e", 0, cfg, 2, "mean")
    torch.manual_seed(3)
    weights = torch.nn.utils.parameters_to_vector(RecurrentActor(2, 2, 1, cfg).parameters())
    taken = []
    env = evaluation.envs[0]
    step = env.step
    env.step = lambda action: (taken.append(np.array(action)), step(action))[1]  # record what the protocol does
    row = evaluation(0, 1, weights)[0]
    assert row["episodes"] == 2 and len(taken) == 60

    actor = RecurrentActor(2, 2, 1, cfg).requires_grad_(False)
    torch.nn.utils.vector_to_parameters(weights, actor.parameters())
    replay_env = make_suite("pointmass", "reach-e", 0).make_env(make_suite("pointmass", "reach-e", 0).tasks[0], 0)
    seed = seeding.seed_for(0, "eval")
    for goal, actions in enumerate((taken[:30], taken[30:])):
        obs = [replay_env.reset(seed=seed if goal == 0 else None, options={"goal": goal})[0]]
        rewards = []
        for action in actions:
            o, r, *_ = replay_env.step(action)
            obs.append(o)
            rewards.append(r)
        obs_t = torch.tensor(np.array(obs[:-1]))[None]
        prev_action = torch.tensor(np.array([np.zeros(2, np.float32), *actions[:-1]]))[None]
        prev_reward = torch.tensor([0.0, *rewards[:-1]], dtype=torch.float32)[None]
        mean, _ = actor(obs_t, prev_action, prev_reward, torch.zeros(1, dtype=torch.long))
        mean = mean[0]
        np.testing.assert_allclose(np.array(actions), torch.tanh(mean).numpy(), rtol=1e-5, atol=1e-6)


def test_a_sampled_evaluation_of_a_recurrent_policy_draws_each_tasks_noise_from_its_own_generator():
    """eval.policy=sample with a GRU policy on two tasks: task 1's actions are tanh(mean + std * noise),
    the mean and std read step by step from its episode, the noise drawn in order from task 1's own
    generator (seed_for(seed, "eval", 1, 1)), as a memoryless policy's sampled evaluation draws it."""
    from agents import seeding
    from launch.evaluation.evaluator import Evaluation

    cfg = _cfg()
    evaluation = Evaluation("pointmass", "reach-e,reach-w", 0, cfg, 1, "sample")
    torch.manual_seed(3)
    weights = torch.nn.utils.parameters_to_vector(RecurrentActor(2, 2, 2, cfg).parameters())
    taken, observed, rewarded = [], [], []
    env = evaluation.envs[1]
    step = env.step

    def recording_step(action):
        taken.append(np.array(action))
        out = step(action)
        observed.append(out[0]), rewarded.append(out[1])
        return out
    env.step = recording_step
    evaluation(0, 1, weights)
    assert len(taken) == 30

    actor = RecurrentActor(2, 2, 2, cfg).requires_grad_(False)
    torch.nn.utils.vector_to_parameters(weights, actor.parameters())
    first = env.reset(seed=seeding.seed_for(0, "eval") + 1, options={"goal": 0})[0]
    obs_t = torch.tensor(np.array([first, *observed[:-1]]))[None]
    prev_action = torch.tensor(np.array([np.zeros(2, np.float32), *taken[:-1]]))[None]
    prev_reward = torch.tensor([0.0, *rewarded[:-1]], dtype=torch.float32)[None]
    mean, log_std = (x[0] for x in actor(obs_t, prev_action, prev_reward, torch.ones(1, dtype=torch.long)))
    noise = torch.Generator().manual_seed(seeding.seed_for(0, "eval", 1, 1))
    expected = [torch.tanh(mean[t] + log_std[t].exp() * torch.randn(1, 2, generator=noise)[0]) for t in range(30)]
    np.testing.assert_allclose(np.array(taken), torch.stack(expected).numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(np.array(taken), torch.tanh(mean).numpy(), atol=1e-3)  # noise was drawn


@pytest.mark.integration
@pytest.mark.multiproc
def test_recurrent_runs_on_local_and_ray_actors_with_continual_strategies_and_resume(tmp_path):
    """Short task-hidden pointmass runs with a GRU or an LSTM: local actor processes, Ray actors
    (private cluster under a short temp dir), 3RL's context windows, and continual PM2 with every
    strategy that touches weights (L2, SI, PackNet, EWC, online EWC, A-GEM; MAS with context
    windows) and the hypernetwork regulariser on generated memories (mlp, chunked, rnn with growth);
    a checkpoint resumes (episodes in progress restart)."""
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    from metrics import evallog
    from tests.conftest import TRAIN, env_with_home, run_train, train_many

    hidden = ["--set", "sac.task_input=false", "--set", "sac.head=single", "--set", "sac.batch_size_per_task=8",
              "--set", "sac.memory_hidden=32", "--set", "sac.hidden_sizes=[32,32]", "--set", "eval.goals=2",
              "--set", "sac.warmup_steps_per_task=100", "--seed", 1]
    pm4 = ["--suite", "pointmass", "--steps", 800, "--eval-every", 400, "--set", "run.checkpoint_every=400"]
    pm2 = ["--suite", "pointmass", "--sequence", "PM2", "--set", "continual.steps_per_task=400", "--backend", "single"]
    context = ["--set", "sac.memory=gru", "--set", "sac.memory_context=15"]
    jobs = {"context": [*pm4, "--backend", "single", *context, *hidden],
            **{m: [*pm2, "--method", m, "--set", f"sac.memory={cell}", *hidden]
               for m, cell in (("l2", "lstm"), ("si", "lstm"), ("packnet", "lstm"), ("ewc", "gru"),
                               ("online-ewc", "lstm"), ("agem", "gru"))},
            "mas-context": [*pm2, "--method", "mas", *context, *hidden],
            "ewc-bf16": [*pm2, "--method", "ewc", "--set", "sac.memory=gru", "--set", "sac.precision=bf16", *hidden],
            # hypernetworks for recurrent policies: the memory, trunk and head generated per task
            **{f"hnet-{kind}": [*pm2, "--method", "hnet", "--set", f"sac.memory={cell}", "--set", "sac.trunk=hyper",
                                "--set", "sac.head=hyper", "--set", f"sac.hypernet={kind}", *hidden, *extra,
                                "--set", "continual.steps_per_task=250"]
               for kind, cell, extra in (("mlp", "gru", []),
                                         ("chunked", "lstm", ["--set", "continual.hnet_fisher=true"]),
                                         ("rnn", "gru", ["--set", "sac.hyper_growth=true"]))}}
    results = train_many({name: [*args, "--run-dir", tmp_path / name] for name, args in jobs.items()})
    # actor processes: a train.py process of its own (a pool worker may not start processes)
    results["gru-local"] = run_train(*pm4, "--backend", "local", "--actors", 2, "--set", "sac.memory=gru", *hidden,
                                     "--run-dir", tmp_path / "gru-local")
    for name, result in results.items():
        assert result.returncode == 0, (name, result.stderr[-2000:])
        rows = evallog.read(tmp_path / name / "evals.jsonl")
        assert rows and all(0 <= r["success"] <= 1 for r in rows)
    resumed = run_train("--resume", tmp_path / "gru-local", "--steps", 1200)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    with tempfile.TemporaryDirectory(prefix="pt-", dir="/tmp") as scratch:
        home, tmp = Path(scratch) / "home", Path(scratch) / "t"
        home.mkdir(), tmp.mkdir()
        args = [*pm4, "--backend", "ray", "--actors", 1, "--set", "sac.memory=gru", *hidden,
                "--run-dir", tmp_path / "ray"]
        ray = subprocess.run([sys.executable, str(TRAIN), *map(str, args)], capture_output=True, text=True, timeout=300,
                             env=env_with_home(home, tmp))
        assert ray.returncode == 0, ray.stderr[-2000:]


@pytest.mark.parametrize("cell,trunk", [("gru", "mlp"), ("lstm", "mlp"), ("gru", "hyper")])
def test_a_bf16_update_of_recurrent_sac_is_close_to_fp32(cell, trunk):
    """sac.precision=bf16 runs the memories' and networks' passes under autocast (generated memories
    too): the losses move a little (bf16 ran) but stay within 2%."""
    batch = _replay().sample(8, np.random.default_rng(0))
    fp32, _ = _update(batch, cell=cell, trunk=trunk)
    bf16, _ = _update(batch, cell=cell, precision="bf16", trunk=trunk)
    assert any(fp32[k] != bf16[k] for k in ("loss/qf1", "loss/actor"))
    for key in ("loss/qf1", "loss/qf2", "loss/actor", "policy/entropy"):
        assert bf16[key] == pytest.approx(fp32[key], rel=0.02, abs=0.01), key


def test_context_mode_reads_the_window_when_acting_as_in_training():
    """sac.memory_context (3RL): EnvContexts' window after t steps holds (a_j, r_j, s_j) for the last
    K steps, zeros before; the action equals the actor's on that window; a new episode starts empty."""
    from agents.context import ContextActor, EnvContexts, step_rows

    torch.manual_seed(0)
    actor = ContextActor(3, 2, 1, _cfg(memory_context=4)).requires_grad_(False)
    contexts = EnvContexts(actor, 1, 3, 2)
    contexts.start(torch.tensor([True]))
    obs, reward = torch.randn(6, 1, 3), torch.randn(6, 1)
    steps = []
    task = torch.zeros(1, dtype=torch.long)
    for t in range(6):
        window = torch.zeros(1, 4, 6)
        past = steps[-4:]
        if past:
            window[:, 4 - len(past):] = torch.stack(past, dim=1)
        expected = actor.act(obs[t], window, task, deterministic=True)
        action = contexts.act(obs[t], task, slice(None), deterministic=True)
        torch.testing.assert_close(action, expected)
        contexts.rewarded(slice(None), reward[t])
        steps.append(step_rows(action, reward[t], obs[t]))
    contexts.start(torch.tensor([True]))
    assert not contexts.window.any()


def test_context_mode_trains_on_the_window_before_each_transition():
    from agents.context import ContextReplay

    rng = np.random.default_rng(0)
    replay = ContextReplay(2, 1000, 3, 2, 4)
    n = 2 * 6 * 8
    task, step = np.repeat([0, 1], n // 2), np.tile(np.arange(8), n // 8)
    replay.add(task, rng.normal(size=(n, 3)).astype(np.float32), rng.uniform(-1, 1, (n, 2)).astype(np.float32),
               rng.normal(size=n).astype(np.float32), rng.normal(size=(n, 3)).astype(np.float32),
               np.zeros(n, np.float32), stream=task, first=step == 0)
    batch = replay.sample(8, np.random.default_rng(1))
    base, _ = _update(batch, memory_context=4)
    assert all(np.isfinite(v) for v in base.values())
    # the oldest step of each window feeds both networks' contexts (a change there moves the critic's loss)
    moved, _ = _update(batch._replace(history=batch.history + torch.nn.functional.pad(
        torch.ones(16, 1, 6), (0, 0, 0, 4))), memory_context=4)
    assert moved["loss/qf1"] != base["loss/qf1"]


def test_an_actor_resets_each_envs_memory_when_its_episode_starts():
    """An actor's memories (launch/actors/actor.py) after a whole pointmass episode (30 steps): the
    next step starts a new episode in every env, and the memory state it acts from is the state a
    fresh memory reaches from the new first observation alone."""
    from launch.actors.actor import Actor, ActorSpec

    cfg = _cfg()
    spec = ActorSpec(0, "pointmass", "PM4", 0, (0, 1, 2, 3), 4, cfg, 4)
    actor = Actor(spec)
    torch.manual_seed(0)
    actor.set_weights(torch.nn.utils.parameters_to_vector(RecurrentActor(2, 2, 4, cfg).parameters()), 1)
    actor.collect(4 * 29)
    assert not actor.pool.first.any() and actor.memories.state.abs().sum() > 0  # mid-episode: remembering
    actor.collect(4)  # the episode's last step: every env resets
    assert actor.pool.first.all()
    obs, task = actor.pool.obs.copy(), actor.pool.task_ids.copy()
    actor._actions(obs, task)
    fresh = EnvMemories(actor.policy, 4, 2)
    fresh.act(torch.from_numpy(obs), torch.from_numpy(task), slice(None), deterministic=True)
    torch.testing.assert_close(actor.memories.state, fresh.state)


@pytest.mark.parametrize("method", ["uncertainty", "famo"])
def test_the_loss_weighting_balancers_balance_recurrent_sacs_task_losses(method):
    """Uncertainty weighting and FAMO (FAMO re-computes the critic's task losses after its step, on
    the same windows) run on recurrent SAC's per-task masked means, and move their own weights."""
    from agents.balancers import BalanceConfig

    torch.manual_seed(0)
    learner = make_learner(_cfg(), 3, 2, 2, CPU, balance=BalanceConfig(method=method, networks=("critic",)))
    balancer = learner.balancers["critic"]
    before = {k: v.clone() for k, v in balancer.state_dict().items() if isinstance(v, torch.Tensor)}
    replay = _replay()
    for seed in range(3):
        logged = learner.update(replay.sample(8, np.random.default_rng(seed)))
        assert all(np.isfinite(float(v)) for v in logged.values())
    after = balancer.state_dict()
    assert before and any(not torch.equal(v, after[k]) for k, v in before.items())
