"""Continual learning without task boundaries, part by part: the boundary detectors against the
rules they implement, reservoir memory, MIR's retrieval, CLEAR's cloning terms, TF-MAS's hard buffer
and importances, the blend ramp and the metrics of the hidden setting. (Runs: tests/test_task_free_runs.py.)"""

import json
import math

import numpy as np
import pytest
import torch

from agents.replay import Batch
from agents.sac import make_learner
from agents.stream_replay import RecentReplay, ReservoirReplay
from continual.detectors import ChangeDetector, PlateauDetector
from continual.schedule import Stage, blend_shares
from continual.strategies import make_strategy
from launch.config import build_config
from metrics import task_free
from metrics.runs import make_run


def reference_plateau_fires(losses, window=5, mean_threshold=0.2, variance_threshold=0.1):
    """kkelchte/task_free_continual_learning method.py lines 147-160, transcribed: the steps whose
    loss makes the rule update importances."""
    loss_window, fired = [], []
    new_peak_detected, last_mean, last_variance = True, None, None
    for i, loss in enumerate(losses):
        loss_window.append(np.mean(loss))
        if len(loss_window) > window:
            del loss_window[0]
        mean, variance = np.mean(loss_window), np.var(loss_window)
        if not new_peak_detected and mean > last_mean + np.sqrt(last_variance):
            new_peak_detected = True
        if mean < mean_threshold and variance < variance_threshold and new_peak_detected:
            fired.append(i)
            last_mean, last_variance, new_peak_detected = mean, variance, False
    return fired


def ours_fires(losses, scale=1.0):
    detector = PlateauDetector(window=5, mean_fraction=0.2, variance_fraction=0.1, block=1)
    return [i for i, loss in enumerate(losses) if detector.observe_loss(loss * scale)]


def test_plateau_rule_fires_where_the_references_does_and_is_scale_free():
    # two tasks: a peak of 1.0 (the reference's thresholds are then ours), learned down to 0.05
    task = [1.0] * 6 + [0.6, 0.3, 0.12, 0.06] + [0.05] * 10
    losses = task + task + [0.05 + 0.01 * (i % 3) for i in range(10)]
    reference = reference_plateau_fires(losses)
    assert len(reference) == 2  # once per task, after it is learned
    assert ours_fires(losses) == reference
    assert ours_fires(losses, scale=1000.0) == reference  # a TD loss 1000x larger: the same steps
    assert reference_plateau_fires([x * 1000 for x in losses]) == []  # the reference's absolute thresholds do not
    assert ours_fires([1.0] * 40) == [] and ours_fires([3.0 + 0.01 * (i % 2) for i in range(40)]) == []


def test_plateau_blocks_average_the_updates_losses():
    detector = PlateauDetector(window=2, block=3)
    for loss in (1.0, 2.0, 6.0, 4.0, 4.0):
        detector.observe_loss(loss)
    assert list(detector.losses) == [3.0] and (detector.block_sum, detector.block_count) == (8.0, 2)


def test_change_detector_finds_a_drop_within_its_stated_delay_and_ignores_learning():
    rng = np.random.default_rng(0)
    shift, before = 3.0, 300
    returns = np.concatenate([rng.normal(0, 1, before), rng.normal(-shift, 1, 100)])
    detector = ChangeDetector(threshold=10.0, tolerance=0.5, min_episodes=20)  # the defaults
    alarms = [i for i, x in enumerate(returns) if detector.observe_return(float(x))]
    stated = math.ceil(10.0 / (shift - 0.5))  # threshold / (d - tolerance) episodes
    assert alarms and alarms[0] >= before, alarms  # nothing before the drop
    assert alarms[0] - before <= 3 * stated, alarms
    learning = ChangeDetector()
    rising = np.linspace(-30, 0, 400) + rng.normal(0, 1, 400)  # returns rising as a task is learned
    assert not any(learning.observe_return(float(x)) for x in rising)


