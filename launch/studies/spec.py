"""A study file, read and checked, and the trials it expands to.

    name: pm2-methods                                # the default study directory: studies/<name>
    base: {suite: pointmass, sequence: PM2, steps_per_task: 1500}   # train.py flags (--steps-per-task)
    set: {run.threads: 1}                            # config keys (--set), a mapping or "key=value" lines
    grid: {method: [none, ewc], seed: [0, 1]}        # axis -> values; the trials are every combination
    references: single-task                          # optional: the single-task runs forward transfer needs
    resources: {cpu: 1, gpu: 0}                      # per trial (default: 1 CPU, no GPU)
    retries: 2                                       # a failed trial is resumed this many times (default 2)
    max_concurrent: 4                                # optional cap on trials at once (default: the resources')
    ranks: 2                                         # optional: each trial is torchrun with this many learner ranks
    report: {last_k: 2}                              # optional: launch/report.py options for the study's report

A grid axis is a train.py flag (method, seed, sequence, steps_per_task, balancer, ...), a config
key (sac.actor_lr), or a name for named variants whose values are settings of both kinds:
    grid: {variant: {mlp: {}, care: {sac.trunk: care, sac.task_input: false}}, seed: [0, 1, 2]}
A list of grids is their trials together (a study that is not one rectangle):
    grid: [{method: [ewc, packnet], seed: [0, 1]}, {method: [3rl], continual.boundaries: [hidden], seed: [0, 1]}]
Every key is set in one place only (base, set, or one axis): a key set twice is refused. Only the
flags of a config key may be set: a resumed trial must run as it started (`train.py --resume`).

Unless the study sets them, a trial trains with the single-process backend and as many learner
threads per rank as its CPUs over its ranks (`runtime.backend=single`, `run.threads=<cpu / ranks>`):
a default run would size its actors to the whole machine, which concurrent trials share. A study
that chooses its runtime (any runtime.* key, or the engine) gets no backend default.

Reference runs (`references: single-task`): for each trial, launch/train.py --mode single-task's
configs (one per distinct task of its sequence, launch/config single_task_configs); trials whose
references are the same config share them (the method axis does not change them, the seed
does), so each distinct reference is trained once.
"""

from __future__ import annotations

import copy
import json
import math
import re
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path

from launch.errors import UserError

STUDY_KEYS = ("name", "base", "set", "grid", "references", "resources", "retries", "max_concurrent", "ranks",
              "report")
# report.py options the study decides: the report goes to report/ and compares with the study's references
NOT_IN_REPORTS = ("out", "export_l2logger", "reference")
# The train.py flags a study may set: those of a config key. The others are the study's: each trial's
# run directory and resumption, its one config (base, set and the grid), --mode (references:).


@dataclass
class Trial:
    name: str              # by its grid values: "method=ewc,seed=0"; a reference: "reference=reach-w,seed=0"
    values: dict           # axis -> value (variant axes: the variant's name)
    argv: list[str]        # launch/train.py arguments, without --run-dir
    steps: int             # env steps the run trains (the study's progress counts these)
    reference: str = ""    # the task, for a single-task reference run
    references: list[str] = field(default_factory=list)  # a grid trial's reference trials (names)
    config: dict = field(default_factory=dict)  # a reference's whole config (train.py --config)

    @property
    def run_dir(self) -> str:  # relative to the study directory
        return f"references/{self.name}" if self.reference else self.name

    def record(self) -> dict:
        return {"name": self.name, "values": self.values, "argv": self.argv, "steps": self.steps,
                "reference": self.reference, "references": self.references, "run_dir": self.run_dir}


@dataclass
class Study:
    name: str
    base: dict
    settings: dict          # `set`
    grid: dict              # axis -> list of values, or {variant name: settings}
    references: str
    resources: dict
    retries: int
    max_concurrent: int | None
    ranks: int
    report: dict            # launch/report.py options: {last_k: 2} -> --last-k 2
    trials: list[Trial]

    def report_argv(self) -> list[str]:
        return report_argv(self.report)

    def resolved(self) -> dict:
        """study.yaml of a study directory: the file as read, with every default, and its trials."""
        return {"name": self.name, "base": self.base, "set": self.settings, "grid": self.grid,
                "references": self.references or None, "resources": self.resources, "retries": self.retries,
                "max_concurrent": self.max_concurrent, "ranks": self.ranks, "report": self.report,
                "trials": [t.record() for t in self.trials]}


