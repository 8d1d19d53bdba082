"""Turn runs into a lifelong-learning report: metrics.json, report.md, report.html and PNG plots.

Runs are grouped by method (runs whose configs differ only in seed and runtime settings form one
group); each group's seeds give means and confidence intervals. The data flow is one-way:
run dirs -> `Run`s -> metrics (pure functions) -> this module's tables and plots.
"""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from metrics import continual, multitask
from metrics.l2logger_io import run_regimes
from metrics.l2m import LIFETIME_METRICS, L2MSettings, l2m_metrics
from metrics.runs import Run

# Config keys that do not change what is learned: runs differing only here are seeds of one method.
NOT_METHOD_KEYS = ("run.seed", "run.device", "run.threads", "run.checkpoint_every", "run.keep_checkpoints",
                   "run.log_every", "runtime", "versions")


@dataclass(frozen=True)
class ReportSettings:
    measure: str = "success"           # success | return
    last_k: int = 5                    # Continual World: evaluations averaged at the end of a window
    mt_last_k: int = 1                 # multi-task final score: mean of the last k evaluations
    cw_reps: int = 4000                # Continual World bootstrap: 90%, 4000 resamples
    cw_confidence: float = 0.90
    mt_reps: int = 50_000              # rliable stratified bootstrap: 95%, 50k resamples
    mt_confidence: float = 0.95
    l2m: L2MSettings = field(default_factory=L2MSettings)


# -- grouping ---------------------------------------------------------------------------------------

def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = json.dumps(v, sort_keys=True)
    return out


def _method_key(run: Run) -> dict:
    flat = _flatten(run.config)
    return {k: v for k, v in flat.items() if not any(k == n or k.startswith(n + ".") for n in NOT_METHOD_KEYS)}


def group_runs(runs: list[Run]) -> dict[str, list[Run]]:
    """{label: runs}. A label names the method (continual.method when runs record one) plus the
    config values that tell this group apart from the others."""
    keys = [_method_key(r) for r in runs]
    groups: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(json.dumps(key, sort_keys=True), []).append(i)
    distinct = sorted({k for key in keys for k in key if len({kk.get(k) for kk in keys}) > 1})
    out = {}
    for members in groups.values():
        key = keys[members[0]]
        suite, suite_tasks = json.loads(key.get("env.suite", '"run"')), json.loads(key.get("env.tasks", '""'))
        base = json.loads(key.get("continual.method", '""')) or f"{suite}:{suite_tasks or 'default'}"
        extra = [f"{k}={json.loads(key[k]) if k in key else '-'}" for k in distinct if k != "continual.method"]
        label = base + (f" ({', '.join(extra)})" if extra and len(groups) > 1 else "")
        out[label] = sorted((runs[i] for i in members), key=lambda r: r.seed)
    return out


# -- metrics ----------------------------------------------------------------------------------------

def _num(x) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def _seed_ci(values: list[float], s: ReportSettings) -> dict:
    """Mean over seeds and Continual World's bootstrap interval (NaN seeds left out)."""
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return {"mean": None, "lower": None, "upper": None, "per_seed": [_num(v) for v in values]}
    mean, lower, upper = continual.bootstrap_ci(vals, s.cw_reps, s.cw_confidence)
    return {"mean": _num(mean), "lower": _num(lower), "upper": _num(upper), "per_seed": [_num(v) for v in values]}


def _references_by_task(references: list[Run]) -> dict[str, list[Run]]:
    out: dict[str, list[Run]] = {}
    for ref in references:
        trained = ref.trained_tasks()
        if len(trained) != 1:
            raise ValueError(f"reference run {ref.name} trains {len(trained)} tasks; a single-task run trains one")
        out.setdefault(trained.pop(), []).append(ref)
    return out


