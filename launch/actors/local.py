"""Actors as local processes (torch.multiprocessing, spawn): the default backend, no Ray needed.

Data flow: each actor process sends Chunks through its own pipe (a dead actor takes only its
own pipe with it); a pipe holds about one chunk, so a slow learner blocks the actors instead
of letting them buffer without bound. Weights go the other way through one shared-memory
vector with a version number: actors copy it when they are `max_policy_lag` versions behind.
"""

from __future__ import annotations

import dataclasses
import pickle
from multiprocessing.connection import wait

import torch
import torch.multiprocessing as mp

from launch.actors.actor import Actor, ActorSpec, Chunk
from launch.actors.processes import signals_ignored_by_children


class SharedWeights:
    """The latest policy parameters as one flat shared-memory tensor plus a version number."""

    def __init__(self, numel: int, ctx):
        self.flat = torch.zeros(numel).share_memory_()
        self.version = ctx.Value("q", 0, lock=False)
        self.lock = ctx.Lock()

    def publish(self, flat: torch.Tensor, version: int) -> None:
        with self.lock:
            self.flat.copy_(flat)
            self.version.value = version

    def read(self) -> tuple[torch.Tensor, int]:
        with self.lock:
            return self.flat.clone(), self.version.value


READY = "ready"


def _actor_main(spec: ActorSpec, weights: SharedWeights, conn, go, stop, chunk_steps: int,
                max_policy_lag: int) -> None:
    torch.set_num_threads(1)
    actor = Actor(spec)
    try:
        conn.send(READY)
        go.wait()  # all actors start stepping together: none runs ahead while others start up
        while not stop.is_set():
            if weights.version.value - actor.version >= max_policy_lag:
                actor.set_weights(*weights.read())
            conn.send(actor.collect(chunk_steps))  # blocks while the learner is behind
    except (BrokenPipeError, EOFError, ConnectionResetError):
        pass  # the learner is gone: exit quietly
    finally:
        actor.close()


@dataclasses.dataclass
class _Worker:
    spec: ActorSpec
    process: mp.Process
    conn: object
    steps: int = 0  # env steps it sent (a restart's blend clock goes on from them)


class LocalActorPool:
    def __init__(self, specs: list[ActorSpec], num_params: int, chunk_steps: int, max_policy_lag: int,
                 log=print):
        self.ctx = mp.get_context("spawn")  # fork is unsafe once torch has started its threads
        self.weights = SharedWeights(num_params, self.ctx)
        self.go, self.stop = self.ctx.Event(), self.ctx.Event()
        self.chunk_steps, self.max_policy_lag, self.log = chunk_steps, max_policy_lag, log
        self.workers: dict[int, _Worker] = {}
        self.restarts = 0
        for spec in specs:
            self._start(spec)
        for worker in list(self.workers.values()):  # wait until every actor has built its envs
            self._await_ready(worker)
        self.go.set()

    def _await_ready(self, worker: _Worker) -> None:
        try:
            message = worker.conn.recv()
        except (EOFError, OSError):
            raise RuntimeError(f"actor {worker.spec.actor_id} failed to start "
                               f"(exit code {worker.process.exitcode})") from None
        assert message == READY, message

    def _start(self, spec: ActorSpec) -> None:
        reader, writer = self.ctx.Pipe(duplex=False)
        process = self.ctx.Process(target=_actor_main, daemon=True, name=f"polytask-actor-{spec.actor_id}",
                                   args=(spec, self.weights, writer, self.go, self.stop, self.chunk_steps,
                                         self.max_policy_lag))
        with signals_ignored_by_children():
            process.start()
        writer.close()  # only the child writes: its death then reads as EOF here
        self.workers[spec.actor_id] = _Worker(spec, process, reader)
        self.log(f"actor {spec.actor_id} started (pid {process.pid}, tasks {list(spec.task_indices)})")

    def _restart(self, worker: _Worker, why: str) -> None:
        worker.conn.close()
        worker.process.join(timeout=5)
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join()
        self.restarts += 1
        self.log(f"actor {worker.spec.actor_id} died ({why}); restarting with fresh envs "
                 f"(restart {self.restarts})")
        self._start(dataclasses.replace(worker.spec, incarnation=worker.spec.incarnation + 1,
                                        steps_before=worker.spec.steps_before + worker.steps))

    def publish(self, weights, version: int) -> None:
        """weights(): the flat policy parameters (called here, so a pool that needs no copy skips it)."""
        self.weights.publish(weights(), version)

    def poll(self, timeout: float | None) -> list[Chunk]:
        """Chunks that arrived within `timeout` seconds (None: wait for at least one)."""
        by_conn = {w.conn: w for w in self.workers.values()}
        chunks = []
        for conn in wait(list(by_conn), timeout):
            worker = by_conn[conn]
            try:
                message = conn.recv()
                if message != READY:  # a restarted actor says it is ready, then steps
                    chunks.append(message)
                    worker.steps += len(message)
            except (EOFError, OSError, pickle.UnpicklingError) as e:
                self._restart(worker, f"exit code {worker.process.exitcode}" if worker.process.exitcode
                              is not None else type(e).__name__)
        return chunks

    def close(self) -> None:
        self.stop.set()
        for worker in self.workers.values():
            worker.conn.close()  # unblocks an actor waiting in send()
        for worker in self.workers.values():
            worker.process.join(timeout=5)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
