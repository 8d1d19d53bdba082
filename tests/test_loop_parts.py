"""The parts taken out of the training loops, each checked on its own, without a run: stage
bookkeeping (continual/schedule.py), a rank's share of a stage (launch/loop/trainer.py: local_end), the
checkpoint layout and protocol (launch/checkpoint.py), a stage's actors (launch/actors/stage.py),
which strategies read stored states (needs_states), and the RLlib engine's checkpoint, replay view
and PPO evaluation (integrations/rllib/: none of them needs RLlib)."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from agents.replay import MultiTaskReplay
from agents.sac import SACLearner
from agents.sac.config import SACConfig
from continual.schedule import Schedule, Stage, schedule_from
from continual.strategies import METHODS, make_strategy
from envs.registry import sequence_presets
from launch import checkpoint
from launch.actors.actor import Chunk
from launch.actors.stage import StageActors
from launch.config import ContinualConfig
from launch.distributed.ranks import Dist
from launch.errors import UserError
from launch.evaluation.evaluator import labelled
from launch.loop.trainer import local_end

# -- stage bookkeeping (continual/schedule.py) --------------------------------------------------


def _pm_schedule() -> Schedule:
    return schedule_from("reach-e:300,reach-w+reach-n,reach-e", sequence_presets("pointmass"), 100)


def test_a_multi_task_run_is_one_stage_of_every_task():
    schedule = Schedule.multitask(["a", "b", "c"], 900)
    assert schedule.stages == (Stage((0, 1, 2), 0, 900),)
    assert schedule.task_stage == [0, 0, 0]
    assert schedule.records() == [{"tasks": ["a", "b", "c"], "start": 0, "end": 900}]


def test_task_stage_names_the_stage_that_trains_each_task():
    schedule = _pm_schedule()
    assert schedule.names == ("reach-e", "reach-w", "reach-n", "reach-e#2")
    assert schedule.task_stage == [0, 1, 1, 2]  # a repeat is a task of its own, in its own stage


def test_a_stages_context_holds_its_tasks_the_earlier_ones_and_the_callbacks():
    schedule, rng, replay = _pm_schedule(), np.random.default_rng(0), object()
    calls = []
    ctx = schedule.context(1, replay, rng, train=calls.append)
    assert (ctx.stage, ctx.num_stages, ctx.tasks, ctx.earlier, ctx.stage_steps) == (1, 3, (1, 2), (0,), 200)
    assert ctx.replay is replay and ctx.rng is rng and not ctx.resumed
    ctx.train(5)
    assert calls == [5]
    last = schedule.context(2, None, rng, resumed=True)
    assert (last.tasks, last.earlier, last.stage_steps, last.resumed) == ((3,), (0, 1, 2), 100, True)
    assert last.train(7) is None  # no extra updates unless the loop gives a way to run them


# -- a rank's share of a stage (launch/loop/trainer.py) ----------------------------------------------


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("end", [0, 1, 999, 1000, 12_345])
def test_the_ranks_shares_of_a_stage_add_up_to_its_end(world, end):
    for num_tasks in range(world, 11):
        shares = [local_end(end, Dist(r, world), num_tasks) for r in range(world)]
        assert sum(shares) == end
        for r, share in enumerate(shares):  # by task count, up to rounding
            assert abs(share - end * len(Dist(r, world).shard(num_tasks)) / num_tasks) < 1 + 1e-9
    assert local_end(1000, Dist(1, 3), 10) == 300 and local_end(1000, Dist(0, 3), 10) == 400


# -- checkpoint layout and protocol (launch/checkpoint.py) --------------------------------------

FORMAT_KEYS = ["learner", "rank_steps", "rng", "steps_by_actor", "reward_stats", "strategy", "auxiliary",
               "pending_evaluations", "rank_optimizers", "rank_balancers", "replay"]


def _rank_part(rank: int, optimizers=True) -> dict:
    return {"steps": 100 + rank, "rng": {"numpy": rank}, "steps_by_actor": {rank * 1000: 50 + rank},
            "reward_stats": torch.full((2, 3), float(rank)), "optimizers": {"adam": rank} if optimizers else None,
            "balancers": {"critic": {"w": rank}}}


def test_the_checkpoint_layout_round_trips_each_ranks_part():
    shared = {"learner": {"w": 1}, "strategy": {"s": 2}, "auxiliary": [{"a": 3}], "replay": {"r": 4}}
    state = checkpoint.pack(shared, [_rank_part(0), _rank_part(1)])
    assert list(state) == FORMAT_KEYS  # the file format: every key, in the order it was always written
    assert state["steps_by_actor"] == {"0": 50, "1000": 51} and state["rank_steps"] == [100, 101]
    mine = checkpoint.unpack({**state, "step": 201}, 1, 2)
    assert mine["step"] == 201 and mine["steps"] == 101 and mine["rng"] == {"numpy": 1}
    assert mine["optimizers"] == {"adam": 1} and mine["balancers"] == {"critic": {"w": 1}}
    assert mine["steps_by_actor"] == {0: 50, 1000: 51}  # every actor's, as each rank loads them
    assert torch.equal(mine["reward_stats"], torch.ones(2, 3))
    assert {k: mine[k] for k in shared} == shared
    with pytest.raises(UserError, match="written by 2 learner rank"):
        checkpoint.unpack({**state, "step": 201}, 0, 3)


def test_one_rank_with_shared_optimizers_keeps_no_per_rank_optimizers_or_balancers():
    shared = {"learner": {}, "strategy": {}, "auxiliary": []}
    state = checkpoint.pack(shared, [_rank_part(0, optimizers=False)])
    assert list(state) == FORMAT_KEYS[:8]
    mine = checkpoint.unpack({**state, "step": 100}, 0, 1)
    assert mine["optimizers"] is None and mine["balancers"] is None and "replay" not in mine


class _Evaluator:
    def __init__(self):
        self.calls = []

    def results(self):
        self.calls.append("results")
        return [[{"step": 10}]]

    def wait(self):
        self.calls.append("wait")
        return [[{"step": 10}], [{"step": 20}]]

    def unfinished(self):
        return [(30, 3, torch.zeros(2))]


class _RunLog:
    def __init__(self):
        self.events = []

    def evaluation(self, rows):
        self.events.append(("evaluation", rows[0]["step"]))

    def flush(self):
        self.events.append(("flush",))


@pytest.mark.parametrize("preempted", [False, True])
def test_a_checkpoint_is_written_after_everything_logged_up_to_its_step(tmp_path, preempted):
    evaluator, runlog = _Evaluator(), _RunLog()
    state = checkpoint.pack({"learner": {}, "strategy": {}, "auxiliary": []}, [_rank_part(0)])
    path = checkpoint.save_run(tmp_path, 40, state, 2, evaluator, runlog, preempted)
    assert evaluator.calls == (["results"] if preempted else ["wait"])  # a grace period does not wait
    assert runlog.events[-1] == ("flush",)
    assert [e[1] for e in runlog.events[:-1]] == ([10] if preempted else [10, 20])
    loaded = checkpoint.load_latest(tmp_path)
    assert path.name == "step-000000000040.pt" and loaded["step"] == 40
    pending = loaded["pending_evaluations"]
    assert pending == [] if not preempted else (len(pending) == 1 and pending[0][:2] == [30, 3])


def test_a_checkpoint_that_does_not_fit_is_one_user_error():
    with pytest.raises(UserError, match=r"checkpoint does not match this run's config: 'learner'"):
        with checkpoint.loading_into_this_run():
            {}["learner"]
    with pytest.raises(UserError, match="^written by$"):  # its own UserErrors pass as they are
        with checkpoint.loading_into_this_run():
            raise UserError("written by")


class _RankOneHearing(Dist):
    """Rank 1 of 2, told by rank 0 that its checkpoint is corrupt."""

    def broadcast_object(self, obj):
        return None, "corrupt checkpoint x"


def test_every_rank_gets_the_checkpoint_or_the_same_error(tmp_path):
    main = Dist()
    with pytest.raises(UserError, match="no checkpoint in"):
        checkpoint.load_latest_on_every_rank(tmp_path, main)
    other = _RankOneHearing(rank=1, world=2)
    with pytest.raises(UserError, match="corrupt checkpoint x"):
        checkpoint.load_latest_on_every_rank(tmp_path, other)
    checkpoint.save(tmp_path, 5, {"learner": {}}, keep=1)
    assert checkpoint.load_latest_on_every_rank(tmp_path, main)["step"] == 5


def test_rng_states_and_rehearsal_files_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    state = checkpoint.rng_state(rng)
    first = (torch.rand(3), rng.random(3))
    checkpoint.set_rng_state(state, rng)
    again = (torch.rand(3), rng.random(3))
    assert torch.equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    checkpoint.save_rehearsal(tmp_path, 2, {"obs": torch.ones(4)})
    assert torch.equal(checkpoint.load_rehearsal(tmp_path, 2)["obs"], torch.ones(4))
    with pytest.raises(UserError, match="missing"):
        checkpoint.load_rehearsal(tmp_path, 3)


# -- a stage's actors (launch/actors/stage.py) --------------------------------------------------


class _Source:
    def __init__(self, chunks):
        self.chunks, self.published, self.restarts, self.closed = chunks, [], 2, False

    def poll(self, timeout):
        chunks, self.chunks = self.chunks, []
        return chunks

    def publish(self, weights, version):
        self.published.append(version)

    def close(self):
        self.closed = True


def _chunk(actor_id: int, version: int, rows: int, task: int = 0) -> Chunk:
    zeros = np.zeros((rows, 2), np.float32)
    return Chunk(actor_id, version, np.full(rows, task), zeros, zeros, np.zeros(rows, np.float32), zeros,
                 np.zeros(rows, np.float32), episodes=[SimpleNamespace(task=task, ret=0.0)], episode_ends=[rows])


def test_stage_actors_keep_what_fits_in_the_stage_and_count_it():
    cfg = SimpleNamespace(runtime=SimpleNamespace(backend="single"))
    actors = StageActors(cfg, rank=0, num_tasks=2, cores=(1, 1), policy=torch.nn.Linear(2, 2))
    actors.source, actors.version = _Source([_chunk(0, 1, 5), _chunk(1, 2, 5, task=1)]), 3
    replay = MultiTaskReplay(2, 20, 2, 2)
    episodes = {0: [], 1: []}
    added, polled = actors.collect(7, replay, episodes)
    assert added == 7 and polled >= 0 and list(replay.size) == [5, 2]  # the second chunk's first 2 rows
    assert actors.steps_by_actor == {0: 5, 1: 2}
    assert len(episodes[0]) == 1 and episodes[1] == []  # the cut chunk's episode had not ended in 2 rows
    assert actors.take_lags() == [2, 1] and actors.take_lags() == []
    assert actors.publish(8) and actors.version == 8 and actors.source.published == [8]
    actors.restarts_before = 3
    assert actors.restarts() == 5
    actors.close()
    assert actors.source.closed


# -- strategies say whether end_task reads stored states ----------------------------------------


class _Probe:
    """Replay that records whether a strategy read it."""

    def __init__(self, replay):
        self.replay, self.read = replay, False

    @property
    def size(self):
        self.read = True
        return self.replay.size

    def rows(self, task, idx):
        self.read = True
        return self.replay.rows(task, idx)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_needs_states_says_whether_end_task_reads_replay(method):
    torch.manual_seed(0)
    sac = SACConfig(hidden_sizes=(16, 16), head="hyper" if method == "hnet" else "multi", batch_size_per_task=8,
                    hyper_embedding_dim=4, hyper_hidden=16)
    learner = SACLearner(sac, obs_dim=3, action_dim=2, num_tasks=2, device=torch.device("cpu"))
    cfg = ContinualConfig(sequence="x", method=method, importance_samples=16, memory_per_task=16,
                          packnet_retrain_steps=0)
    strategy = make_strategy(cfg, learner, [0, 1])
    replay = MultiTaskReplay(2, 32, 3, 2)
    rng = np.random.default_rng(0)
    replay.add(np.zeros(32, np.int64), rng.normal(size=(32, 3)).astype(np.float32),
               rng.uniform(-1, 1, (32, 2)).astype(np.float32), np.zeros(32, np.float32),
               rng.normal(size=(32, 3)).astype(np.float32), np.zeros(32, np.float32))
    probe = _Probe(replay)
    ctx = Schedule(("a", "b"), (Stage((0,), 0, 100), Stage((1,), 100, 200))).context(0, probe, rng)
    strategy.start_task(ctx)
    probe.read = False
    strategy.end_task(ctx)
    assert probe.read == strategy.needs_states
    assert METHODS[method].needs_states == (method in ("ewc", "online-ewc", "mas", "agem", "bc"))


# -- the RLlib engine's parts (integrations/rllib/) ---------------------------------------------


def test_the_rllib_checkpoint_round_trips_and_keeps_the_newest(tmp_path):
    from integrations.rllib import checkpoint as rllib_checkpoint

    def save_algorithm(path):
        from pathlib import Path
        Path(path).mkdir()
        (Path(path) / "rllib_state").write_text(path)

    root = tmp_path / rllib_checkpoint.DIR
    with pytest.raises(ValueError, match="no RLlib checkpoint in"):
        rllib_checkpoint.latest(root)
    driver = {"step": 64, "stage": 1, "next_eval": float("inf"), "next_ckpt": 128, "stage_steps": [{"a": 64}]}
    rllib_checkpoint.save(root, 64, save_algorithm, {"anchor": torch.ones(2)}, driver, keep=1)
    rllib_checkpoint.save(root, 128, save_algorithm, None, {**driver, "step": 128}, keep=1)
    assert [p.name for p in root.iterdir()] == ["step-000000000128"]  # the newest 1; no temp folder left
    state = rllib_checkpoint.latest(root)
    assert state["step"] == 128 and state["next_eval"] == float("inf") and state["strategy"] is None
    assert (state["path"] / "algorithm" / "rllib_state").is_file()
    rllib_checkpoint.save(root, 192, save_algorithm, {"anchor": torch.ones(2)}, {**driver, "step": 192}, keep=2)
    state = rllib_checkpoint.latest(root)
    assert state["step"] == 192 and torch.equal(state["strategy"]["anchor"], torch.ones(2))
    (state["path"] / "polytask.json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupt checkpoint"):
        rllib_checkpoint.latest(root)
    assert json.loads((root / "step-000000000128" / "polytask.json").read_text())["step"] == 128


def test_the_replay_view_splits_rllibs_transitions_by_task():
    from integrations.rllib.replay_view import ReplayView

    obs = [np.array([1.0, 2.0, 1.0, 0.0]), np.array([3.0, 4.0, 0.0, 1.0]), np.array([5.0, 6.0, 1.0, 0.0])]
    episodes = [SimpleNamespace(get_observations=lambda i, o=o: o, get_actions=lambda i, o=o: o[:1]) for o in obs]
    buffer = SimpleNamespace(sample=lambda **kwargs: episodes)
    view = ReplayView(buffer, num_tasks=2, count=3, gamma=0.99)
    assert view.size == [2, 1]
    np.testing.assert_array_equal(view.rows(0, [1])["obs"], [[5.0, 6.0]])  # the task one-hot is not an input
    np.testing.assert_array_equal(view.rows(1, [0])["action"], [[3.0]])


def test_ppo_evaluations_are_labelled_like_ours_and_repeat_exactly():
    from envs import make_suite
    from integrations.rllib.policy import PPOEvaluation

    suite = make_suite("pointmass", "reach-e,reach-w", 0)

    class Module:
        def forward_inference(self, batch):
            obs = batch["obs"]
            return {"action_dist_inputs": torch.cat([-obs[:, :2], torch.zeros(len(obs), 2)], dim=1)}

    evaluation = PPOEvaluation(suite, seed=0, goals=1, mode="sample")
    first, second = evaluation(Module()), evaluation(Module())
    assert first == second and [r["task_index"] for r in first] == [0, 1]  # noise reseeded per evaluation
    rows = labelled(first, 500, 7, suite.task_names, [t.env_name for t in suite.tasks], "sample")
    assert list(rows[1])[:3] == ["step", "task", "env"] and list(rows[1])[-2:] == ["policy", "policy_version"]
    assert (rows[1]["step"], rows[1]["task"], rows[1]["policy"], rows[1]["policy_version"]) == (500, "reach-w",
                                                                                              "sample", 7)
