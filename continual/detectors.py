"""Boundary detectors: where a stream of tasks seems to switch, read from the data alone
(continual.boundaries=hidden, `continual.detector`). The task-aware strategies (EWC, online EWC,
L2, SI, MAS, PackNet) run their end-of-task step at each detection (launch/loop/learning.py).

plateau  Task-Free Continual Learning's rule (Aljundi, Kelchtermans, Tuytelaars, CVPR 2019; code
         `kkelchte/task_free_continual_learning`, method.py lines 147-160), on the learner's loss: a
         window of the last `detector_window` (5) loss values; armed at the start; each value, first
         re-arm if disarmed and the window mean exceeds the last plateau's mean + sqrt(its variance)
         (a new peak), then fire if armed and the window's mean and variance are below their
         thresholds (a plateau), remembering the window's mean and variance and disarming. Both
         checks may act on one value; the window is used before it is full, as in the reference.
         Deviations:
         - a value is the mean critic TD loss over `detector_block` learner updates (the reference:
           one batch's summed loss before its first of 5 gradient steps; a SAC update's loss is far
           noisier than one supervised batch's);
         - the thresholds are scale-free (SAC's TD loss has no fixed scale; the reference's 0.2 and
           0.1 apply to a summed squared error on one-hot targets): a plateau is a window mean below
           `plateau_mean` x the peak and a variance below `plateau_variance` x peak^2, where the peak
           is the highest window mean since the detector was last armed;
         - the defaults, 0.2 and 0.1 of the peak, are looser than the reference's: its first window
           mean is 18.3 (measured by running the reference's main.py at its settings), so its 0.2
           and 0.1 are 0.011 and 3e-4 of the peak. At those fractions SAC's TD loss rarely
           plateaus within a stage (block values, printed by a debug line and replayed through the
           rule: no detection in an EWC run on the task-hidden PM2 at 6,000 steps per task nor in a
           TF-MAS run on PM2R at 3,000; a TF-MAS run at 8,000 steps per task fires once, at update
           3,400, in the first stage).
         What it does on SAC's TD loss: at the start the peak is the first block's value, and with
         plateau_mean = 1 / window (0.2 = 1/5) no window holding that value has a mean below a
         fifth of it. So the first plateau comes `detector_window` + 1 blocks after the updates
         begin at the earliest (600 updates), and the critic's first fit makes it come exactly then
         in every pointmass and Meta-World run of our task-free studies (env steps 900 and 1,600,
         the warm-up plus 600 updates), whatever the policy has learned. The loss then stays flat
         and the rule seldom re-arms; after a switch's jump it fires once the loss settles (the
         task-hidden PM2: 2,300 env steps after the switch, benchmarks/results/task-free-pm2r-probes/pm2-hidden).
change   Page-Hinkley's test for a drop in the mean of finished training episodes' returns (Page
         1954; Hinkley 1971), scale-free: each return is standardised by the mean and standard
         deviation of the returns since the last alarm (at least `change_min_episodes` of them before
         an alarm can fire); the statistic m_n = sum_i ((mean_i - x_i) / std_i - delta), with the
         running mean and standard deviation at episode i (the online form; delta:
         `change_tolerance` standard deviations), is compared with its running minimum, and an alarm
         fires when m_n - min_k m_k > `change_threshold` standard deviations. A drop of d standard
         deviations is flagged after change_threshold / (d - change_tolerance) episodes or more;
         rising returns (learning) never fire it. After an alarm every statistic starts afresh.
         `change_scale=mad` standardises by the median and the median absolute deviation (x 1.4826,
         a normal's standard deviation) of the returns since the last alarm (the last 1,000 at most)
         instead: a few outlying returns (Meta-World's rare successful episodes) then no longer
         widen the scale a drop is measured in. Replayed over the committed task-free records
         (benchmarks/task_free.py detectors) it finds more switches, abrupt and blended, and raises
         2 false alarms in 192 abrupt pointmass streams, none with std (BENCHMARKS.md); `std` stays
         the default. While more than half the returns since the last alarm are equal (e.g. all 0)
         the MAD is 0 and the detector waits (its statistic unchanged) until they differ.

Each detector is fed by the trainer (`observe_loss` after each learner update, `observe_return`
per finished training episode) and says True where it detects a boundary; its state is saved with
the run (a resumed run detects as if never stopped).
"""

from __future__ import annotations

import math
import statistics
from collections import deque


