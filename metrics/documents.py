"""Turn runs into a lifelong-learning report: metrics.json, report.md, report.html and PNG plots.

The data flow is one-way: run dirs -> `Run`s (metrics/runs.py) -> groups of seeds
(metrics/grouping.py) -> metrics (metrics/summary.py, pure functions) -> figures
(metrics/plots.py) and the documents written here.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from metrics.plots import plot_forgetting_transfer, plot_performance_matrix, plot_plasticity, plot_success_curves
from metrics.runs import Run
from metrics.summary import ReportSettings
from metrics.videos import copy_films


def _fmt(entry: dict | None, digits: int = 2) -> str:
    """'0.83 [0.80, 0.86]' from {"mean", "lower", "upper"}; 'n/a' where missing."""
    if not entry or entry.get("mean") is None:
        return "n/a"
    if entry.get("lower") is None:
        return f"{entry['mean']:.{digits}f}"
    return f"{entry['mean']:.{digits}f} [{entry['lower']:.{digits}f}, {entry['upper']:.{digits}f}]"


MAIN_COLUMNS = [("Average performance", lambda m: m["continual"]["performance"]),
                ("Forgetting", lambda m: m["continual"]["forgetting"]),
                ("Forward transfer", lambda m: m["continual"].get("forward_transfer")),
                ("Final success (mean)", lambda m: m["multitask"]["final_mean"]),
                ("IQM", lambda m: m["multitask"]["iqm"])]
L2M_NAMES = {"perf_maintenance_mrlep": "Perf. maintenance (mrlep)",
             "perf_maintenance_mrtlp": "Perf. maintenance (mrtlp)",
             "forward_transfer_ratio": "Forward transfer (ratio)",
             "forward_transfer_contrast": "Forward transfer (contrast)",
             "backward_transfer_ratio": "Backward transfer (ratio)",
             "backward_transfer_contrast": "Backward transfer (contrast)", "ste_rel_perf": "Relative perf. vs STE",
             "sample_efficiency": "Sample efficiency", "perf_recovery": "Performance recovery",
             "avg_train_perf": "Avg. train perf.", "avg_eval_perf": "Avg. eval perf."}


HEADLINE = [("average performance", lambda m: m["continual"]["performance"], max),
            ("least forgetting", lambda m: m["continual"]["forgetting"], min),
            ("forward transfer", lambda m: m["continual"].get("forward_transfer"), max),
            ("final success", lambda m: m["multitask"]["final_mean"], max)]


def headline(groups: dict) -> str:
    """The sentence at the top: which group did best on each main metric, and whether its interval
    overlaps the runner-up's; with one group, its numbers."""
    parts = []
    for name, get, best in HEADLINE:
        scored = [(label, get(m)) for label, m in groups.items() if get(m) and get(m).get("mean") is not None]
        if not scored:
            continue
        if len(groups) == 1:
            parts.append(f"{name.removeprefix('least ')} {_fmt(scored[0][1])}")
            continue
        scored.sort(key=lambda item: item[1]["mean"], reverse=best is max)
        (label, entry), text = scored[0], ""
        if len(scored) > 1 and all(len(groups[g]["seeds"]) > 1 for g, _ in scored[:2]) \
                and entry.get("lower") is not None and scored[1][1].get("lower") is not None:
            runner_up = scored[1][1]
            overlap = entry["lower"] <= runner_up["upper"] if best is max else entry["upper"] >= runner_up["lower"]
            text = f" ({'its interval overlaps' if overlap else 'clear of'} {scored[1][0]}'s)"
        parts.append(f"{'best ' if best is max else ''}{name}: {label}, {_fmt(entry)}{text}")
    if not parts:
        return ""
    sentence = (f"{next(iter(groups))}: " if len(groups) == 1 else "") + "; ".join(parts) + "."
    if len(groups) > 1 and any(len(m["seeds"]) < 2 for m in groups.values()):
        sentence += " One seed in a group: no interval to tell the groups apart."
    return sentence[0].upper() + sentence[1:]


