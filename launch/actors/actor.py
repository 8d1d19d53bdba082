"""The actor: steps a batch of envs over its share of the tasks with a CPU copy of the policy
and returns experience in chunks. Backend-agnostic: a local process, a Ray actor and the
single-process trainer all drive this same class.

An actor is built from a picklable `ActorSpec` (suite name, task indices, seeds, network shape)
so that it can be rebuilt anywhere, e.g. after a crash. Until it receives weights (version 0)
it acts uniformly at random: that is the warm-up phase.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from agents import seeding
from agents.context import env_memories
from agents.models import build_policy, network_task
from agents.networks import SquashedGaussianActor
from agents.recurrent import EnvMemories
from agents.sac.config import SACConfig
from continual.schedule import blend_shares
from envs import make_suite
from envs.mixture import MixtureEnv
from envs.pool import EnvPool, Episode

STREAMS_PER_ACTOR = 1 << 20  # stream ids: actor_id * this + env index (actor ids are rank * 1000 + a)


@dataclass(frozen=True)
class ActorSpec:
    actor_id: int
    suite: str
    tasks: str                      # as given to make_suite: the suite's full task list
    seed: int
    task_indices: tuple[int, ...]   # the tasks this actor steps
    num_envs: int                   # envs, assigned round-robin over task_indices
    sac: SACConfig                  # network shape of the policy copy
    num_tasks: int                  # the policy's tasks (1 with hidden boundaries: agents/models.py network_task)
    incarnation: int = 0            # bumped on restart: fresh env seeds
    start_step: int = 0             # a resumed run's actors get fresh seeds too
    goal_observable: bool = True    # env.goal_observable
    target_visible: bool = False    # env.target_visible
    blend_steps: int = 0            # continual.blend_steps: each episode's task drawn from the ramp
    stages: tuple = ()              # ... of these stages (continual/schedule.py Stage), at the global step
    actors: int = 1                 # ... estimated as start_step + actors x this actor's steps
    steps_before: int = 0           # ... counting those of its earlier incarnations (a restart)


@dataclass
class Chunk:
    """A batch of transitions from one actor (rows in stepping order)."""
    actor_id: int
    policy_version: int
    task: np.ndarray
    obs: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    next_obs: np.ndarray
    terminated: np.ndarray
    episodes: list[Episode] = field(default_factory=list)
    episode_ends: list[int] = field(default_factory=list)  # rows up to and including each episode's end
    stream: np.ndarray | None = None  # each row's env (an id unique in the run): sequence replay links its rows
    first: np.ndarray | None = None   # each row's obs starts its episode

    def __len__(self) -> int:
        return len(self.task)

    def head(self, rows: int) -> Chunk:
        """The first `rows` transitions and the episodes that ended within them."""
        if rows >= len(self):
            return self
        keep = [i for i, end in enumerate(self.episode_ends) if end <= rows]
        return Chunk(self.actor_id, self.policy_version, self.task[:rows], self.obs[:rows], self.action[:rows],
                     self.reward[:rows], self.next_obs[:rows], self.terminated[:rows],
                     [self.episodes[i] for i in keep], [self.episode_ends[i] for i in keep],
                     None if self.stream is None else self.stream[:rows],
                     None if self.first is None else self.first[:rows])


class Actor:
    """`policy`: share this module instead of holding a copy (the single-process backend)."""

    def __init__(self, spec: ActorSpec, policy: SquashedGaussianActor | None = None):
        self.spec = spec
        suite = make_suite(spec.suite, spec.tasks, spec.seed, spec.goal_observable, spec.target_visible)
        tasks = [suite.tasks[i] for i in spec.task_indices]
        env_tasks = [tasks[k % len(tasks)] for k in range(spec.num_envs)]
        def seed(*index: int) -> int:  # this incarnation's streams: a restart or resume gets fresh ones
            return seeding.seed_for(spec.seed, "actor", spec.actor_id, spec.incarnation, spec.start_step, *index)

        self.steps = 0  # env steps this actor took
        if spec.blend_steps:  # blended switches: every env slot runs the ramp's task of each episode
            blend = np.random.default_rng(seeding.seed_for(spec.seed, "blend", spec.actor_id, spec.incarnation,
                                                           spec.start_step))
            envs = [MixtureEnv(lambda task, k=k: suite.make_env(suite.tasks[task], seed(k, task)),
                               lambda: self._blended_task(blend)) for k in range(spec.num_envs)]
        else:
            envs = [suite.make_env(t, seed(k)) for k, t in enumerate(env_tasks)]
        self.pool = EnvPool(envs, [t.index for t in env_tasks], self.clock)
        self.streams = spec.actor_id * STREAMS_PER_ACTOR + np.arange(spec.num_envs)  # each env's stream id
        self.action_dim = suite.action_dim
        self.rng = np.random.default_rng(seed(1_000_000))                  # random actions (warm-up)
        self.generator = torch.Generator().manual_seed(seed(1_000_001))   # policy noise
        if policy is None:
            policy = build_policy(spec.sac, suite.obs_dim, suite.action_dim, spec.num_tasks).requires_grad_(False)
        self.policy = policy
        self.device = next(policy.parameters()).device
        # a recurrent policy's memory of each env's episode so far (sac.memory)
        self.memories = env_memories(policy, spec.num_envs, suite.obs_dim, suite.action_dim)
        self.version = 0

    def clock(self) -> int:
        """The run's env step now: exact with one actor, estimated with several (start + actors x own steps)."""
        return self.spec.start_step + self.spec.actors * (self.spec.steps_before + self.steps)

    def _blended_task(self, rng: np.random.Generator) -> int:
        """The next episode's task, drawn from the blend ramp at the (estimated) global env step."""
        shares = blend_shares(self.spec.stages, self.spec.blend_steps, self.clock())
        tasks = list(shares)
        return int(tasks[rng.choice(len(tasks), p=np.array([shares[t] for t in tasks]))])

    def set_weights(self, flat: torch.Tensor, version: int) -> None:
        torch.nn.utils.vector_to_parameters(flat, self.policy.parameters())
        if self.version == 0 and isinstance(self.memories, EnvMemories):  # the policy takes over mid-episode:
            self.memories.start(slice(None))  # from a zero state, as a training window that starts there
        self.version = version

    def _actions(self, obs: np.ndarray, task: np.ndarray) -> np.ndarray:
        memories = self.memories
        if memories is not None:
            memories.start(torch.from_numpy(self.pool.first).to(self.device))
        if self.version == 0:
            action = self.rng.uniform(-1, 1, (len(obs), self.action_dim)).astype(np.float32)
            if memories is not None:
                memories.acted(torch.from_numpy(obs).to(self.device), torch.from_numpy(action).to(self.device))
            return action
        obs_t = torch.from_numpy(obs).to(self.device)
        task_t = torch.from_numpy(network_task(task, self.spec.num_tasks)).to(self.device)
        if memories is not None:
            action = memories.act(obs_t, task_t, slice(None), deterministic=False, generator=self.generator)
        else:
            action = self.policy.act(obs_t, task_t, deterministic=False, generator=self.generator)
        return action.cpu().numpy()

    def collect(self, min_steps: int) -> Chunk:
        """Step every env in lockstep (one batched inference per round) until >= min_steps."""
        parts, episodes, ends = [], [], []
        steps = 0
        while steps < min_steps:
            task = self.pool.task_ids.copy()  # a blended slot's task changes in place at its next episode
            action = self._actions(self.pool.obs, task)
            r = self.pool.step(action)
            if self.memories is not None:
                self.memories.rewarded(slice(None), r.reward)
            parts.append((task, r.obs, action, r.reward, r.next_obs, r.terminated, self.streams, r.first))
            steps += len(task)
            self.steps += len(task)
            episodes += r.finished
            ends += [steps] * len(r.finished)  # an episode ends within this round's rows
        *columns, stream, first = [np.concatenate(c) for c in zip(*parts)]
        return Chunk(self.spec.actor_id, self.version, *columns, episodes=episodes, episode_ends=ends,
                     stream=stream, first=first)

    def close(self) -> None:
        self.pool.close()
