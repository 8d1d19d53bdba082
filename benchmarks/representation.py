"""Encoders and auxiliary tasks: their cost, and what they learn.

    python benchmarks/representation.py speed      # learner updates/s and peak memory vs the MLP
    python launch/study.py benchmarks/studies/representation-quality.yaml   # success, >= 3 seeds: a study

speed: the MT10 default learner (3x400, multi-head, batch 10 x 128), each variant in a fresh
process, relative to the MLP (benchmarks/variants.py says how). Quality (every variant on the
same tasks, seeds and budget) is a grid of runs, so it is a study.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import variants  # noqa: E402
from benchmarks.common import table  # noqa: E402

VARIANTS = {  # name -> config overrides (on top of each benchmark's base)
    "mlp": [],
    # mtrl's CARE command: the CARE encoder shared by actor and critic (the critic trains it, the actor
    # reads it detached), one shared output layer, the target encoder at 0.05; one extra 100-wide layer
    # after [mixture, context] (sac.encoder_sizes cannot be empty)
    "care": ["sac.encoder=care", "sac.encoder_sizes=[100]", "sac.task_input=false", "sac.head=single",
             "sac.encoder_tau=0.05"],
    "care-multihead": ["sac.trunk=care", "sac.task_input=false"],  # CARE as every network's trunk, per-task heads
    "moore": ["sac.trunk=moore", "sac.task_input=false"],
    "bronet": ["sac.trunk=bronet", "sac.task_input=false", "sac.task_embedding_dim=32"],
    "wide-critic": [],  # BroNet trunks, the critic twice as wide as the actor: set in main()
    "mlp+reward": ["aux.reward=1"],
    "mlp+dynamics": ["aux.dynamics=1"],
    "mlp+inverse": ["aux.inverse=1"],
    "mlp+pvn": ["aux.pvn=1"],
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["speed"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--updates", type=int, default=30)
    args = p.parse_args()
    hidden = [400, 400, 400]  # MT10's
    wide = [2 * width for width in hidden]
    VARIANTS["wide-critic"] = VARIANTS["bronet"] + [f"sac.critic_hidden_sizes={wide}".replace(" ", "")]
    header, rows = variants.speed(VARIANTS, "mlp", args.updates, args.repeats)
    print(f"MT10 default learner (3x400, multi-head, batch 10 x 128), 1 thread, {args.updates} updates, "
          f"median of {args.repeats} fresh processes")
    print(table(header, rows))


if __name__ == "__main__":
    main()
