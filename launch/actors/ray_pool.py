"""Actors as Ray actors: `--backend ray`, joining a cluster with `--ray-address` or starting a
private local one (dashboard off, bound to loopback, temp files under the run's temp dir).

Each Ray actor wraps the same `Actor` as the local backend. The learner keeps `in_flight`
collect calls per actor (bounded: memory stays flat) and passes weights only when the
actor is `max_policy_lag` versions behind. A lost actor (killed process, node failure,
env exception) is replaced by a fresh one and counted.
"""

from __future__ import annotations

import dataclasses
import os

import torch

from launch.actors.actor import Actor, ActorSpec, Chunk


class RayActorWorker:
    def __init__(self, spec: ActorSpec):
        torch.set_num_threads(1)
        self.actor = Actor(spec)

    def pid(self) -> int:
        return os.getpid()

    def collect(self, steps: int, flat: torch.Tensor | None, version: int) -> Chunk:
        if flat is not None:
            self.actor.set_weights(flat, version)
        return self.actor.collect(steps)


def init_ray(address: str, num_actors: int, temp_dir: str) -> None:
    import ray

    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
        return
    # A private single-machine cluster: token auth would write ~/.ray/auth_token; it is only
    # reachable on loopback, so auth is off for it (unless the user set RAY_AUTH_MODE).
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=max(os.cpu_count() or 1, num_actors), include_dashboard=False,
             _node_ip_address="127.0.0.1", _temp_dir=temp_dir, log_to_driver=False,
             configure_logging=False)


class RayActorPool:
    def __init__(self, specs: list[ActorSpec], chunk_steps: int, max_policy_lag: int, address: str,
                 temp_dir: str, log=print, in_flight: int = 2):
        import ray

        self.ray = ray
        init_ray(address, len(specs), temp_dir)
        self.remote_cls = ray.remote(num_cpus=1, max_restarts=0)(RayActorWorker)
        self.chunk_steps, self.max_policy_lag, self.log, self.in_flight = chunk_steps, max_policy_lag, log, in_flight
        self.latest: tuple[torch.Tensor | None, int] = (None, 0)
        self.latest_ref = None
        self.sent_version: dict[int, int] = {}
        self.handles: dict[int, object] = {}
        self.specs: dict[int, ActorSpec] = {}
        self.pending: dict[object, int] = {}  # future -> actor id
        self.steps: dict[int, int] = {}  # actor id -> env steps its current incarnation sent
        self.restarts = 0
        self._start(specs)

    def _start(self, specs: list[ActorSpec]) -> None:
        """Create the actors, wait until all have built their envs, then start them together."""
        for spec in specs:
            self.handles[spec.actor_id] = self.remote_cls.remote(spec)
            self.specs[spec.actor_id], self.sent_version[spec.actor_id] = spec, 0
        pids = self.ray.get([self.handles[spec.actor_id].pid.remote() for spec in specs])
        for spec, pid in zip(specs, pids):
            self.log(f"actor {spec.actor_id} started (Ray, pid {pid}, tasks {list(spec.task_indices)})")
        for spec in specs:
            for _ in range(self.in_flight):
                self._submit(spec.actor_id)

    def _submit(self, actor_id: int) -> None:
        flat, version = self.latest
        send = None
        if flat is not None and version - self.sent_version[actor_id] >= self.max_policy_lag:
            if self.latest_ref is None:
                self.latest_ref = self.ray.put(flat)  # one copy in the object store per version
            send, self.sent_version[actor_id] = self.latest_ref, version
        future = self.handles[actor_id].collect.remote(self.chunk_steps, send, version)
        self.pending[future] = actor_id

    def publish(self, weights, version: int) -> None:
        self.latest, self.latest_ref = (weights(), version), None

    def poll(self, timeout: float | None) -> list[Chunk]:
        ready, _ = self.ray.wait(list(self.pending), num_returns=1, timeout=timeout)
        if ready:  # take everything else that is already done too
            more, _ = self.ray.wait([f for f in self.pending if f not in ready],
                                    num_returns=len(self.pending) - len(ready), timeout=0)
            ready = ready + more
        chunks, dead = [], {}
        for future in ready:
            actor_id = self.pending.pop(future)
            try:
                chunks.append(self.ray.get(future))
                self.steps[actor_id] = self.steps.get(actor_id, 0) + len(chunks[-1])
            except (self.ray.exceptions.RayActorError, self.ray.exceptions.RayTaskError) as e:
                dead.setdefault(actor_id, type(e).__name__)
                continue
            if actor_id not in dead:
                self._submit(actor_id)
        for actor_id, why in dead.items():
            self._restart(actor_id, why)
        return chunks

    def _restart(self, actor_id: int, why: str) -> None:
        for future in [f for f, a in self.pending.items() if a == actor_id]:
            del self.pending[future]
        self.ray.kill(self.handles[actor_id], no_restart=True)
        self.restarts += 1
        self.log(f"actor {actor_id} died ({why}); restarting with fresh envs (restart {self.restarts})")
        spec = self.specs[actor_id]  # a restart's blend clock goes on from the steps it sent
        self._start([dataclasses.replace(spec, incarnation=spec.incarnation + 1,
                                         steps_before=spec.steps_before + self.steps.pop(actor_id, 0))])

    def close(self) -> None:
        for handle in self.handles.values():
            self.ray.kill(handle, no_restart=True)
        self.ray.shutdown()
