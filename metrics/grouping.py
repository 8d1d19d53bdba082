"""Which runs are seeds of one method: runs whose configs differ only in seed and runtime
settings form one group, labelled by the method and by the config values that tell groups apart."""

from __future__ import annotations

import json

from metrics.runs import Run

# Config keys that do not change what is learned: runs differing only here are seeds of one method.
# `launch`: how the run was started (learner ranks, torchrun's run id: W ranks train as one learner does).
NOT_METHOD_KEYS = ("run.seed", "run.device", "run.threads", "run.checkpoint_every", "run.keep_checkpoints",
                   "run.log_every", "runtime", "versions", "replay.device", "sac.compile", "launch")

# Config keys added after runs were recorded, with the value that does what the code did before the
# key existed: a config without the key is read with it, so that records from before and after pool.
ADDED_KEYS = {"plasticity.reset_temperature": False,  # the reset kept the temperature (agents/plasticity)
              "continual.change_scale": "std"}  # the change detector measured returns in standard deviations


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
    for key, value in ADDED_KEYS.items():
        if key.split(".")[0] in run.config:  # the section was recorded, the key not yet
            flat.setdefault(key, json.dumps(value))
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
