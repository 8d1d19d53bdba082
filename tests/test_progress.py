"""The progress line's ETA: honest about the fast warm-up and the update-bound rest."""

import io

from launch.progress import Progress


def test_eta_is_estimating_until_a_learning_rate_is_measured_then_adds_both_phases():
    progress = Progress(total_steps=20_000_000, start_step=0, start_updates=0, stream=io.StringIO())
    progress.phase["warmup"] = [50_000, 25.0]       # random actions: 2,000 env-steps/s
    assert progress.eta(warmup_left=0, learning_left=19_950_000) is None  # not 20M / 2,000 = 2.8 h
    line = progress.line(50_000, 2000.0, 0.0, None, None, progress.eta(0, 19_950_000))
    assert "ETA estimating (warm-up)" in line
    progress.phase["learning"] = [9_500, 100.0]     # updates bound the run: 95 env-steps/s
    # 19.95M / 95 = 210,000 s, plus a later stage's 10k warm-up steps at 2,000/s = 5 s
    assert progress.eta(warmup_left=10_000, learning_left=19_950_000) == 210_000 + 5
    assert "ETA 58h20m" in progress.line(59_500, 95.0, 9.5, None, None, 210_005)


def test_a_resumed_run_without_a_warmup_rate_uses_the_learning_rate():
    progress = Progress(1000, 500, 0, stream=io.StringIO())
    progress.phase["learning"] = [100, 10.0]
    assert progress.eta(warmup_left=100, learning_left=400) == 50.0


def test_advance_attributes_time_and_steps_to_the_phase():
    progress = Progress(1000, 0, 0, stream=io.StringIO())
    progress.advance(40, learning=False)
    progress.advance(10, learning=True)
    assert progress.phase["warmup"][0] == 40 and progress.phase["learning"][0] == 10
    assert progress.phase["warmup"][1] >= 0 and progress.phase["learning"][1] >= 0
