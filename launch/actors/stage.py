"""A stage's actors, as the learner's loop (launch/loop/trainer.py) sees them: every stage gets a fresh
actor source on its tasks, sized to them (launch/machine.py), acting at random until the first
weights are published to it; experience comes back in chunks, of which the loop keeps what fits in
the stage's budget. Counted over the whole run: env steps per actor, actor restarts, and the
policy-version lag of the chunks since the last log."""

from __future__ import annotations

import time
from collections import Counter

import numpy as np
import torch

from launch.actors import actor_specs, make_actor_source
from launch.actors.actor import Chunk
from launch.actors.weights import WeightPublisher
from launch.machine import plan_workers


class StageActors:
    def __init__(self, cfg, rank: int, num_tasks: int, cores: tuple[int, int], policy: torch.nn.Module, log=print,
                 stages: tuple = (), hide_tasks: bool = False):
        """num_tasks: the policy's; cores: launch/machine.py free_cores(), measured before any worker of the
        run started; stages: the schedule's (blended switches draw each episode's task from them);
        hide_tasks (hidden boundaries): the learner's replay gets every row as task 0."""
        self.stages, self.hide_tasks = stages, hide_tasks
        self.cfg, self.rank, self.num_tasks, self.cores, self.log = cfg, rank, num_tasks, cores, log
        self.policy = policy
        self.publisher = WeightPublisher(policy, cfg.runtime.backend)
        self.source, self.plan, self.restarts_before = None, None, 0
        self.version = 0  # weight version the actors see; 0 = no weights yet: act at random
        self.steps_by_actor: Counter = Counter()
        self.lags: list[int] = []  # policy-version lag of the chunks received since the last log
        self.returns: list[float] = []  # finished episodes' returns since the last take_returns, as they came

    def start(self, tasks: list[int], step: int, device: torch.device) -> None:
        """Fresh actors on `tasks` from env step `step`, sized to them; the previous stage's are closed."""
        if self.source is not None:
            self.restarts_before += self.source.restarts
            self.source.close()
        self.version = 0
        self.publisher.reset()
        self.plan = plan_workers(self.cfg, device, self.cores, len(tasks))  # sized to the stage's tasks
        torch.set_num_threads(self.plan.threads)
        specs = actor_specs(self.cfg, self.plan, tasks, self.rank, self.num_tasks, step, self.stages)
        self.source = make_actor_source(self.cfg.runtime, specs, self.policy, log=self.log)

    def collect(self, room: int, replay, episodes: dict) -> tuple[int, float]:
        """Poll the actors (up to 1 s) and add what they sent to replay, up to `room` env steps (a
        stage ends exactly at its budget: later experience is dropped); finished episodes go to
        episodes[task]. Returns the env steps added and the seconds spent polling."""
        polled = time.perf_counter()
        chunks = self.source.poll(timeout=1.0)
        polled = time.perf_counter() - polled
        added = 0
        for chunk in chunks:
            if room - added > 0:
                added += self._ingest(chunk.head(room - added), replay, episodes)
        return added, polled

    def _ingest(self, chunk: Chunk, replay, episodes: dict) -> int:
        task = np.zeros_like(chunk.task) if self.hide_tasks else chunk.task  # the stream is one task to the learner
        replay.add(task, chunk.obs, chunk.action, chunk.reward, chunk.next_obs, chunk.terminated,
                   stream=chunk.stream, first=chunk.first)
        for episode in chunk.episodes:
            episodes[episode.task].append(episode)
            self.returns.append(episode.ret)
        self.steps_by_actor[chunk.actor_id] += len(chunk)
        self.lags.append(self.version - chunk.policy_version)
        return len(chunk)

    def publish(self, version: int, wait: bool = False) -> bool:
        """Hand the policy's weights to the actors as `version`. False while a GPU learner's copy is
        still on its way (launch/actors/weights.py); `wait` publishes at once."""
        published = self.publisher(self.source, version, wait)
        if published is not None:
            self.version = published
        return published is not None

    def take_returns(self) -> list[float]:
        """The finished training episodes' returns since the last call, in arrival order."""
        returns, self.returns = self.returns, []
        return returns

    def take_lags(self) -> list[int]:
        """The lags counted since the last call."""
        lags, self.lags = self.lags, []
        return lags

    def restarts(self) -> int:
        """Actor restarts over the whole run (every stage has its own actors)."""
        return self.restarts_before + self.source.restarts

    def close(self) -> None:
        if self.source is not None:
            self.source.close()
