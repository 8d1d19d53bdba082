"""A live progress line: steps, env-steps/s, updates/s, success, ETA.

The ETA is honest about the two speeds of a run: during a warm-up actors step at random and
nothing is learned (Meta-World: ~2,000 env-steps/s), afterwards updates bound the speed (MT10
defaults on 2 CPU cores: ~95 env-steps/s). Wall time is attributed to the phase it was spent in,
and the ETA is remaining warm-up steps / warm-up rate + remaining learning steps / learning rate.
Until a learning rate has been measured it says "estimating" instead of extrapolating the
warm-up's speed.

What bounds the run: with actor workers, the learner's time in the learning phase is either
spent waiting for experience (polling the actors) or updating. If it waits for a quarter of
its time or more, the actors bound the run (add actors or envs); otherwise the learner does
(a faster device, fewer updates). The line shows it since the previous line; learners.json
over the whole run.
"""

from __future__ import annotations

import sys
import time


def format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class Progress:
    """Rates on the line are over the last interval; the ETA uses each phase's rate since this
    process started."""

    def __init__(self, total_steps: int, start_step: int, start_updates: int, stream=None):
        self.total, self.stream = total_steps, stream or sys.stdout
        self.last_time = self._tick = time.perf_counter()
        self.last_step, self.last_updates = start_step, start_updates
        self.phase = {"warmup": [0, 0.0], "learning": [0, 0.0]}  # phase -> [env steps, seconds]
        self.tty = self.stream.isatty()
        self.learner_time = {"line": [0.0, 0.0], "run": [0.0, 0.0]}  # [waiting for experience, updating]

    def learner(self, waited: float, updated: float) -> None:
        """Learning-phase time of the learner: waiting for experience, and updating."""
        for record in self.learner_time.values():
            record[0] += waited
            record[1] += updated

    def bound(self, span: str = "line") -> str | None:
        """'learner' or 'actors' with the learner's waiting share, over `span` (line: since the
        previous line, then restarted; run: the whole run); None before learning started."""
        waited, updated = self.learner_time[span]
        if span == "line":
            self.learner_time["line"] = [0.0, 0.0]
        if waited + updated <= 0:
            return None
        share = waited / (waited + updated)
        return f"{'actors' if share >= 0.25 else 'learner'} (learner waited {100 * share:.0f}% for experience)"

    def advance(self, steps: int, learning: bool) -> None:
        """Attribute the time since the previous call, and `steps` new env steps, to a phase."""
        now = time.perf_counter()
        record = self.phase["learning" if learning else "warmup"]
        record[0] += steps
        record[1] += now - self._tick
        self._tick = now

    def eta(self, warmup_left: int, learning_left: int) -> float | None:
        """Seconds to go for the given remaining steps of each phase; None while a needed rate
        is unknown (no learning step measured yet)."""
        def rate(name):
            steps, seconds = self.phase[name]
            return steps / seconds if steps and seconds > 0 else None
        learning, warmup = rate("learning"), rate("warmup")
        if learning_left and learning is None:
            return None
        warmup = warmup or learning  # a resumed run may not have seen a warm-up yet
        return (warmup_left / warmup if warmup_left else 0.0) + (learning_left / learning if learning_left else 0.0)

    def rates(self, step: int, updates: int) -> tuple[float, float]:
        """(env-steps/s, updates/s) since the previous call."""
        now = time.perf_counter()
        dt = max(now - self.last_time, 1e-9)
        rates = ((step - self.last_step) / dt, (updates - self.last_updates) / dt)
        self.last_time, self.last_step, self.last_updates = now, step, updates
        return rates

    def line(self, step: int, steps_per_s: float, updates_per_s: float,
             train_success: float | None, eval_success: float | None, eta: float | None,
             bound: str | None = None) -> str:
        parts = [f"step {step:,}/{self.total:,} ({100 * step / self.total:.1f}%)",
                 f"{steps_per_s:,.0f} env-steps/s", f"{updates_per_s:,.1f} updates/s"]
        if bound is not None:
            parts.append(f"bound by {bound}")
        if train_success is not None:
            parts.append(f"train success {train_success:.2f}")
        if eval_success is not None:
            parts.append(f"eval success {eval_success:.2f}")
        parts.append(f"ETA {format_duration(eta)}" if eta is not None else "ETA estimating (warm-up)")
        return " | ".join(parts)

    def show(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r\033[K" + text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def done(self, text: str) -> None:
        self.stream.write(("\r\033[K" if self.tty else "") + text + "\n")
        self.stream.flush()