def sections(metrics: dict, images: dict[str, str], films: dict | None = None) -> list[tuple]:
    """The report as (kind, content) items: ("h", text), ("p", text), ("table", (header, rows)),
    ("img", (title, file)), ("videos", {title: [(caption, file)]}). report.md and report.html render
    the same items."""
    groups = metrics["groups"]
    s = metrics["settings"]
    out: list[tuple] = [("h", "Lifelong-learning report")]
    if summary := headline(groups):
        out.append(("p", summary))
    out.append(("p", f"{sum(len(m['runs']) for m in groups.values())} runs in {len(groups)} group(s). "
                     f"Performance measure: {s['measure']}. Continual World metrics: mean over seeds with "
                     f"{s['cw_confidence']:.0%} bootstrap CI ({s['cw_reps']} resamples over seeds); multi-task "
                     f"aggregates: {s['mt_confidence']:.0%} stratified bootstrap CI ({s['mt_reps']} resamples)."))
    main_header = ["Method", "Seeds", "Eval policy", "Boundaries"] + [name for name, _ in MAIN_COLUMNS]
    main_rows = [[label, str(len(m["seeds"])), _protocol(m), m["setting"]] + [_fmt(get(m)) for _, get in MAIN_COLUMNS]
                 for label, m in groups.items()]
    out += [("h2", "Main metrics"), ("table", (main_header, main_rows))]
    if not any(m["continual"].get("forward_transfer") for m in groups.values()):
        out.append(("p", "Forward transfer: not computed, no single-task reference runs were given (report.py "
                         "--reference, or a study's references: single-task)."))
    out += _task_free_section(groups)
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
            ("img", ("Forgetting and transfer", images["bars"])),
            ("p", f"Final success: the task's last evaluation, mean over seeds [CI]. Performance: Continual "
                  f"World's, the mean of the last {s['last_k']} evaluations at the end of training. Forgetting: "
                  f"the drop from the end of the task's own stage to the end of training.")]
    for label, m in groups.items():
        tasks = m["tasks"]
        rows = [[t, _fmt(m["multitask"]["per_task"][t]), _num_str(m["continual"]["performance"]["per_task"][t]),
                 _num_str(m["continual"]["forgetting"]["per_task"][t]),
                 _num_str((m["continual"].get("forward_transfer") or {}).get("per_task", {}).get(t))] for t in tasks]
        out += [("h3", label), ("table", (["Task", "Final success (last evaluation) [CI]",
                                           f"Performance (mean of last {s['last_k']})", "Forgetting",
                                           "Forward transfer"], rows))]
        stage_ends = m["performance_matrix"]["stage_ends"]
        pm_rows = [[t] + [_num_str(v) for v in m["performance_matrix"]["mean"][i]] for i, t in enumerate(tasks)]
        out += [("p", "Performance matrix at the end of each stage (rows: tasks; columns: stage ends):"),
                ("table", (["Task"] + [f"{e:,}" for e in stage_ends], pm_rows))]
    out += _plasticity_section(groups, images)
    if films:
        out += [("h2", "Videos"),
                ("p", "Goal 0's evaluation episode of each task (eval.video): the latest, and in a continual run "
                      "the one at the end of each stage, so forgetting can be watched."),
                ("videos", films)]
    out += [("h2", "Performance matrix"), ("img", ("Performance matrix", images["matrix"]))]
    runs = [[label, str(seed), name] for label, m in groups.items() for seed, name in zip(m["seeds"], m["runs"])]
    out += [("h2", "Runs"), ("table", (["Method", "Seed", "Run directory"], runs))]
    return out


def _task_free_section(groups: dict) -> list[tuple]:
    """Anytime performance and boundary detection (metrics/task_free.py), beside each group's setting."""
    rows = []
    for label, m in groups.items():
        detection = m["task_free"].get("detection")
        rows.append([label, m["setting"], _fmt(m["task_free"]["anytime_performance"])]
                    + ([_fmt(detection["delay"], 0), _fmt(detection["false_alarms"], 1), _fmt(detection["missed"], 1)]
                       if detection else ["n/a"] * 3))
    return [("h2", "Without task boundaries"),
            ("p", "Boundaries: given (the learner is told every switch) or hidden (no task id, no switch; a "
                  "blend and a detector if the run had them). Anytime performance: the mean over evaluations "
                  "of the mean success over the tasks seen so far. Detection (runs with a detector): mean delay "
                  "in env steps over the switches detected, false alarms and missed switches per run."),
            ("table", (["Method", "Boundaries", "Anytime performance", "Detection delay", "False alarms",
                        "Missed switches"], rows))]