def group_metrics(runs: list[Run], references: list[Run], s: ReportSettings) -> dict:
    tasks = runs[0].tasks
    scores = multitask.score_matrix(runs, s.measure, s.mt_last_k)
    mt = {"final_mean": float(multitask.mean(scores)), "iqm": float(multitask.iqm(scores))}
    if not np.isnan(scores).any():
        for name, stat in (("final_mean", multitask.mean), ("iqm", multitask.iqm)):
            lo, hi = multitask.stratified_bootstrap_ci(scores, stat, s.mt_reps, s.mt_confidence)
            mt[name] = {"mean": mt[name], "lower": lo, "upper": hi}
        means, lo, hi = multitask.per_task_ci(scores, s.mt_reps, s.mt_confidence)
        mt["per_task"] = {t: {"mean": float(m), "lower": float(a), "upper": float(b)}
                          for t, m, a, b in zip(tasks, means, lo, hi)}
    else:
        mt = {k: {"mean": _num(v), "lower": None, "upper": None} for k, v in mt.items()}
        mt["per_task"] = {t: {"mean": _num(float(np.nanmean(scores[:, j]))), "lower": None, "upper": None}
                          for j, t in enumerate(tasks)}
    mt["confidence"], mt["reps"] = s.mt_confidence, s.mt_reps

    refs = _references_by_task(references)
    usable_refs = [r for t in tasks for r in refs.get(t, [])] if all(t in refs for t in tasks) else None
    cw = continual.summarize(runs, usable_refs, s.last_k, s.cw_reps, s.cw_confidence)
    matrices = np.array([continual.performance_matrix(r, s.last_k) for r in runs])  # [seeds, tasks, stages]
    steps, values = _curves(runs, s.measure)
    by_evaluation = np.nanmean(values, 0).T.tolist()  # [tasks, evaluations]: the heatmap's data

    ste = {t: [run_regimes(r, s.measure) for r in rs] for t, rs in refs.items()}
    l2m_runs = [l2m_metrics(run_regimes(r, s.measure), ste, s.l2m) for r in runs]
    l2m = {"lifetime": {m: _seed_ci([x["lifetime"][m] for x in l2m_runs], s) for m in LIFETIME_METRICS},
           "settings": asdict(s.l2m)}
    return {"runs": [r.name for r in runs], "seeds": [r.seed for r in runs], "tasks": list(tasks),
            "evaluation": evaluation_protocol(runs[0]),
            "schedule": [{"tasks": list(st.tasks), "start": st.start, "end": st.end} for st in runs[0].schedule],
            "multitask": mt, "continual": cw,
            "performance_matrix": {"stage_ends": [st.end for st in runs[0].schedule],
                                   "mean": np.nanmean(matrices, 0).tolist(), "per_seed": matrices.tolist(),
                                   "evaluation_steps": steps.tolist(), "by_evaluation": by_evaluation},
            "l2m": l2m, "references": sorted(refs)}


def evaluation_protocol(run: Run) -> dict:
    """How the run's evaluations were taken: {"policy": "mean" | "sample", "episodes": per task}.
    Published tables differ here (Meta-World/mtrl: the mean action; Continual World: sampled)."""
    evaluation = run.config.get("eval") or {}
    policy = evaluation.get("policy") or ("mean" if evaluation.get("deterministic", True) else "sample")
    return {"policy": policy, "episodes": evaluation.get("goals")}


def run_summary(run: Run, s: ReportSettings = ReportSettings()) -> dict[str, float]:
    """The headline metrics of one finished run (what the trainer prints and logs at the end):
    final mean success and IQM over tasks; for a continual run (several stages) also Continual
    World performance and forgetting and the L2M maintenance and transfer values (in a one-stage
    multi-task run these only restate the final success or compare against the untrained start)."""
    scores = multitask.score_matrix([run], s.measure, s.mt_last_k)
    summary = {"final_success": float(multitask.mean(scores)), "final_success_iqm": float(multitask.iqm(scores))}
    if len(run.schedule) > 1:
        summary["average_performance"] = continual.average_performance(run, s.last_k)
        summary["forgetting"] = continual.forgetting(run, s.last_k).mean
        if run.episodes.step.size:
            l2m = l2m_metrics(run_regimes(run, s.measure), {}, s.l2m)["lifetime"]
            for k in ("perf_maintenance_mrlep", "forward_transfer_ratio", "backward_transfer_ratio"):
                summary[f"l2m_{k}"] = l2m[k]
    return summary


def compute(groups: dict[str, list[Run]], references: list[Run], s: ReportSettings) -> dict:
    def clean(x):  # JSON has no NaN
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        if isinstance(x, (float, np.floating)):
            return _num(float(x))
        if isinstance(x, np.integer):
            return int(x)
        return x
    return clean({"settings": {**asdict(s), "l2m": asdict(s.l2m)},
                  "groups": {label: group_metrics(runs, references, s) for label, runs in groups.items()}})


# -- plots ------------------------------------------------------------------------------------------

def _pyplot():
    import matplotlib
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    return plt


def _fmt(entry: dict | None, digits: int = 2) -> str:
    """'0.83 [0.80, 0.86]' from {"mean", "lower", "upper"}; 'n/a' where missing."""
    if not entry or entry.get("mean") is None:
        return "n/a"
    if entry.get("lower") is None:
        return f"{entry['mean']:.{digits}f}"
    return f"{entry['mean']:.{digits}f} [{entry['lower']:.{digits}f}, {entry['upper']:.{digits}f}]"