def test_change_detector_with_the_mad_scale_finds_a_drop_that_outlying_returns_hide():
    """Meta-World's pattern (BENCHMARKS.md): 20 returns around 400 of which 2 successes return 2,000, then a
    drop to 150. Against the mean and standard deviation (about 560 and 480) the drop is about 0.86 sd: no
    alarm in 20 episodes. Against the median and MAD (x 1.4826: about 410 and 30) it is about 9: an alarm
    within the stated delay, at the episode a hand computation of the statistic gives. Rising returns fire
    neither; a detector restored from a state_dict saved just before the drop raises the same alarm, one
    saved before the scale existed (no "returns") loads, and the config's change_scale reaches the detector."""
    rng = np.random.default_rng(1)
    first = rng.normal(400, 40, 20)
    first[[6, 15]] = 2000.0
    returns = np.concatenate([first, rng.normal(150, 40, 20)])
    std, mad = ChangeDetector(scale="std"), ChangeDetector(scale="mad")
    assert not any(std.observe_return(float(x)) for x in returns)
    alarms = [i for i, x in enumerate(returns) if mad.observe_return(float(x))]
    spread = 1.4826 * np.median(np.abs(first - np.median(first)))
    stated = math.ceil(10.0 / ((np.median(first) - 150) / spread - 0.5))
    assert len(alarms) == 1 and 20 <= alarms[0] < 20 + 3 * stated, (alarms, stated)
    statistic, low, by_hand = 0.0, 0.0, None  # Page-Hinkley on median / (1.4826 MAD) of the returns so far
    for i in range(len(returns)):
        seen = returns[:i + 1]
        median, spread = np.median(seen), 1.4826 * np.median(np.abs(seen - np.median(seen)))
        if spread == 0:  # the first return: no spread yet
            continue
        statistic += (median - returns[i]) / spread - 0.5
        low = min(low, statistic)
        if i + 1 >= 20 and statistic - low > 10.0:
            by_hand = i
            break
    assert alarms[0] == by_hand
    rising = np.linspace(-30, 0, 400) + rng.normal(0, 1, 400)
    learning = ChangeDetector(scale="mad")
    assert not any(learning.observe_return(float(x)) for x in rising)
    saved = ChangeDetector(scale="mad")
    for x in returns[:20]:
        saved.observe_return(float(x))
    restored = ChangeDetector(scale="mad")
    restored.load_state_dict(json.loads(json.dumps(saved.state_dict())))  # a copy of the state, nothing shared
    assert [restored.observe_return(float(x)) for x in returns[20:]] == \
        [saved.observe_return(float(x)) for x in returns[20:]]
    older = ChangeDetector()
    older.load_state_dict({"count": 3, "mean": 1.0, "squares": 2.0, "statistic": 0.5, "minimum": 0.0})
    assert older.count == 3 and not older.returns
    from continual.detectors import make_detector
    cfg = build_config("pointmass", overrides=["continual.sequence=PM2", "continual.boundaries=hidden",
                                               "continual.detector=change", "continual.change_scale=mad"])
    assert make_detector(cfg.continual).scale == "mad"
    with pytest.raises(ValueError, match="std or mad"):
        ChangeDetector(scale="MAD")


def test_reservoir_keeps_a_uniform_sample_and_its_annotations():
    replay = ReservoirReplay(1, 500, 2, 1, np.random.default_rng(0), extra={"double": (2,)})
    replay.annotate = lambda rows: {"double": 2 * rows["obs"]}
    n = 20_000
    index = np.arange(n, dtype=np.float32)
    for start in range(0, n, 64):  # chunks, as actors send them
        rows = slice(start, start + 64)
        obs = np.stack([index[rows], -index[rows]], 1)
        replay.add(np.zeros(len(obs), np.int64), obs, np.zeros((len(obs), 1), np.float32),
                   np.zeros(len(obs), np.float32), obs, np.zeros(len(obs), np.float32))
    assert replay.size[0] == 500 and replay.seen[0] == n
    kept = replay.buffers[0]["obs"][:, 0]
    assert len(np.unique(kept)) == 500
    counts = np.histogram(kept, bins=10, range=(0, n))[0]  # uniform: 50 per tenth of the stream
    assert counts.min() >= 25 and counts.max() <= 75, counts  # FIFO would keep only the last tenth
    np.testing.assert_array_equal(replay.extra[0]["double"], 2 * replay.buffers[0]["obs"])


def _learner_and_config(*overrides):
    cfg = build_config("pointmass", overrides=["continual.sequence=PM2", "continual.boundaries=hidden",
                                               "env.target_visible=true", *overrides])
    torch.manual_seed(0)
    return make_learner(cfg.sac, 4, 2, 1, torch.device("cpu")), cfg


