"""The report's figures (PNG): success curves, the performance matrix, forgetting and transfer
bars, the metric table, and plasticity (per-stage learning speed and the learner's diagnostics)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from metrics.runs import Run
from metrics.summary import ReportSettings, curves


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    return plt


def plot_success_curves(groups: dict[str, list[Run]], s: ReportSettings, path: Path) -> None:
    plt = _pyplot()
    tasks = next(iter(groups.values()))[0].tasks
    cols = min(4, len(tasks))
    rows = math.ceil(len(tasks) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False, sharex=True, sharey=True)
    for label, runs in groups.items():
        steps, values = curves(runs, s.measure)
        for j, task in enumerate(tasks):
            ax = axes.flat[j]
            col = values[:, :, runs[0].task_index(task)] if task in runs[0].tasks else np.full(values.shape[:2], np.nan)
            (line,) = ax.plot(steps, np.nanmean(col, 0), label=label)
            if len(runs) > 1:
                ax.fill_between(steps, np.nanmin(col, 0), np.nanmax(col, 0), color=line.get_color(), alpha=0.2)
    schedule = next(iter(groups.values()))[0].schedule
    for j, task in enumerate(tasks):
        ax = axes.flat[j]
        ax.set_title(task, fontsize=10)
        for stage in schedule[1:]:
            ax.axvline(stage.start, color="grey", lw=0.6, ls="--")
        for stage in schedule:
            if task in stage.tasks and len(schedule) > 1:
                ax.axvspan(stage.start, stage.end, color="tab:green", alpha=0.08)
    for ax in axes.flat[len(tasks):]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("env steps")
    for ax in axes[:, 0]:
        ax.set_ylabel(s.measure)
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(f"Evaluation {s.measure} per task (mean over seeds, band: min-max; shaded: task trained)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_performance_matrix(groups: dict[str, list[Run]], s: ReportSettings, path: Path) -> None:
    plt = _pyplot()
    fig, axes = plt.subplots(len(groups), 1, figsize=(10, 0.5 + 0.45 * len(next(iter(groups.values()))[0].tasks)
                                                      * len(groups) + 1), squeeze=False)
    for ax, (label, runs) in zip(axes[:, 0], groups.items()):
        steps, values = curves(runs, s.measure)
        matrix = np.nanmean(values, 0).T  # [tasks, evaluations]
        im = ax.imshow(matrix, aspect="auto", cmap="viridis", vmin=0, vmax=1 if s.measure == "success" else None,
                       interpolation="nearest")
        ax.set_yticks(range(len(runs[0].tasks)), runs[0].tasks, fontsize=8)
        ticks = np.linspace(0, len(steps) - 1, min(len(steps), 8)).astype(int)
        ax.set_xticks(ticks, [f"{steps[i]:,}" for i in ticks], fontsize=7)
        ax.set_xlabel("evaluation at env step")
        ax.set_title(label, fontsize=10)
        fig.colorbar(im, ax=ax, label=s.measure)
    fig.suptitle("Performance matrix: task x evaluation time (mean over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_forgetting_transfer(metrics: dict, path: Path) -> None:
    """A panel per Continual World metric the groups have (forward transfer only with reference runs:
    the report says so in a line rather than draw an empty axis)."""
    plt = _pyplot()
    groups = metrics["groups"]
    names = [(key, title) for key, title in (("performance", "average performance"), ("forgetting", "forgetting"),
                                             ("forward_transfer", "forward transfer"))
             if any(m["continual"].get(key) for m in groups.values())]
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4), squeeze=False)
    axes = axes[0]
    width = 0.8 / max(len(groups), 1)
    for ax, (key, title) in zip(axes, names):
        for g, (label, m) in enumerate(groups.items()):
            entry = m["continual"].get(key)
            if not entry:
                continue
            tasks = list(entry["per_task"])
            x = np.arange(len(tasks) + 1) + g * width
            vals = [entry["per_task"][t] if entry["per_task"][t] is not None else np.nan for t in tasks]
            mean = entry["mean"] if entry["mean"] is not None else np.nan
            err = None
            if entry.get("lower") is not None:
                err = np.zeros((2, len(tasks) + 1))
                err[:, -1] = [mean - entry["lower"], entry["upper"] - mean]
            ax.bar(x, vals + [mean], width, yerr=err, capsize=3, label=label)
            ax.set_xticks(np.arange(len(tasks) + 1) + width * (len(groups) - 1) / 2, tasks + ["mean"],
                          rotation=45, ha="right", fontsize=8)
        ax.axhline(0, color="black", lw=0.5)
        ax.set_title(title)
    axes[0].legend(fontsize=8)
    fig.suptitle("Continual World metrics per task (bars: mean over seeds; 'mean' bar: CI over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


PLASTICITY_MEASURES = ("dormant", "dormant_0.1", "srank", "weight_norm", "update_norm", "grad_norm", "entropy")


def plot_plasticity(groups: dict[str, list[Run]], metrics: dict, path: Path) -> None:
    """Per-stage AUC, then each diagnostic over the run (actor solid, critic dashed; mean over the
    seeds' common log points), stage starts marked."""
    plt = _pyplot()
    fig, axes = plt.subplots(2, 4, figsize=(18, 7), squeeze=False)
    schedule = next(iter(groups.values()))[0].schedule
    for g, (label, runs) in enumerate(groups.items()):
        color = f"C{g}"
        auc = metrics["groups"][label]["plasticity"]["stage_auc"]["mean"]
        axes[0, 0].plot(range(1, len(auc) + 1), auc, "o-", color=color, label=label, ms=3)
        logged = [r.diagnostics for r in runs if r.diagnostics]
        if not logged:
            continue
        steps = sorted(set.intersection(*({row["step"] for row in rows} for rows in logged)))
        for ax, measure in zip(axes.flat[1:], PLASTICITY_MEASURES):
            for network, style in (("actor", "-"), ("critic", "--")):
                key = f"{network}/{measure}"
                series = [[next((row.get(key, np.nan) for row in rows if row["step"] == s), np.nan) for s in steps]
                          for rows in logged]
                if not np.isnan(series).all():
                    ax.plot(steps, np.nanmean(series, 0), style, color=color, lw=1,
                            label=f"{label} ({network})" if g == 0 or network == "actor" else None)
    axes[0, 0].set_title("learning speed: per-stage AUC", fontsize=10)
    axes[0, 0].set_xlabel("stage")
    axes[0, 0].legend(fontsize=7)
    for ax, measure in zip(axes.flat[1:], PLASTICITY_MEASURES):
        ax.set_title(measure, fontsize=10)
        ax.set_xlabel("env steps")
        ax.xaxis.set_major_locator(plt.MaxNLocator(4))
        for stage in schedule[1:]:
            ax.axvline(stage.start, color="grey", lw=0.5, ls=":")
    axes[0, 1].legend(fontsize=7)
    fig.suptitle("Plasticity (solid: actor, dashed: critic; dotted lines: stage starts; mean over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