def _curves(runs: list[Run], measure: str) -> tuple[np.ndarray, np.ndarray]:
    """Evaluation steps shared by all seeds and values [seeds, steps, tasks] at them."""
    steps = runs[0].steps
    for r in runs[1:]:
        steps = np.intersect1d(steps, r.steps)
    values = np.array([r.values(measure)[np.searchsorted(r.steps, steps)] for r in runs])
    return steps, values


def plot_success_curves(groups: dict[str, list[Run]], s: ReportSettings, path: Path) -> None:
    plt = _pyplot()
    tasks = next(iter(groups.values()))[0].tasks
    cols = min(4, len(tasks))
    rows = math.ceil(len(tasks) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False, sharex=True, sharey=True)
    for label, runs in groups.items():
        steps, values = _curves(runs, s.measure)
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
        steps, values = _curves(runs, s.measure)
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
    plt = _pyplot()
    groups = metrics["groups"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    names = [("performance", "average performance"), ("forgetting", "forgetting"),
             ("forward_transfer", "forward transfer")]
    width = 0.8 / max(len(groups), 1)
    for ax, (key, title) in zip(axes, names):
        drawn = False
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
            drawn = True
        ax.axhline(0, color="black", lw=0.5)
        ax.set_title(title if drawn else f"{title}: no --reference runs")
    axes[0].legend(fontsize=8)
    fig.suptitle("Continual World metrics per task (bars: mean over seeds; 'mean' bar: CI over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_metric_table(header: list[str], rows: list[list[str]], path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(min(3 + 2.2 * len(header), 30), 0.6 + 0.4 * (len(rows) + 1)))
    ax.axis("off")
    table = ax.table(cellText=rows, colLabels=header, loc="center", cellLoc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.scale(1, 1.4)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# -- documents --------------------------------------------------------------------------------------

MAIN_COLUMNS = [("Average performance", lambda m: m["continual"]["performance"]),
                ("Forgetting", lambda m: m["continual"]["forgetting"]),
                ("Forward transfer", lambda m: m["continual"].get("forward_transfer")),
                ("Final success (mean)", lambda m: m["multitask"]["final_mean"]),
                ("IQM", lambda m: m["multitask"]["iqm"])]
L2M_NAMES = {"perf_maintenance_mrlep": "Perf. maintenance (mrlep)", "perf_maintenance_mrtlp": "Perf. maintenance (mrtlp)",
             "forward_transfer_ratio": "Forward transfer (ratio)", "forward_transfer_contrast": "Forward transfer (contrast)",
             "backward_transfer_ratio": "Backward transfer (ratio)",
             "backward_transfer_contrast": "Backward transfer (contrast)", "ste_rel_perf": "Relative perf. vs STE",
             "sample_efficiency": "Sample efficiency", "perf_recovery": "Performance recovery",
             "avg_train_perf": "Avg. train perf.", "avg_eval_perf": "Avg. eval perf."}


def sections(metrics: dict, images: dict[str, str]) -> list[tuple]:
    """The report as (kind, content) items: ("h", text), ("p", text), ("table", (header, rows)),
    ("img", (title, file)). report.md and report.html render the same items."""
    groups = metrics["groups"]
    s = metrics["settings"]
    out: list[tuple] = [("h", "Lifelong-learning report")]
    out.append(("p", f"{sum(len(m['runs']) for m in groups.values())} runs in {len(groups)} group(s). "
                     f"Performance measure: {s['measure']}. Continual World metrics: mean over seeds with "
                     f"{s['cw_confidence']:.0%} bootstrap CI ({s['cw_reps']} resamples over seeds); multi-task "
                     f"aggregates: {s['mt_confidence']:.0%} stratified bootstrap CI ({s['mt_reps']} resamples)."))
    main_header = ["Method", "Seeds", "Eval policy"] + [name for name, _ in MAIN_COLUMNS]
    main_rows = [[label, str(len(m["seeds"])), _protocol(m)] + [_fmt(get(m)) for _, get in MAIN_COLUMNS]
                 for label, m in groups.items()]
    out += [("h2", "Main metrics"), ("table", (main_header, main_rows)), ("img", ("Metric table", images["table"]))]
    l2m_header = ["Method"] + list(L2M_NAMES.values())
    l2m_rows = [[label] + [_fmt(m["l2m"]["lifetime"][k]) for k in L2M_NAMES] for label, m in groups.items()]
    out += [("h2", "DARPA L2M metrics (l2metrics definitions)"),
            ("p", f"Computed on the run exported as an l2logger log (train blocks: training episodes; test "
                  f"blocks: evaluations at stage boundaries), smoothing {s['l2m']['smoothing']}, normalization "
                  f"{s['l2m']['normalization']}, aggregation {s['l2m']['aggregation']}; normalized values lie in "
                  f"[1, 101]. Mean over seeds with the bootstrap CI above. In a one-stage (multi-task) run "
                  "transfer only compares the untrained start with the end, and maintenance is undefined."),
            ("table", (l2m_header, l2m_rows))]
    out += [("h2", "Per-task results"), ("img", ("Success curves", images["curves"])),
            ("img", ("Forgetting and transfer", images["bars"]))]
    for label, m in groups.items():
        tasks = m["tasks"]
        rows = [[t, _fmt(m["multitask"]["per_task"][t]), _num_str(m["continual"]["performance"]["per_task"][t]),
                 _num_str(m["continual"]["forgetting"]["per_task"][t]),
                 _num_str((m["continual"].get("forward_transfer") or {}).get("per_task", {}).get(t))] for t in tasks]
        out += [("h3", label), ("table", (["Task", "Final success [CI]", "Performance", "Forgetting",
                                           "Forward transfer"], rows))]
        stage_ends = m["performance_matrix"]["stage_ends"]
        pm_rows = [[t] + [_num_str(v) for v in m["performance_matrix"]["mean"][i]] for i, t in enumerate(tasks)]
        out += [("p", "Performance matrix at the end of each stage (rows: tasks; columns: stage ends):"),
                ("table", (["Task"] + [f"{e:,}" for e in stage_ends], pm_rows))]
    out += [("h2", "Performance matrix"), ("img", ("Performance matrix", images["matrix"]))]
    runs = [[label, str(seed), name] for label, m in groups.items() for seed, name in zip(m["seeds"], m["runs"])]
    out += [("h2", "Runs"), ("table", (["Method", "Seed", "Run directory"], runs))]
    return out


def _protocol(m: dict) -> str:
    """'sampled, 10 ep.': the evaluation policy and the episodes per task of a group."""
    evaluation = m["evaluation"]
    return f"{'sampled' if evaluation['policy'] == 'sample' else 'mean'}, {evaluation['episodes']} ep."


def _num_str(x) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def render_markdown(items: list[tuple]) -> str:
    lines = []
    for kind, content in items:
        if kind in ("h", "h2", "h3"):
            lines += [{"h": "#", "h2": "##", "h3": "###"}[kind] + " " + content, ""]
        elif kind == "p":
            lines += [content, ""]
        elif kind == "table":
            header, rows = content
            lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(row) + " |" for row in rows] + [""]
        elif kind == "img":
            lines += [f"![{content[0]}]({content[1]})", ""]
    return "\n".join(lines)


def render_html(items: list[tuple], out_dir: Path) -> str:
    """Self-contained: images are embedded as base64 data URIs."""
    body = []
    for kind, content in items:
        if kind in ("h", "h2", "h3"):
            tag = {"h": "h1", "h2": "h2", "h3": "h3"}[kind]
            body.append(f"<{tag}>{html.escape(content)}</{tag}>")
        elif kind == "p":
            body.append(f"<p>{html.escape(content)}</p>")
        elif kind == "table":
            header, rows = content
            body.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"
                        + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
                        + "</table>")
        elif kind == "img":
            data = base64.b64encode((out_dir / content[1]).read_bytes()).decode()
            body.append(f'<figure><img alt="{html.escape(content[0])}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{html.escape(content[0])}</figcaption></figure>")
    style = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
             "font-size:13px}th{background:#f3f3f3}img{max-width:100%}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>polytask report</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")


def write_report(out_dir: Path, groups: dict[str, list[Run]], metrics: dict, s: ReportSettings) -> None:
    """Everything into `out_dir` (which the caller makes fresh and moves into place)."""
    images = {"curves": "success_curves.png", "matrix": "performance_matrix.png",
              "bars": "forgetting_transfer.png", "table": "metric_table.png"}
    plot_success_curves(groups, s, out_dir / images["curves"])
    plot_performance_matrix(groups, s, out_dir / images["matrix"])
    plot_forgetting_transfer(metrics, out_dir / images["bars"])
    header = ["Method"] + [name for name, _ in MAIN_COLUMNS] + ["Perf. maintenance (mrlep)", "BT (ratio)"]
    rows = [[label] + [_fmt(get(m)) for _, get in MAIN_COLUMNS]
            + [_fmt(m["l2m"]["lifetime"]["perf_maintenance_mrlep"]), _fmt(m["l2m"]["lifetime"]["backward_transfer_ratio"])]
            for label, m in metrics["groups"].items()]
    plot_metric_table(header, rows, out_dir / images["table"])
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    items = sections(metrics, images)
    (out_dir / "report.md").write_text(render_markdown(items))
    (out_dir / "report.html").write_text(render_html(items, out_dir))