class PlateauDetector:
    reads_losses = True  # the trainer reads each update's critic loss for it (a host sync)

    def __init__(self, window: int = 5, mean_fraction: float = 0.2, variance_fraction: float = 0.1,
                 block: int = 100):
        self.window, self.mean_fraction, self.variance_fraction, self.block = window, mean_fraction, \
            variance_fraction, block
        self.losses: deque[float] = deque(maxlen=window)
        self.armed = True                      # the reference's new_peak_detected, True at the start
        self.peak = -math.inf                  # the highest window mean since it was last armed
        self.last_mean = self.last_variance = 0.0  # the window at the last plateau
        self.block_sum, self.block_count = 0.0, 0

    def observe_value(self, value: float) -> bool:
        """One loss value (a block's mean): True if a plateau is detected here."""
        self.losses.append(value)
        n = len(self.losses)
        mean = sum(self.losses) / n
        variance = sum((x - mean) ** 2 for x in self.losses) / n  # population variance, as np.var
        if not self.armed and mean > self.last_mean + math.sqrt(self.last_variance):
            self.armed, self.peak = True, mean
        self.peak = max(self.peak, mean) if self.armed else self.peak
        if self.armed and mean < self.mean_fraction * self.peak and variance < self.variance_fraction * self.peak ** 2:
            self.last_mean, self.last_variance, self.armed = mean, variance, False
            return True
        return False

    def observe_loss(self, loss: float) -> bool:
        """One learner update's loss; a value enters the window every `block` updates."""
        self.block_sum += loss
        self.block_count += 1
        if self.block_count < self.block:
            return False
        value = self.block_sum / self.block_count
        self.block_sum, self.block_count = 0.0, 0
        return self.observe_value(value)

    def observe_return(self, episode_return: float) -> bool:
        return False

    def state_dict(self) -> dict:
        return {"losses": list(self.losses), "armed": self.armed, "peak": self.peak, "last_mean": self.last_mean,
                "last_variance": self.last_variance, "block_sum": self.block_sum, "block_count": self.block_count}

    def load_state_dict(self, state: dict) -> None:
        self.losses = deque(state["losses"], maxlen=self.window)
        for key in ("armed", "peak", "last_mean", "last_variance", "block_sum", "block_count"):
            setattr(self, key, state[key])


class ChangeDetector:
    reads_losses = False  # it reads episode returns
    MAD_WINDOW = 1000     # scale=mad: the newest returns since the last alarm it keeps
    MAD_TO_STD = 1.4826   # a normal distribution's standard deviation per median absolute deviation

    def __init__(self, threshold: float = 10.0, tolerance: float = 0.5, min_episodes: int = 20,
                 scale: str = "std"):
        if scale not in ("std", "mad"):
            raise ValueError(f"ChangeDetector scale must be std or mad, not {scale!r}")
        self.threshold, self.tolerance, self.min_episodes, self.scale = threshold, tolerance, min_episodes, scale
        self.reset()

    def reset(self) -> None:
        self.count, self.mean, self.squares = 0, 0.0, 0.0  # Welford's running mean and sum of squares
        self.returns: deque[float] = deque(maxlen=self.MAD_WINDOW)  # scale=mad
        self.statistic, self.minimum = 0.0, 0.0

    def _centre_and_spread(self, x: float) -> tuple[float, float]:
        """The centre and spread of the returns since the last alarm, x (the count-th) included: mean and
        standard deviation (Welford's update with x), or (scale=mad) median and 1.4826 x the MAD of the
        window, x appended."""
        if self.scale == "mad":
            self.returns.append(x)
            median = statistics.median(self.returns)
            return median, self.MAD_TO_STD * statistics.median(abs(r - median) for r in self.returns)
        delta = x - self.mean
        self.mean += delta / self.count
        self.squares += delta * (x - self.mean)
        return self.mean, math.sqrt(self.squares / self.count) if self.count > 1 else 0.0

    def observe_return(self, x: float) -> bool:
        """One finished episode's return: True if a drop in the mean is detected here."""
        self.count += 1
        centre, spread = self._centre_and_spread(x)
        if spread <= 0.0:
            return False
        self.statistic += (centre - x) / spread - self.tolerance
        self.minimum = min(self.minimum, self.statistic)
        if self.count >= self.min_episodes and self.statistic - self.minimum > self.threshold:
            self.reset()
            return True
        return False

    def observe_loss(self, loss: float) -> bool:
        return False

    def state_dict(self) -> dict:
        return {**{k: getattr(self, k) for k in ("count", "mean", "squares", "statistic", "minimum")},
                "returns": list(self.returns)}

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            if key != "returns":
                setattr(self, key, value)
        self.returns = deque(state.get("returns", ()), maxlen=self.MAD_WINDOW)  # absent: saved before scale=mad


def make_detector(cfg):
    """The detector `cfg` (launch.config.ContinualConfig) names, or None."""
    if cfg.detector == "plateau":
        return PlateauDetector(cfg.detector_window, cfg.plateau_mean, cfg.plateau_variance, cfg.detector_block)
    if cfg.detector == "change":
        return ChangeDetector(cfg.change_threshold, cfg.change_tolerance, cfg.change_min_episodes, cfg.change_scale)
    return None
