"""What an RLlib run reports back for our run log: every finished training episode's task,
success (info["success"] ever true), return and length (from the env's last info: the callback
sees only the episode's last chunk), sent to the driver through RLlib's
metrics as an item series (one item per episode, none dropped or averaged)."""

from __future__ import annotations

from ray.rllib.callbacks.callbacks import RLlibCallback

EPISODES_KEY = "polytask_episodes"


class EpisodeRecorder(RLlibCallback):
    def on_episode_end(self, *, episode, metrics_logger=None, **kwargs) -> None:
        record = episode.get_infos(-1).get("episode")  # the env's whole-episode statistics
        if record is not None:
            metrics_logger.log_value(EPISODES_KEY, tuple(record), reduce="item_series")