def _flags() -> dict:
    """train.py's flags a study may set: {name with underscores: the flag}."""
    from launch.train import FLAGS
    return {f.dest: f for f in FLAGS if f.key}


def _study_flags() -> set:
    from launch.train import FLAGS
    return {f.dest for f in FLAGS if not f.key}


def _config_keys() -> set:
    from launch.config import Config
    from launch.config.overrides import leaves
    return {key for key, _, _ in leaves(Config())}


def _text(value) -> str:
    """A value as train.py reads it from the command line (YAML), e.g. [128,128], true, 0.001."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):
        raise UserError(f"{value!r} is not a value a setting takes (a number, string, boolean or list)") from None


def _setting_key(name, where: str) -> str:
    """A study key as a flag name (steps-per-task -> steps_per_task) or a dotted config key; refused
    if it is neither."""
    if not isinstance(name, str):
        raise UserError(f"{where}: {name!r} is not a train.py flag or config key")
    flag = name.lstrip("-").replace("-", "_")
    if flag in _flags():
        return flag
    if name in _config_keys():
        return name
    if flag in _study_flags():
        raise UserError(f"{where}: {name} is the study's to set (each trial has its own run directory and one "
                        f"config: base, set and the grid)")
    raise UserError(f"{where}: unknown {'config key' if '.' in name else 'train.py flag'} {name!r}")


def _settings(tree, where: str) -> dict:
    """{flag or key: value} from a mapping (or, for `set`, "key=value" lines)."""
    if tree is None:
        return {}
    if isinstance(tree, list) and where == "set":
        from launch.config.overrides import parse_override
        pairs = [parse_override(str(line)) for line in tree]
        tree = dict(pairs)
        if len(tree) < len(pairs):
            raise UserError("set gives a key twice")
    if not isinstance(tree, dict):
        raise UserError(f"{where} must be a mapping of settings, got {type(tree).__name__}")
    return {_setting_key(k, where): v for k, v in tree.items()}


def _key(setting: str) -> str:
    """The config key a setting sets (the flag seed sets run.seed)."""
    flag = _flags().get(setting)
    return flag.key if flag else setting


def _argv(settings: dict) -> list[str]:
    flags = _flags()
    argv = []
    for key, value in settings.items():
        if key in flags:
            argv += [flags[key].name, _text(value)]
        else:
            argv += ["--set", f"{key}={_text(value)}"]
    return argv


def _axes(grid) -> dict:
    """axis -> [(value as the trial name shows it, {key: value} it sets)]."""
    if not isinstance(grid, dict) or not grid:
        raise UserError("grid must name at least one axis with at least one value, e.g. grid: {seed: [0, 1]}")
    axes = {}
    for axis, values in grid.items():
        where = f"grid axis {axis!r}"
        if isinstance(values, dict):  # named variants
            if not values:
                raise UserError(f"{where} has no variants")
            axes[axis] = [(str(name), _settings(settings or {}, f"{where}, variant {name!r}"))
                          for name, settings in values.items()]
            continue
        key = _setting_key(axis, "grid")
        values = values if isinstance(values, list) else [values]
        if not values:
            raise UserError(f"{where} has no values")
        if len({_text(v) for v in values}) < len(values):
            raise UserError(f"{where} lists a value twice")
        axes[axis] = [(_text(v), {key: v}) for v in values]
    return axes


def _trial_name(values: dict) -> str:
    name = ",".join(f"{axis}={value}" for axis, value in values.items())
    return re.sub(r"[^A-Za-z0-9._=,+-]", "_", name)


def load(path: str | Path, resolved: bool = False) -> Study:
    """Read, check and expand a study file (resolved: a study directory's study.yaml, with its
    trials): every trial's config is resolved as train.py would resolve it, so a study that would
    fail on a setting fails here, before any trial starts."""
    import yaml
    path = Path(path)
    try:
        tree = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UserError(f"study file {path} does not exist") from None
    except (OSError, ValueError, yaml.YAMLError) as e:  # ValueError: not UTF-8
        raise UserError(f"study file {path} is not readable YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(tree, dict):
        raise UserError(f"study file {path} must be a mapping (name, base, set, grid, ...)")
    unknown = sorted(set(map(str, tree)) - set(STUDY_KEYS) - ({"trials"} if resolved else set()))
    if unknown:
        raise UserError(f"study file {path}: unknown key {unknown[0]!r} (known: {', '.join(STUDY_KEYS)})")
    return build(tree, default_name=path.stem)


def _count(tree: dict, key: str, default, minimum: int):
    value = tree.get(key, default)
    if value is None and default is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"{key} must be an integer >= {minimum}, got {value!r}")
    return value


def _resources(tree) -> dict:
    tree = {} if tree is None else tree
    if not isinstance(tree, dict) or set(tree) - {"cpu", "gpu"}:
        raise UserError("resources must be a mapping of cpu and gpu per trial, e.g. {cpu: 1, gpu: 0}")
    tree = {"cpu": 1, "gpu": 0, **tree}
    for kind, minimum in (("cpu", 1), ("gpu", 0)):
        value = tree[kind]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or not minimum <= value <= 4096:
            raise UserError(f"resources.{kind} must be a number from {minimum} to 4096, got {value!r}")
    return tree


def build(tree: dict, default_name: str = "study") -> Study:
    name = tree.get("name", default_name)
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9._+-]+", name) or not name.strip("."):
        raise UserError(f"study name {name!r} must be a word of letters, digits and . _ + -")
    base, settings = _settings(tree.get("base"), "base"), _settings(tree.get("set"), "set")
    grids = tree.get("grid") if isinstance(tree.get("grid"), list) and tree.get("grid") else [tree.get("grid")]
    references = tree.get("references") or ""
    if references not in ("", "single-task"):
        raise UserError(f"references must be single-task (or left out), got {references!r}")
    resources = _resources(tree.get("resources"))
    study = Study(name, tree.get("base") or {}, tree.get("set") or {}, tree.get("grid"), references, resources,
                  _count(tree, "retries", 2, 0), _count(tree, "max_concurrent", None, 1), _count(tree, "ranks", 1, 1),
                  _report(tree.get("report")), [])
    defaults = {"backend": "single", "run.threads": max(1, int(resources["cpu"]) // study.ranks)}
    combinations = [(axes, combination) for grid in grids for axes in [_axes(grid)]
                    for combination in product(*axes.values())]
    for axes, combination in combinations:
        values = {axis: shown for axis, (shown, _) in zip(axes, combination)}
        chosen = dict(base)
        for where, part in [("set", settings)] + [(f"grid axis {a!r}", s) for a, (_, s) in zip(axes, combination)]:
            twice = sorted({_key(k) for k in chosen} & {_key(k) for k in part})
            if twice:
                raise UserError(f"{where} sets {twice[0]}, which is set elsewhere in the study too")
            chosen.update(part)
        chosen = {**_defaults(defaults, {_key(k) for k in chosen}), **chosen}
        study.trials.append(_checked(Trial(_trial_name(values), values, _argv(chosen), 0), study.ranks))
    if len({t.name for t in study.trials}) < len(study.trials):
        raise UserError("two trials would share a run directory (a grid point given twice, or values that "
                        "differ only in characters other than letters, digits and . _ = , + -)")
    if references:
        study.trials += _references(study)
    return study


def _defaults(defaults: dict, given: set) -> dict:
    """The study's defaults a trial takes: none the study set itself; no backend where the study
    chose the runtime (any runtime.* key) or RLlib's engine, which samples with its own runners."""
    runtime = any(k.startswith("runtime.") or k == "run.engine" for k in given)
    return {k: v for k, v in defaults.items() if _key(k) not in given and not (k == "backend" and runtime)}


