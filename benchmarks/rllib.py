"""RLlib (new API stack) against our own loop, measured side by side in one run.

    python benchmarks/rllib.py sac [--steps 1000] [--warmup 256] [--repeats 3]
    python benchmarks/rllib.py collection [--seconds 20] [--repeats 3]
    python benchmarks/rllib.py profile [--iterations 60]

sac:        reach-v3 with the settings of our SAC-vs-SB3 row (MLP 256x256, batch 256, one update per
            env step, Adam 3e-4, gamma 0.99, tau 0.005, init alpha 1.0, 1 torch thread, sampling
            in the training process): training env-steps/s of our loop (--backend single),
            RLlib SAC with its default module, and RLlib SAC with our module (SACModule +
            RLlibSACLearner); the three alternate within each repeat. Median of repeats.
            (RLlib samples with its policy, not uniformly at random, during the warm-up.)
profile:    where RLlib SAC's time goes in the `sac` setting (cProfile, ms per update, profiler
            overhead included), default module vs ours.
collection: Meta-World MT10, 2 samplers (one per core): our 2 actor processes (5 envs each,
            batched inference) against 2 RLlib env runners (5 envs each, our module, inference
            only), both acting with the MT10 default policy (3x400, multi-head); env-steps/s of
            the whole group, over --seconds of sampling after a warm start.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch

from benchmarks.common import median, table
from benchmarks.sac_vs_sb3 import train_ours

TEMP = tempfile.mkdtemp(prefix="polytask-bench-rllib-")


def _ray():
    import ray
    if not ray.is_initialized():
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, _node_ip_address="127.0.0.1",
                 _temp_dir=TEMP, log_to_driver=False, configure_logging=False)


def _config(tasks: str, overrides: list[str], flags: dict | None = None):
    from envs import make_suite
    from launch.config import build_config
    cfg = build_config("metaworld", flags={"env.tasks": tasks, "run.engine": "rllib", **(flags or {})},
                       overrides=overrides)
    return cfg, make_suite("metaworld", tasks, 0)


def _reach_algo(warmup: int, seed: int, ours: bool):
    """RLlib SAC on reach-v3 in the `sac` setting, sampling in the driver (no remote runners)."""
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    from integrations.rllib.algorithm import algorithm_config, build_algo
    _ray()
    cfg, suite = _config("reach-v3", ["sac.hidden_sizes=[256, 256]", "sac.batch_size_per_task=256",
                                      "sac.head=single", "sac.task_input=false", "sac.init_alpha=1.0",
                                      f"sac.warmup_steps_per_task={warmup}", "replay.capacity_per_task=1000000"],
                         {"run.seed": seed})
    config = algorithm_config(cfg, suite, [0], [0]).env_runners(
        num_env_runners=0, num_envs_per_env_runner=1, rollout_fragment_length=1).training(training_intensity=256)
    if not ours:  # RLlib's own DefaultSACTorchRLModule and SACTorchLearner
        from ray.rllib.algorithms.sac.torch.sac_torch_learner import SACTorchLearner
        from ray.rllib.core.rl_module.rl_module import RLModuleSpec
        config = config.rl_module(rl_module_spec=RLModuleSpec(),
                                  model_config=DefaultModelConfig(fcnet_hiddens=[256, 256], fcnet_activation="relu",
                                                                  head_fcnet_hiddens=[]))
        config = config.learners(learner_class=SACTorchLearner, learner_config_dict={})
    return build_algo(config, TEMP)


def train_rllib(steps: int, warmup: int, seed: int, ours: bool) -> float:
    """Training env-steps/s of RLlib SAC on reach-v3."""
    algo = _reach_algo(warmup, seed, ours)
    done, start = 0, time.perf_counter()
    while done < steps:
        done = int(algo.train()["num_env_steps_sampled_lifetime"])
    rate = done / (time.perf_counter() - start)
    algo.stop()
    return rate


def profile(args) -> None:
    import cProfile
    import pstats

    torch.set_num_threads(1)
    parts = {"replay sampling": "episode_replay_buffer.py:sample", "learner connector":
             "learner_connector_pipeline.py:__call__", "forward_train": "rl_module.py:forward_train",
             "compute_gradients": "compute_gradients", "apply_gradients": "apply_gradients",
             "env sampling": "rollout_ops.py:synchronous_parallel_sample"}
    columns = {}
    for ours in (False, True):
        algo = _reach_algo(256, 0, ours)
        while algo.train()["num_env_steps_sampled_lifetime"] < 300:  # past the warm-up
            pass
        profiler, start = cProfile.Profile(), time.perf_counter()
        profiler.enable()
        for _ in range(args.iterations):  # one env step and one update each
            algo.train()
        profiler.disable()
        total = (time.perf_counter() - start) / args.iterations * 1000
        stats = pstats.Stats(profiler).stats
        columns[ours] = {name: sum(v[3] for k, v in stats.items() if where in f"{k[0]}:{k[2]}")
                         / args.iterations * 1000 for name, where in parts.items()} | {"whole iteration": total}
        algo.stop()
    print(f"RLlib SAC on reach-v3, ms per update (cProfile over {args.iterations} iterations)")
    print(table(["part", "default module", "our module"],
                [[name, f"{columns[False][name]:.0f}", f"{columns[True][name]:.0f}"] for name in columns[True]]))


def sac(args) -> None:
    torch.set_num_threads(1)
    runs = {"polytask loop": [], "RLlib SAC, default module": [], "RLlib SAC, our module": []}
    for r in range(args.repeats):
        runs["polytask loop"].append(train_ours(args.steps, args.warmup, r, eval_goals=1)[0])
        runs["RLlib SAC, default module"].append(train_rllib(args.steps, args.warmup, r, ours=False))
        runs["RLlib SAC, our module"].append(train_rllib(args.steps, args.warmup, r, ours=True))
        print(f"repeat {r}: " + "  ".join(f"{k} {v[-1]:.1f}" for k, v in runs.items()), flush=True)
    base = median(runs["polytask loop"])
    print(f"\nreach-v3, {args.steps} env steps ({args.warmup} before learning), 1 update/step, batch 256, 256x256, "
          f"1 torch thread; median of {args.repeats}")
    print(table(["trainer", "env-steps/s (median)", "vs polytask loop", "runs"],
                [[k, median(v), f"{median(v) / base:.2f}", " ".join(f"{x:.0f}" for x in v)] for k, v in runs.items()]))


def collect_ours(seconds: float, seed: int) -> float:
    from agents.networks import build_policy
    from agents.sac.config import SACConfig
    from launch.actors.actor import ActorSpec
    from launch.actors.local import LocalActorPool
    sac_cfg = SACConfig()
    policy = build_policy(sac_cfg, 39, 4, 10)
    flat = torch.nn.utils.parameters_to_vector(policy.parameters()).detach()
    specs = [ActorSpec(a, "metaworld", "MT10", seed, tuple(range(10))[a::2], 5, sac_cfg, 10) for a in range(2)]
    pool = LocalActorPool(specs, flat.numel(), chunk_steps=100, max_policy_lag=1, log=lambda *a: None)
    pool.publish(lambda: flat, 1)
    fresh = set()
    while len(fresh) < 2:  # until every actor acts with the policy
        fresh |= {c.actor_id for c in pool.poll(None) if c.policy_version == 1}
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        steps += sum(len(c) for c in pool.poll(None))
    rate = steps / (time.perf_counter() - start)
    pool.close()
    return rate


def collect_rllib(seconds: float, seed: int) -> float:
    from ray.rllib.execution.rollout_ops import synchronous_parallel_sample

    from integrations.rllib.algorithm import algorithm_config, build_algo
    _ray()
    cfg, suite = _config("MT10", [], {"run.seed": seed, "runtime.actors": 2})
    config = algorithm_config(cfg, suite, list(range(10)), [0] * 10).env_runners(
        rollout_fragment_length=20)  # 2 runners x 5 envs x 20 steps: 200 steps a round
    algo = build_algo(config, TEMP)

    def sample() -> int:
        episodes = synchronous_parallel_sample(worker_set=algo.env_runner_group, concat=True,
                                               _uses_new_env_runners=True)
        return sum(len(e) for e in episodes)

    sample()  # warm start (env construction, first resets)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        steps += sample()
    rate = steps / (time.perf_counter() - start)
    algo.stop()
    return rate


def collection(args) -> None:
    ours, rllib = [], []
    for r in range(args.repeats):
        ours.append(collect_ours(args.seconds, r))
        rllib.append(collect_rllib(args.seconds, r))
        print(f"repeat {r}: polytask actors {ours[-1]:.0f}  RLlib env runners {rllib[-1]:.0f} env-steps/s", flush=True)
    print(f"\nMeta-World MT10, 2 samplers x 5 envs, MT10 default policy (3x400, multi-head); median of {args.repeats}")
    print(table(["sampler", "env-steps/s (median)", "vs polytask actors", "runs"],
                [["polytask actors (2 processes)", median(ours), "1.00", " ".join(f"{x:.0f}" for x in ours)],
                 ["RLlib env runners (2)", median(rllib), f"{median(rllib) / median(ours):.2f}",
                  " ".join(f"{x:.0f}" for x in rllib)]]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["sac", "collection", "profile"])
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    {"sac": sac, "collection": collection, "profile": profile}[args.mode](args)


if __name__ == "__main__":
    main()
