"""What a trainer's checkpoint holds, and how it is written and read back (launch/trainer.py
calls these; the file format is launch/checkpoint.py's).

A checkpoint at env step S holds the learner (networks, optimizers, temperatures, balancers),
the continual strategy and auxiliary tasks, and per learner rank: its env steps, RNG states,
replay reward statistics, its balancers' state (a loss weighting learns the weights of the rank's
own tasks only: uncertainty weighting's s_i live on the task's rank) and, when ranks' optimizer
states differ (local SGD without averaged moments), its own optimizer state. Everything logged
at steps <= S is logged before it is written; a preempted run also keeps the evaluations it
had asked for but not received, and its resume asks for them again.
"""

from __future__ import annotations

from collections import Counter

import torch

from continual.schedule import stage_at
from launch import checkpoint
from launch.checkpoint import to_device
from launch.errors import UserError


def save(trainer, preempted: bool = False) -> None:
    """Every rank calls this at the same step (it averages local-SGD ranks and gathers every
    rank's state); rank 0 writes. A normal checkpoint waits for pending evaluations; a preempted
    one records them instead (an evaluation may take minutes, a grace period is ~30 s)."""
    t = trainer
    t._check_finite(weights=True)  # collective: all ranks stop together
    t.learner.synchronizer.sync_point(t.learner)
    rng = {"torch": torch.get_rng_state(), "numpy": t.rng.bit_generator.state}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    stats = torch.from_numpy(t.replay.reward_stats.copy())  # small: kept even when replay is not
    optimizers = (t.learner.optimizer_state_dicts() if t.learner.synchronizer.local_optimizer_state else None)
    balancers = {net: b.state_dict() for net, b in t.learner.balancers.items()}  # per rank: its tasks' weights
    gathered = t.dist.gather_objects((t.local_step, rng, dict(t.steps_by_actor), stats, optimizers, balancers))
    if not t.dist.is_main:
        return
    t._write_evals(t.evaluator.results() if preempted else t.evaluator.wait())
    t.runlog.flush()
    state = {"learner": t.learner.state_dict(), "rank_steps": [g[0] for g in gathered],
             "rng": [g[1] for g in gathered],
             "steps_by_actor": {str(k): v for g in gathered for k, v in g[2].items()},
             "reward_stats": [g[3] for g in gathered],
             "strategy": t.strategy.state_dict(), "auxiliary": [a.state_dict() for a in t.auxiliary],
             "pending_evaluations": [list(r) for r in t.evaluator.unfinished()] if preempted else []}
    if gathered[0][4] is not None:
        state["rank_optimizers"] = [g[4] for g in gathered]
    if t.dist.world > 1:
        state["rank_balancers"] = [g[5] for g in gathered]
    if t.cfg.replay.save_in_checkpoint:
        state["replay"] = t.replay.state_dict()
    checkpoint.save(t.run_dir / "checkpoints", t.step, state, t.cfg.run.keep_checkpoints)


def restore(trainer) -> list:
    """Load the latest checkpoint (read on rank 0, sent to every rank). Returns the evaluations
    a preempted run still owed [(step, version, weights)] (rank 0; [] elsewhere)."""
    t = trainer
    loaded, error = None, None
    if t.dist.is_main:
        try:
            loaded = checkpoint.load_latest(t.run_dir / "checkpoints")
        except UserError as e:
            error = str(e)
    loaded, error = t.dist.broadcast_object((loaded, error))
    if error:
        raise UserError(error)
    rank = t.dist.rank
    try:
        if len(loaded["rank_steps"]) != t.dist.world:
            raise UserError(f"checkpoint was written by {len(loaded['rank_steps'])} learner rank(s), "
                            f"this run has {t.dist.world}")
        t.learner.load_state_dict(loaded["learner"])
        if "rank_optimizers" in loaded:  # local SGD: this rank's own moments
            t.learner.load_optimizer_state_dicts(loaded["rank_optimizers"][rank])
        for net, balancer in t.learner.balancers.items() if "rank_balancers" in loaded else ():
            balancer.load_state_dict(loaded["rank_balancers"][rank].get(net, {}))
        if "replay" in loaded:
            t.replay.load_state_dict(loaded["replay"])
        t.replay.reward_stats[:] = loaded["reward_stats"][rank].numpy()
        t.strategy.load_state_dict(to_device(loaded.get("strategy", {}), t.device))
        for task, state in zip(t.auxiliary, loaded.get("auxiliary", []), strict=True):
            task.load_state_dict(to_device(state, t.device))
        rng = loaded["rng"][rank]
        torch.set_rng_state(rng["torch"])
        if rng.get("cuda") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        t.rng.bit_generator.state = rng["numpy"]
        t.step, t.local_step = int(loaded["step"]), int(loaded["rank_steps"][rank])
        t.steps_by_actor = Counter({int(k): v for k, v in loaded["steps_by_actor"].items()})
        if t.strategy.rehearses and "replay" not in loaded:  # the finished stages' replay
            for stage in t.stages[:stage_at(t.stages, t.step)]:
                for task in stage.tasks:
                    t.replay.load_task_state(task, checkpoint.read(
                        checkpoint.rehearsal_path(t.run_dir / "checkpoints", task)))
        return [tuple(r) for r in loaded.get("pending_evaluations", [])] if t.dist.is_main else []
    except (KeyError, RuntimeError, ValueError, TypeError, IndexError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"checkpoint does not match this run's config: {first}") from None