def report_argv(options: dict) -> list[str]:
    """launch/report.py's arguments for {option: value}: a true switch is its bare flag."""
    argv = []
    for key, value in options.items():
        flag = f"--{str(key).replace('_', '-')}"
        argv += [flag] if value is True else [] if value is False else [flag, _text(value)]
    return argv


def _report(tree) -> dict:
    """launch/report.py's options for the study's report, checked by its own parser."""
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise UserError("report must be a mapping of launch/report.py options, e.g. {last_k: 2}")
    for key in tree:
        if str(key).replace("-", "_") in NOT_IN_REPORTS:
            raise UserError(f"report: {key} is the study's (the report goes to report/, with the study's references)")
    from launch.report import parse_args
    try:
        parsed = parse_args([".", *report_argv(tree)])
    except UserError as e:
        raise UserError(f"report: {e}") from None
    if parsed.out or parsed.reference or parsed.export_l2logger:  # an abbreviation of one (--ou, --ref)
        raise UserError("report: out, reference and export_l2logger are the study's")
    return dict(tree)


def _resolve(trial: Trial):
    """train.py's resolve() of a trial's arguments: the config and schedule, nothing written."""
    from launch.train import parse_args, resolve
    argv = trial.argv + ["--run-dir", "/nonexistent/polytask-study-check"]
    try:
        return resolve(parse_args(argv))
    except UserError as e:
        raise UserError(f"trial {trial.name}: {e}") from None