PLASTICITY_END = [("Actor dormant", "actor/dormant"), ("Critic dormant", "critic/dormant"),
                  ("Actor srank", "actor/srank"), ("Critic srank", "critic/srank"),
                  ("Actor weight norm", "actor/weight_norm"), ("Critic weight norm", "critic/weight_norm"),
                  ("Entropy", "actor/entropy")]


def _plasticity_section(groups: dict, images: dict) -> list[tuple]:
    """Learning speed per stage and the diagnostics at the end (metrics/plasticity.py)."""
    rows = []
    for label, m in groups.items():
        p = m["plasticity"]
        auc = p["stage_auc"]["mean"]
        rows.append([label, m["setting"], _num_str(auc[0]), _num_str(auc[-1]), _num_str(p["stage_auc"]["change"])]
                    + [_num_str(p["end"].get(key)) for _, key in PLASTICITY_END])
    return [("h2", "Plasticity"),
            ("p", "Learning speed: each stage's AUC, the mean success of its tasks over the evaluations in the "
                  "stage; change: the last five stages' mean minus the first five's. Diagnostics at the last log "
                  "point (plasticity.jsonl): dormant units (ReDo's score <= 0), effective rank of the penultimate "
                  "layer, weight norms, the policy's entropy; n/a where the run logged none."),
            ("table", (["Method", "Boundaries", "AUC, stage 1", "AUC, last stage", "Change"]
                       + [name for name, _ in PLASTICITY_END], rows)),
            ("img", ("Plasticity", images["plasticity"]))]


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
        elif kind == "videos":
            for title, films in content.items():
                lines += [f"**{title}:** " + ", ".join(f"[{caption}]({path})" for caption, path in films), ""]
    return "\n".join(lines)


def render_html(items: list[tuple], out_dir: Path) -> str:
    """Images embedded as base64 data URIs; videos beside it in videos/."""
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
        elif kind == "videos":  # the mp4s beside report.html (videos/): a report folder is one piece
            for title, films in content.items():
                body.append(f"<h3>{html.escape(title)}</h3><div class='films'>" + "".join(
                    f"<figure><video src='{html.escape(path)}' controls muted loop playsinline preload='metadata'>"
                    f"</video><figcaption>{html.escape(caption)}</figcaption></figure>" for caption, path in films)
                    + "</div>")
    # wide tables wrap their cells rather than run past the page; figures and videos scale down to it
    style = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:1em 0;max-width:100%}td,th{border:1px solid #ccc;"
             "padding:3px 6px;font-size:12px;overflow-wrap:break-word}th{background:#f3f3f3}img{max-width:100%}"
             "figure{margin:0.5em 0}.films{display:flex;flex-wrap:wrap;gap:8px}.films figure{margin:0;"
             "max-width:260px}video{width:256px;max-width:100%}figcaption{font-size:12px}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>polytask report</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")


def write_report(out_dir: Path, groups: dict[str, list[Run]], metrics: dict, s: ReportSettings) -> None:
    """Everything into `out_dir` (which the caller makes fresh and moves into place)."""
    images = {"curves": "success_curves.png", "matrix": "performance_matrix.png",
              "bars": "forgetting_transfer.png", "plasticity": "plasticity.png"}
    plot_success_curves(groups, s, out_dir / images["curves"])
    plot_performance_matrix(groups, s, out_dir / images["matrix"])
    plot_forgetting_transfer(metrics, out_dir / images["bars"])
    plot_plasticity(groups, metrics, out_dir / images["plasticity"])
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    items = sections(metrics, images, copy_films(groups, out_dir))
    (out_dir / "report.md").write_text(render_markdown(items))
    (out_dir / "report.html").write_text(render_html(items, out_dir))