def _filled(replay, n=600, seed=0):
    rng = np.random.default_rng(seed)
    obs, next_obs = rng.uniform(-1, 1, (n, 4)).astype(np.float32), rng.uniform(-1, 1, (n, 4)).astype(np.float32)
    replay.add(np.zeros(n, np.int64), obs, rng.uniform(-1, 1, (n, 2)).astype(np.float32),
               -rng.random(n).astype(np.float32), next_obs, np.zeros(n, np.float32))
    return replay


def test_mir_replays_the_candidates_a_virtual_adam_step_hurts_most():
    learner, cfg = _learner_and_config("continual.method=mir")
    mir = make_strategy(cfg.continual, learner, [0], 0)
    replay = _filled(RecentReplay(1, 1000, 100, 4, 2, np.random.default_rng(1)))
    for _ in range(3):  # Adam moments that are not zero
        learner.update(replay.sample(64, np.random.default_rng(2)))
    new = replay.recent.sample(32, np.random.default_rng(3), [0])
    candidates = replay.sample(40, np.random.default_rng(4))
    torch.manual_seed(7)  # the soft targets sample next actions: the same draws below
    scores = mir.interference(new, candidates)

    # by hand: a copy of the critic takes the Adam step its optimizer would take on new's TD loss
    import copy
    torch.manual_seed(7)
    critic, new_target = copy.deepcopy(learner.critic), learner.critic_pass(*new)[2].detach()
    target = learner.critic_pass(*candidates)[2].detach()
    optimizer = torch.optim.Adam(critic.parameters(), lr=learner.critic_optimizer.param_groups[0]["lr"])
    optimizer.load_state_dict(learner.critic_optimizer.state_dict())
    td = lambda net, b, y: ((net(b.obs, b.action, b.task) - y) ** 2).sum(0)  # noqa: E731
    before = td(critic, candidates, target).detach()
    optimizer.zero_grad()
    td(critic, new, new_target).mean().backward()
    optimizer.step()
    after = td(critic, candidates, target).detach()
    torch.testing.assert_close(scores, after - before, rtol=1e-4, atol=1e-6)
    assert scores.abs().max() > 0

    batch = mir.sample(replay, 64, np.random.default_rng(5), [0])
    assert len(batch.obs) == 64 and bool((batch.task == 0).all())


def test_clear_clones_the_stored_behaviour_on_the_replayed_half():
    learner, cfg = _learner_and_config("continual.method=clear")
    clear = make_strategy(cfg.continual, learner, [0], 0)
    replay = RecentReplay(1, 1000, 100, 4, 2, np.random.default_rng(1), extra=clear.replay_extra(2))
    clear.use_replay(replay)
    _filled(replay)
    batch = clear.sample(replay, 64, np.random.default_rng(2), [0])
    assert len(batch.obs) == 64 and clear.new_count == 32
    terms = {**clear.loss_terms("actor", batch, None), **clear.loss_terms("critic", batch, None)}
    # stored when the rows arrived, by the same networks: nothing to clone yet
    assert terms["clear/policy_cloning"].abs() < 1e-5 and terms["clear/value_cloning"].abs() < 1e-5
    clear.behaviour["mean"] += 0.5  # the behaviour policy acted elsewhere, more widely; valued otherwise
    clear.behaviour["log_std"] += 0.3
    clear.behaviour["q"] += 1.0
    actor_term = clear.loss_terms("actor", batch, None)["clear/policy_cloning"]
    critic_term = clear.loss_terms("critic", batch, None)["clear/value_cloning"]
    replayed = slice(32, None)
    mean, log_std = learner.actor(batch.obs[replayed], batch.task[replayed])
    behaviour = torch.distributions.Normal(clear.behaviour["mean"], clear.behaviour["log_std"].exp())
    kl = torch.distributions.kl_divergence(behaviour, torch.distributions.Normal(mean, log_std.exp())).sum()
    torch.testing.assert_close(actor_term, 0.01 * kl / 64, rtol=1e-4, atol=1e-7)  # forward KL, summed / B
    torch.testing.assert_close(critic_term, torch.tensor(0.005 * 2 * 32 / 64), rtol=1e-4, atol=1e-7)
    # the policy-cloning gradient moves the actor's mean towards the stored one
    actor_term.backward()
    before = learner.actor(batch.obs[replayed], batch.task[replayed])[0].detach()
    with torch.no_grad():
        for p in learner.actor.parameters():
            p -= 1.0 * p.grad
    after = learner.actor(batch.obs[replayed], batch.task[replayed])[0].detach()
    assert (after - before).mean() > 0