def _checked(trial: Trial, ranks: int) -> Trial:
    """The trial's config as train.py resolves it, checked against its suite and learner ranks as
    train.py checks it at start-up."""
    from envs import make_suite
    from launch.config.validate import check_launch
    cfg = _resolve(trial).cfg
    try:
        suite = make_suite(cfg.env.suite, cfg.env.tasks, cfg.run.seed, cfg.env.goal_observable, cfg.env.target_visible)
        check_launch(cfg, ranks, suite)
    except (ValueError, UserError) as e:
        raise UserError(f"trial {trial.name}: {e}") from None
    trial.steps = cfg.run.steps
    return trial


def _references(study: Study) -> list[Trial]:
    """One trial per distinct single-task reference config of the grid's trials."""
    from launch.config import single_task_configs
    from launch.config.overrides import to_dict
    found: dict[str, tuple[Trial, str, dict, list]] = {}  # config -> (first trial, task, config, trials using it)
    for trial in study.trials:
        resolved = _resolve(trial)
        if resolved.schedule is None:
            raise UserError(f"references: single-task needs a continual sequence; trial {trial.name} has none")
        for task, cfg in single_task_configs(resolved.cfg, resolved.schedule):
            tree = to_dict(cfg)
            key = json.dumps(tree, sort_keys=True)
            found.setdefault(key, (trial, task, tree, []))[3].append(trial)
    refs = []
    for first, task, tree, users in found.values():
        # named by the task and the grid values its trials share (the seed, not the method)
        shared = {a: v for a, v in first.values.items() if all(u.values.get(a) == v for u in users)}
        values = {"reference": task, **shared}
        refs.append(Trial(_trial_name(values), values, ["--suite", tree["env"]["suite"]], tree["run"]["steps"],
                          reference=task, config=copy.deepcopy(tree)))
    names = [t.name for t in refs]
    for ref, (first, _, _, _) in zip(refs, found.values()):
        if names.count(ref.name) > 1:  # its trials' shared values do not tell it apart: its first trial's do
            ref.values = {"reference": ref.reference, **first.values}
            ref.name = _trial_name(ref.values)
    if len({t.name for t in refs}) < len(refs):
        raise UserError("references: two distinct reference configs share a name; give the axes that "
                        "change them distinct values")
    for ref, (_, _, _, users) in zip(refs, found.values()):
        for trial in users:
            trial.references.append(ref.name)
    return refs
