"""A live progress line: steps, env-steps/s, updates/s, success, ETA."""

from __future__ import annotations

import sys
import time


def format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class Progress:
    """Rates are over the last interval; ETA uses the rate since this process started."""

    def __init__(self, total_steps: int, start_step: int, start_updates: int, stream=sys.stdout):
        self.total, self.stream = total_steps, stream
        self.start_time = self.last_time = time.perf_counter()
        self.start_step = self.last_step = start_step
        self.last_updates = start_updates
        self.tty = stream.isatty()

    def rates(self, step: int, updates: int) -> tuple[float, float]:
        """(env-steps/s, updates/s) since the previous call."""
        now = time.perf_counter()
        dt = max(now - self.last_time, 1e-9)
        rates = ((step - self.last_step) / dt, (updates - self.last_updates) / dt)
        self.last_time, self.last_step, self.last_updates = now, step, updates
        return rates

    def line(self, step: int, steps_per_s: float, updates_per_s: float,
             train_success: float | None, eval_success: float | None) -> str:
        elapsed = time.perf_counter() - self.start_time
        overall = (step - self.start_step) / max(elapsed, 1e-9)
        eta = (self.total - step) / overall if overall > 0 else float("inf")
        parts = [f"step {step:,}/{self.total:,} ({100 * step / self.total:.1f}%)",
                 f"{steps_per_s:,.0f} env-steps/s", f"{updates_per_s:,.1f} updates/s"]
        if train_success is not None:
            parts.append(f"train success {train_success:.2f}")
        if eval_success is not None:
            parts.append(f"eval success {eval_success:.2f}")
        parts.append(f"ETA {format_duration(eta) if eta != float('inf') else '?'}")
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