def test_tfmas_keeps_the_hardest_rows_and_updates_importances_at_plateaus():
    learner, cfg = _learner_and_config("continual.method=tfmas", "continual.tfmas_hard_buffer=5",
                                       "continual.detector_block=1")
    tfmas = make_strategy(cfg.continual, learner, [0], 0)
    replay = _filled(RecentReplay(1, 1000, 100, 4, 2, np.random.default_rng(1)))
    batch = tfmas.sample(replay, 20, np.random.default_rng(2), [0])
    tfmas.after_update(torch.arange(20, dtype=torch.float32), 1.0)  # a first peak
    torch.testing.assert_close(tfmas.hard.obs, batch.obs[[19, 18, 17, 16, 15]])  # the 5 highest losses
    for k in range(5):  # the window falls: [1, 0, 0, 0, 0] is no plateau yet (mean 0.2, not below it)
        hard_in_place = tfmas.hard
        batch = tfmas.sample(replay, 20, np.random.default_rng(3 + k), [0])
        assert len(batch.obs) == 25  # the replay batch + the hard buffer
        assert not tfmas.omega
        tfmas.after_update(torch.arange(25, dtype=torch.float32), 0.0)
    assert tfmas.plateaus == 1  # [0, 0, 0, 0, 0]: a plateau, on the hard buffer in place before the refill
    params = [p for _, p in tfmas.shared("actor")]
    expected = [torch.zeros_like(p) for p in params]
    for row in range(5):  # per sample |d ||f(x)||_2 / d theta|, summed (the reference's lines 163-172)
        mean, log_std = learner.actor(hard_in_place.obs[row:row + 1], hard_in_place.task[row:row + 1])
        grads = torch.autograd.grad(torch.cat([mean.flatten(), log_std.flatten()]).norm(), params, allow_unused=True)
        for e, g in zip(expected, grads):
            if g is not None:
                e += g.abs()
    for got, want in zip(tfmas.omega["actor"], expected):
        torch.testing.assert_close(got, want)
    assert tfmas.penalty("actor") == 0  # anchored at the current weights
    with torch.no_grad():
        for p in params:
            p += 0.1
    penalty = tfmas.penalty("actor")
    torch.testing.assert_close(penalty, 0.02 / 2 * sum((w * 0.01).sum() for w in expected), rtol=1e-4, atol=1e-6)
    old = [w.clone() for w in tfmas.omega["actor"]]
    tfmas._update_importance()  # a second plateau: the running average g / 2 + (1 - 1/2) omega
    assert tfmas.plateaus == 2
    assert any(not torch.equal(o, w) for o, w in zip(old, tfmas.omega["actor"]))


def test_blend_ramp_rises_linearly_across_each_switch():
    stages = [Stage((0,), 0, 1000), Stage((1,), 1000, 2000), Stage((2,), 2000, 3000)]
    assert blend_shares(stages, 400, 799) == {0: 1.0}
    assert blend_shares(stages, 400, 800) == {0: 1.0, 1: 0.0}
    assert blend_shares(stages, 400, 900) == {0: 0.75, 1: 0.25}
    assert blend_shares(stages, 400, 1000) == {0: 0.5, 1: 0.5}
    assert blend_shares(stages, 400, 1100) == {0: 0.25, 1: 0.75}
    assert blend_shares(stages, 400, 1200) == {1: 1.0}
    assert blend_shares(stages, 400, 2100) == {1: 0.25, 2: 0.75}
    assert blend_shares(stages, 0, 1000) == {1: 1.0}


