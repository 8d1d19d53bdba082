"""Plasticity remedies on long task sequences: the table of a plasticity study, and what each remedy costs.

    python launch/study.py benchmarks/studies/plasticity-rotation.yaml    # pointmass ROT20, 5 seeds
    python launch/study.py benchmarks/studies/plasticity-metaworld.yaml   # a repeated Meta-World task, 3 seeds
    python benchmarks/plasticity.py table STUDY_DIR
                                    # the table of either study (and its learning-speed plot)
    python benchmarks/plasticity.py cost [--repeats 3]
                                    # what the diagnostics and each remedy cost: fine-tuning on the first
                                    # four rotations, one run at a time, every variant once per repeat

The studies' rows: fine-tuning, EWC and PackNet (given boundaries), each alone and with each remedy
(agents/plasticity/): ReDo (tau 0.1 every 1,000 updates), continual backprop (rate 1e-4), shrink and
perturb (0.4 / 0.1 at each stage start), L2 Init (lambda 1e-2), Parseval (lambda 1e-3, s = 2) and a
full reset at each stage start (Nikishin et al.'s, replay kept); plus fine-tuning with the
diagnostics off (their cost).
The table's columns: per-stage learning speed (AUC: the mean success of the stage's task over its
evaluations in the stage) over the first and the last five stages and their difference, Continual
World's average performance and forgetting, the actor's dormant fraction and the critic's srank at
the end. Mean over seeds [90% bootstrap CI]. What each costs per update: the cost mode (a study's
trials share the machine, so their timings are not comparable). A plot of the per-stage AUC goes to
STUDY_DIR/learning_speed.png.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import median, table, train_missing  # noqa: E402

METHODS = {"none": "finetune", "ewc": "ewc", "packnet": "packnet"}  # the studies' method axis: row names
REMEDIES = {  # the cost mode's variants (the studies' remedy axis sets the same keys)
    "redo": ["--set", "plasticity.redo=true"],
    "cbp": ["--set", "plasticity.cbp=1e-4"],
    "shrink-perturb": ["--set", "plasticity.shrink_perturb=true"],
    "l2-init": ["--set", "plasticity.l2_init=1e-2"],
    "parseval": ["--set", "plasticity.parseval=1e-3"],
    "reset": ["--set", "plasticity.reset=99"],
}


def row_name(values: dict) -> str:
    """A study trial's row: "ewc + cbp", "finetune", "finetune, diagnostics off"."""
    method = METHODS[values["method"]]
    if str(values.get("plasticity.diagnostics")) == "false":
        return f"{method}, diagnostics off"
    remedy = values.get("remedy", "none")
    return method if remedy == "none" else f"{method} + {remedy}"


def seconds_per_update(run_dir: Path) -> float:
    learners = json.loads((run_dir / "learners.json").read_text())
    steps, updates = learners["step"], sum(r["updates"] for r in learners["ranks"])
    return steps / learners["train_env_steps_per_s"] / max(1, updates)


def cell(entry, digits: int = 2) -> str:
    if entry is None or entry.get("mean") is None:
        return "n/a"
    return f"{entry['mean']:.{digits}f} [{entry['lower']:.{digits}f}, {entry['upper']:.{digits}f}]"


def ci(values) -> dict:
    from metrics.continual import bootstrap_ci
    mean, lower, upper = bootstrap_ci(values)
    return {"mean": mean, "lower": lower, "upper": upper}


def rows_of(study_dir: Path) -> dict[str, list[Path]]:
    """{row name: the finished run directories of its seeds}, in the study's order."""
    from launch.studies.results import grid_runs, label_values
    return {row_name(label_values(label)): dirs for label, dirs in grid_runs(study_dir).items()}


def title_of(study_dir: Path) -> str:
    import yaml
    tree = yaml.safe_load((study_dir / "study.yaml").read_text())
    base, settings = tree["base"], tree["set"] or {}
    sizes = settings.get("sac.hidden_sizes", [])
    width = f"{len(sizes)}x{sizes[0]}" if len(set(sizes)) == 1 else "-".join(map(str, sizes)) or "default width"
    return (f"{base['suite']} {base['sequence']}, {width}, {base['steps_per_task']:,} env steps per stage "
            f"(study {tree['name']}); mean over seeds [90% bootstrap CI]")