def test_anytime_performance_and_detection_metrics():
    run = make_run(["a", "b"], [0, 100, 200, 300, 400], [[0, 0], [0.5, 0], [1, 0], [0.5, 0.5], [0, 1]],
                   [(["a"], 0, 200), (["b"], 200, 400)])
    # step 0: nothing seen; 100, 200: a only; 300, 400: both
    assert task_free.anytime_average_performance(run) == pytest.approx(np.mean([0.5, 1, 0.5, 0.5]))
    assert task_free.switches(run) == [200]
    found = task_free.detection([150, 230, 260], [200], 400)
    assert found == {"delays": [30], "false_alarms": 2, "missed": 0}
    assert task_free.detection([], [200, 300], 400) == {"delays": [None, None], "false_alarms": 0, "missed": 2}
    assert task_free.detection([250, 310], [200, 300], 400)["delays"] == [50, 10]
    labelled = {"boundaries": "hidden", "blend_steps": 2000, "detector": "change"}
    assert task_free.setting(make_run(["a"], [0], [[0]], [(["a"], 0, 1)], config={"continual": labelled})) == \
        "hidden, blend 2,000, change detector"
    robust = {"continual": {**labelled, "change_scale": "mad"}}  # the report tells the two scales apart
    assert task_free.setting(make_run(["a"], [0], [[0]], [(["a"], 0, 1)], config=robust)) == \
        "hidden, blend 2,000, change detector (MAD)"


def test_hidden_batches_carry_no_task_label():
    from launch.loop.learning import build_replay
    learner, cfg = _learner_and_config("continual.method=reservoir")
    from envs import make_suite
    suite = make_suite("pointmass", "reach-e,reach-w", 0, target_visible=True)
    strategy = make_strategy(cfg.continual, learner, [0], 0)
    replay = build_replay(cfg, suite, learner, strategy, 1, 2)
    assert isinstance(replay, ReservoirReplay) and replay.num_tasks == 1
    batch = strategy.sample(_filled(replay), 16, np.random.default_rng(0), [0])
    assert isinstance(batch, Batch) and bool((batch.task == 0).all())


def test_3rl_splits_each_batch_at_the_detected_boundary_as_the_reference():
    """3RL's batch after the k-th detected boundary: floor(batch / (k + 1)) rows stored since it, the rest
    from before it (the reference's curr_task_bfrac); uniform before any detection; a resume keeps it."""
    from agents.context import ContextReplay
    from continual.strategies.base import TaskContext
    learner, cfg = _learner_and_config("continual.method=3rl", "env.target_visible=false")
    replay = ContextReplay(1, 2000, 2, 2, context=15)
    three = make_strategy(cfg.continual, learner, [0], 0)
    three.use_replay(replay)

    def add(first_serial, n):  # 30-step episodes; obs[0] holds each row's serial number
        serial = np.arange(first_serial, first_serial + n)
        obs = np.stack([serial / 10_000, np.zeros(n)], 1).astype(np.float32)
        replay.add(np.zeros(n, np.int64), obs, np.zeros((n, 2), np.float32), np.zeros(n, np.float32), obs,
                   np.zeros(n, np.float32), stream=np.zeros(n, np.int64), first=serial % 30 == 0)

    def context(stage, resumed=False):
        return TaskContext(stage, 3, (0,), (0,), 0, replay, np.random.default_rng(0), resumed)

    three.start_task(context(0))  # the run's start
    add(0, 900)
    assert len(three.sample(replay, 300, np.random.default_rng(0), [0]).obs) == 300  # uniform: nothing to split
    three.start_task(context(1))  # the first detection, at serial 900
    add(900, 300)
    drawn = three.sample(replay, 300, np.random.default_rng(1), [0])
    got = np.rint(drawn.obs[:, 0].numpy() * 10_000).astype(int)
    assert (got >= 900).sum() == 150 and (got < 900).sum() == 150  # uniform: about 75 of them
    # each row's context is its own episode's previous rows (gather = sample's windows)
    row = int(np.flatnonzero(got % 30 >= 15)[0])
    assert np.allclose(drawn.history[row, :-1, -2].numpy() * 10_000, got[row] - np.arange(15, 0, -1), atol=0.5)

    three.start_task(context(2))  # a second detection
    assert (three.stage, three.stage_start) == (2, 1200)
    add(1200, 300)
    got = np.rint(three.sample(replay, 300, np.random.default_rng(2), [0]).obs[:, 0].numpy() * 10_000)
    assert (got >= 1200).sum() == 100 and (got < 1200).sum() == 200

    resumed = make_strategy(cfg.continual, learner, [0], 0)
    resumed.use_replay(replay)
    resumed.load_state_dict(three.state_dict())
    resumed.start_task(context(2, resumed=True))
    assert (resumed.stage, resumed.stage_start) == (2, 1200)

    add(1500, 1000)  # the ring (2,000 rows) wraps: serials 500 .. 2499 stored
    three.stage, three.stage_start = 1, 2000
    got = np.rint(three.sample(replay, 300, np.random.default_rng(3), [0]).obs[:, 0].numpy() * 10_000)
    assert (got >= 2000).sum() == 150 and ((got >= 500) & (got < 2000)).sum() == 150
    three.stage_start = 400  # the stage's start overwritten: nothing earlier is left, uniform over what is
    got = np.rint(three.sample(replay, 300, np.random.default_rng(4), [0]).obs[:, 0].numpy() * 10_000)
    assert got.min() >= 500 and 0 < (got >= 2000).sum() < 300
    resumed.use_replay(ContextReplay(1, 2000, 2, 2, context=15))  # resumed without its replay: uniform
    resumed.start_task(context(2, resumed=True))
    assert resumed.stage_start == 0


def test_3rl_takes_the_change_detector_unless_told_otherwise():
    """Hidden boundaries: 3RL's reference uses each task start (burn-in, batch split), so it gets the change
    detector; a given detector is honoured, `none` turns it off; `none` is no detector for any method."""
    from launch.errors import UserError

    def detector(*overrides, method="3rl"):
        return build_config("pointmass", flags={"continual.sequence": "PM2", "continual.method": method},
                            overrides=["continual.boundaries=hidden", *overrides]).continual.detector
    assert detector() == "change"
    assert detector("continual.detector=plateau") == "plateau"
    assert detector("continual.detector=none") == ""
    assert detector(method="reservoir") == ""
    with pytest.raises(UserError, match="give it a detector"):
        detector("continual.detector=none", method="ewc")


def test_the_runs_table_pools_a_folder_of_seeds_and_leaves_probes_apart(capsys):
    """benchmarks/task_free.py table on committed records (BENCHMARKS.md's 3RL rows): a folder of seeds of one
    setting is one row with its pooled figures and each run's final success; in a folder of probes only the
    setting with several seeds (the multi-task control) is pooled."""
    import runpy
    from pathlib import Path
    results = Path(__file__).resolve().parent.parent / "benchmarks" / "results"
    summarize_runs = runpy.run_path(str(results.parent / "task_free.py"))["summarize_runs"]
    summarize_runs(results / "task-free-3rl-issue")
    out = capsys.readouterr().out
    # seeds 3 and 4 came after plasticity.reset_temperature was added (metrics/grouping.py ADDED_KEYS)
    assert "| 5     | 0.51 [0.36, 0.67]" in out and "115 [90, 128]; 0.0 false, 0.0 missed" in out
    assert "seed1: final success per task (reach-e, reach-w) 0.50 / 0.00" in out
    assert "seed4: final success per task (reach-e, reach-w) 0.80 / 0.00" in out
    summarize_runs(results / "task-free-3rl-probes")
    out = capsys.readouterr().out
    assert "task-free-3rl-probes | 3     | 1.00 [1.00, 1.00]" in out and out.count("| 1     |") == 0
    assert "reset-mlp-seed0: final success per task (reach-e, reach-w) 1.00 / 0.00" in out
    summarize_runs(results / "task-free-3rl-reset")  # the whole-agent reset at the detection: both tasks, 5 of 5
    out = capsys.readouterr().out
    assert "| 5     | 0.87 [0.77, 0.96]" in out and "1.4 false, 0.0 missed" in out
    finals = [line.rsplit(" ", 3)[1::2] for line in out.splitlines() if ": final success per task" in line]
    assert len(finals) == 5 and all(float(e) >= 0.6 and float(w) >= 0.6 for e, w in finals), finals


def test_the_study_table_lists_each_runs_final_success(capsys):
    """benchmarks/task_free.py table on a committed study (BENCHMARKS.md, PM2R at 8,000 steps per task): each
    row's runs' final success per task in seed order, and their mean; a study without references says so."""
    import runpy
    from pathlib import Path
    results = Path(__file__).resolve().parent.parent / "benchmarks" / "results"
    summarize = runpy.run_path(str(results.parent / "task_free.py"))["summarize"]
    summarize(results / "task-free-pm2r-8k")
    out = capsys.readouterr().out
    assert "forward transfer n/a: the study has no single-task references" in out
    assert "finetune: 0.0/1.0, 0.0/1.0, 0.0/1.0, 0.0/1.0, 0.0/1.0; mean 0.00 / 1.00 (reach-e, reach-n@180)" in out
    assert "clear: 1.0/0.6, 1.0/0.0, 1.0/1.0, 1.0/1.0, 1.0/1.0; mean 1.00 / 0.72 (reach-e, reach-n@180)" in out
    assert "ewc + change: 0.1/1.0, 0.0/1.0, 0.5/0.9, 1.0/1.0, 0.5/0.7; mean 0.42 / 0.92" in out