def summarize(study_dir: Path) -> None:
    import numpy as np

    from metrics import continual
    from metrics.plasticity import final_diagnostics, speed_change, stage_aucs
    from metrics.runs import read_run

    title = title_of(study_dir)
    lines, curves = [], {}
    for name, dirs in rows_of(study_dir).items():
        if not dirs:
            continue
        runs = [read_run(d) for d in dirs]
        aucs = np.array([stage_aucs(r) for r in runs])
        curves[name] = aucs.mean(axis=0)
        k = min(5, aucs.shape[1] // 2)
        cw = continual.summarize(runs, None, last_k=1)
        finals = [final_diagnostics(d) for d in dirs]
        lines.append([name, len(runs), cell(ci(aucs[:, :k].mean(axis=1))), cell(ci(aucs[:, -k:].mean(axis=1))),
                      cell(ci([speed_change(a, k) for a in aucs])), cell(cw["performance"]), cell(cw["forgetting"]),
                      f"{np.mean([f.get('actor/dormant', np.nan) for f in finals]):.2f}",
                      f"{np.mean([f.get('critic/srank', np.nan) for f in finals]):.1f}"])
    print(title)
    print(table(["method", "seeds", f"AUC first {k}", f"AUC last {k}", "last - first", "average performance",
                 "forgetting", "actor dormant (end)", "critic srank (end)"], lines))
    plot(study_dir / "learning_speed.png", curves, title)


def plot(path: Path, curves: dict, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(15, 4), sharey=True)
    for ax, method in zip(axes, METHODS.values()):
        for name, curve in curves.items():
            if name.split(" ")[0].rstrip(",") == method and "diagnostics" not in name:
                ax.plot(range(1, len(curve) + 1), curve, label=name, linewidth=2 if name == method else 1)
        ax.set_title(method)
        ax.set_xlabel("stage")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("per-stage AUC (mean success in the stage)")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"plot: {path}")


def cost(out: Path, repeats: int) -> None:
    """Seconds per learner update of each variant (the run's training time, evaluation excluded, over
    its updates), median over repeats, as a ratio to fine-tuning with the default settings (diagnostics
    on, no remedy); variants interleaved within each repeat, one run at a time."""
    common = ["--suite", "pointmass", "--sequence", ",".join(rotations(4)), "--steps-per-task", "1000",
              "--backend", "single", "--set", "run.threads=1", "--set", "sac.head=single", "--set",
              "sac.task_input=false", "--set", "eval.every=1000", "--set", "eval.goals=2", "--seed", "0"]
    variants = {"finetune (diagnostics on)": [], "finetune, diagnostics off": ["--set", "plasticity.diagnostics=false"],
                **{f"+ {name}": flags for name, flags in REMEDIES.items()}}
    runs = {f"{slugify(v)}-r{r}": [*common, *flags] for r in range(repeats) for v, flags in variants.items()}
    train_missing(out, runs, workers=1)
    base = median([seconds_per_update(out / f"{slugify('finetune (diagnostics on)')}-r{r}") for r in range(repeats)])
    rows = []
    for v in variants:
        times = [seconds_per_update(out / f"{slugify(v)}-r{r}") for r in range(repeats)]
        rows.append([v, repeats, f"{median(times) * 1e3:.2f}", f"{median(times) / base:.2f}"])
    print("time per learner update on 4 rotations x 1,000 env steps (fine-tuning, 64x64, one thread), "
          f"median of {repeats} interleaved repeats")
    print(table(["variant", "repeats", "ms per update", "x default"], rows))


def slugify(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-")


def rotations(count: int) -> list[str]:
    from envs.pointmass import SEQUENCES
    return SEQUENCES["ROT20"][:count]


def main() -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=["table", "cost"])
    p.add_argument("study_dir", nargs="?", type=Path, help="table: a plasticity study's directory")
    p.add_argument("--repeats", type=int, default=3, help="cost: runs of each variant")
    p.add_argument("--out", help="cost: where its runs go (default runs/bench-plasticity-cost)")
    args = p.parse_args()
    if args.mode == "cost":
        return cost(Path(args.out or "runs/bench-plasticity-cost"), args.repeats)
    if args.study_dir is None or not (args.study_dir / "study.yaml").is_file():
        p.error("table needs a plasticity study's directory (launch/study.py benchmarks/studies/plasticity-*.yaml)")
    summarize(args.study_dir)


if __name__ == "__main__":
    main()