def test_the_change_detector_replayed_over_recorded_returns_fires_where_the_runs_detected(capsys):
    """benchmarks/task_free.py returns on committed records: the detector replayed over a run's training returns
    (in the order the trainer fed them: by start step) raises as many alarms as every committed run with the
    change detector recorded, abrupt and blended, in the three studies read here; and its view of the switch
    (BENCHMARKS.md, the Meta-World section): on Meta-World the drop is about one standard deviation of the
    first stage's returns, on pointmass several."""
    import runpy
    from pathlib import Path

    from metrics.runs import read_run
    results = Path(__file__).resolve().parent.parent / "benchmarks" / "results"
    module = runpy.run_path(str(results.parent / "task_free.py"))
    view, fed_returns, replay = module["change_detector_view"], module["fed_returns"], module["replay"]
    checked = 0
    for folder in ("task-free-metaworld", "task-free-pointmass", "task-free-3rl-issue"):
        for config in sorted((results / folder).rglob("config.yaml")):
            run = read_run(config.parent)
            if (run.config.get("continual") or {}).get("detector") == "change":
                alarms = replay(fed_returns(run)[0], module["detector_settings"](run))
                assert len(alarms) == len(run.detected), (config.parent.name, alarms, run.detected)
                checked += 1
    assert checked == 6 + 10 + 5, checked  # blended ones among them: file order would miss one
    metaworld = results / "task-free-metaworld"
    abrupt = [read_run(metaworld / f"continual.boundaries=hidden,variant=ewc+change,continual.blend_steps=0,seed={s}")
              for s in range(3)]
    assert [run.detected for run in abrupt] == [(), (), (16000,)]
    views = [view(run) for run in abrupt]
    assert "a drop of 0.85 sd, Page-Hinkley needs 29 or more episodes, the stage has 20" in views[0]
    assert "a drop of 0.67 sd, Page-Hinkley needs 58 or more episodes, the stage has 20" in views[1]
    assert "a drop of 2.22 sd, Page-Hinkley needs 6 or more episodes, the stage has 20" in views[2]
    assert [v.split("replayed alarms after the next task's episode ")[1].split(";")[0] for v in views] == \
        ["none", "none", "[12]"]  # the 12th of handle-press-side's 500-step episodes ends at 16,000
    for seed in range(5):  # the task-hidden PM2: a drop of 3.9-6.4 sd, found in the next task's 2nd-4th episode
        run = read_run(results / "task-free-3rl-issue" / f"seed{seed}")
        alarms = view(run).split("replayed alarms after the next task's episode ")[1].split(";")[0]
        assert len(run.detected) == 1 and alarms in ("[2]", "[3]", "[4]"), (seed, alarms, run.detected)


def test_the_scales_compared_over_the_committed_records(capsys):
    """benchmarks/task_free.py detectors over the committed records (BENCHMARKS.md, "The change detector's
    scale"), on the Meta-World and the pointmass PM2 studies: the MAD scale finds more Meta-World switches and
    every blended pointmass one, where the standard deviation misses most of them, with no false alarm first
    in either study (its 2 over every record: BENCHMARKS.md)."""
    import runpy
    from pathlib import Path
    results = Path(__file__).resolve().parent.parent / "benchmarks" / "results"
    compare = runpy.run_path(str(results.parent / "task_free.py"))["compare_scales"]
    compare([results / "task-free-metaworld", results / "task-free-pointmass"])
    rows = {tuple(c.strip() for c in line.split("|")[:2]): [c.strip() for c in line.split("|")[2:6]]
            for line in capsys.readouterr().out.splitlines()[2:]}
    assert rows[("metaworld, abrupt", "std")] == ["15", "5", "0", "10"]
    assert rows[("metaworld, abrupt", "mad")] == ["15", "11", "0", "4"]
    assert rows[("pointmass, blended", "std")] == ["40", "4", "0", "36"]
    assert rows[("pointmass, blended", "mad")] == ["40", "40", "0", "0"]
    assert all(counts[2] == "0" for counts in rows.values())  # no false alarm first, either scale
