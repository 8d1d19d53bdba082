"""Config precedence, type checks, the saved-config round trip, and the rule book (field constraints,
cross-field and world rules, the flag table)."""

import re
from types import SimpleNamespace

import pytest

from launch.config import Config, build_config, load_run_config
from launch.config.overrides import check_fields, check_value, choices, leaves, to_dict
from launch.config.validate import check_launch
from launch.errors import UserError


def test_precedence_defaults_preset_file_flags_set(tmp_path):
    assert build_config("metaworld").env.tasks == "MT10"       # preset over dataclass default
    pm = build_config("pointmass")
    assert pm.sac.hidden_sizes == (64, 64) and pm.run.steps == 20000
    config = tmp_path / "c.yaml"
    config.write_text("env:\n  suite: pointmass\nrun:\n  steps: 111\n  seed: 5\nsac:\n  gamma: 0.9\n")
    cfg = build_config(None, str(config), {"run.steps": 222}, ["sac.gamma=0.8", "sac.hidden_sizes=[8, 8]"])
    assert cfg.env.suite == "pointmass"                       # suite taken from the file
    assert cfg.sac.batch_size_per_task == 64                  # preset still applies under the file
    assert cfg.run.seed == 5                                  # file over preset
    assert cfg.run.steps == 222                               # flag over file
    assert cfg.sac.gamma == 0.8 and cfg.sac.hidden_sizes == (8, 8)  # --set over everything


def test_types_are_checked_and_converted():
    cfg = build_config("pointmass", overrides=["sac.actor_lr=1", "sac.target_entropy=null", "env.tasks=PM8"])
    assert cfg.sac.actor_lr == 1.0 and isinstance(cfg.sac.actor_lr, float)
    assert cfg.sac.target_entropy is None
    for bad in ("run.steps=1.5", "sac.task_input=3", "run.seed=true", "sac.hidden_sizes=[a]"):
        with pytest.raises(UserError):
            build_config("pointmass", overrides=[bad])


def test_saved_config_round_trips(tmp_path):
    import yaml

    cfg = build_config("pointmass", overrides=["sac.hidden_sizes=[8, 4]", "run.seed=3"])
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({**to_dict(cfg), "versions": {"torch": "x"}}))
    assert load_run_config(path) == cfg
    assert Config() != cfg


@pytest.mark.parametrize("text, key, expected", [
    ("1e-3", "sac.actor_lr", 0.001), ("3e-4", "sac.critic_lr", 0.0003), ("1E5", "continual.coef", 100000.0),
    (".5", "sac.tau", 0.5), ("-2e-1", "sac.target_entropy", -0.2), ("1e4", "run.steps", 10000),
    ("2_000", "run.steps", 2000), ("5", "sac.gamma", None)])
def test_numbers_as_people_type_them(tmp_path, text, key, expected):
    """YAML 1.1 reads 1e-3 as a string; every such number must work in --set and in --config."""
    section, name = key.split(".")
    config = tmp_path / "c.yaml"
    config.write_text(f"{section}:\n  {name}: {text}\n")
    for cfg in (lambda: build_config("pointmass", overrides=[f"{key}={text}"]),
                lambda: build_config("pointmass", str(config))):
        if expected is None:  # a number that parses but is out of range still fails validation
            with pytest.raises(UserError, match="sac.gamma"):
                cfg()
            continue
        value = getattr(getattr(cfg(), section), name)
        assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize("text", ["1.5", "1e-3x", "nan", ".inf", "1e400"])
def test_not_a_whole_number_or_not_finite_is_refused(text):
    key = "sac.actor_lr" if text in ("nan", ".inf", "1e-3x") else "run.steps"
    with pytest.raises(UserError, match=key):
        build_config("pointmass", overrides=[f"{key}={text}"])


def test_agem_honours_or_refuses_an_explicit_update_order(tmp_path):
    """A-GEM's joint projection needs simultaneous updates: it chooses them when the user said
    nothing, and an explicit sequential order is refused in one line, never replaced."""
    from launch.config import build_config
    from launch.errors import UserError
    agem = ["continual.method=agem", "continual.sequence=PM2"]
    assert build_config("pointmass", overrides=agem).sac.update_order == "simultaneous"
    assert build_config("pointmass", overrides=[*agem, "sac.update_order=simultaneous"]).sac.update_order \
        == "simultaneous"
    with pytest.raises(UserError, match="A-GEM's joint projection needs sac.update_order=simultaneous"):
        build_config("pointmass", overrides=[*agem, "sac.update_order=sequential"])
    file = tmp_path / "c.yaml"
    file.write_text("sac:\n  update_order: sequential\n")
    with pytest.raises(UserError, match="joint projection"):
        build_config("pointmass", config_file=str(file), overrides=agem)
    separate = [*agem, "continual.agem_projection=separate", "sac.update_order=sequential"]
    assert build_config("pointmass", overrides=separate).sac.update_order == "sequential"


# ---- the rule book: constraints declared next to the fields, rules in launch/config/validate.py ------

FIELDS = {key: (f.metadata, default) for key, f, default in leaves(Config())}  # key: (constraints, default)
CHOICE_KEYS = sorted(key for key, (meta, _) in FIELDS.items() if "choices" in meta)
BOUND_KEYS = sorted(key for key, (meta, _) in FIELDS.items() if set(meta) & {"min", "max", "above", "below"})


def _meta(key):
    return FIELDS[key][0]


def test_every_rule_validate_had_is_declared_on_its_field():
    """Pinned, so that deleting a field's constraint fails here (a new field only adds to the sets)."""
    assert set(CHOICE_KEYS) >= {
        "env.suite", "runtime.backend", "sac.encoder", "sac.trunk", "sac.head", "sac.activation", "balance.method",
        "sac.log_std_mode", "sac.update_order", "eval.policy", "sac.compile", "replay.device",
        "balance.mgda_normalize", "balance.networks", "sac.lr_schedule", "sync.mode", "aux.on", "continual.method",
        "continual.regularize", "continual.agem_projection", "run.engine", "rllib.algo"}
    assert set(BOUND_KEYS) >= {
        "run.steps", "eval.goals", "run.checkpoint_every", "run.log_every", "env.envs_per_task",
        "run.keep_checkpoints", "replay.capacity_per_task", "sac.batch_size_per_task", "runtime.chunk_steps",
        "runtime.max_policy_lag", "runtime.publish_every", "eval.every", "run.threads", "sac.warmup_steps_per_task",
        "sac.updates_per_round", "runtime.envs_per_actor", "sac.hidden_sizes", "sac.critic_hidden_sizes",
        "sac.tau", "sac.gamma", "sac.encoder_tau", "sac.experts", "sac.task_embedding_dim", "sac.actor_weight_decay",
        "sac.max_grad_norm", "sac.lr_warmup_updates", "sac.lr_schedule_updates", "sac.lr_final_fraction",
        "sync.period", "sync.period_min", "sync.qsr_alpha", "aux.reward", "aux.dynamics", "aux.inverse", "aux.pvn",
        "aux.hidden", "aux.pvn_tasks", "aux.pvn_actions", "aux.pvn_rate", "aux.pvn_tau", "balance.lr",
        "balance.gradnorm_alpha", "balance.nashmtl_update_every", "balance.famo_decay", "balance.cagrad_c",
        "balance.nashmtl_max_norm", "continual.steps_per_task", "continual.si_xi", "continual.importance_samples",
        "continual.memory_per_task", "continual.agem_batch_size", "continual.coef", "continual.packnet_retrain_steps",
        "continual.online_ewc_gamma", "rllib.envs_per_runner", "rllib.rollout_fragment_length",
        "rllib.ppo_batch_size", "rllib.ppo_minibatch_size", "rllib.ppo_epochs"}


def test_the_defaults_and_presets_keep_the_rules():
    check_fields(Config())
    for suite in ("metaworld", "pointmass"):
        build_config(suite)
        build_config(suite, overrides=["continual.sequence=PM2" if suite == "pointmass" else "continual.sequence=CW10"])


@pytest.mark.parametrize("key", CHOICE_KEYS)
def test_every_field_with_choices_refuses_a_bad_value_in_one_line_naming_the_valid_ones(key):
    meta = _meta(key)
    bad = "[nosuch]" if isinstance(FIELDS[key][1], tuple) else "nosuch"
    with pytest.raises(UserError) as refused:
        build_config("pointmass", overrides=[f"{key}={bad}"])
    message = str(refused.value)
    assert "\n" not in message and "nosuch" in message and meta.get("name", key) in message
    assert all(valid in message for valid in choices(meta)), message


@pytest.mark.parametrize("key", BOUND_KEYS)
def test_every_bounded_field_refuses_a_value_outside_and_takes_its_bound(key):
    meta = _meta(key)
    outside = [meta["above"]] if "above" in meta else [meta["min"] - 1] if "min" in meta else []
    outside += [meta["max"] + 1] if "max" in meta else [meta["below"]] if "below" in meta else []
    is_list = isinstance(FIELDS[key][1], tuple)
    for value in outside:
        with pytest.raises(UserError, match=re.escape(f"{meta.get('name', key)} must be")):
            build_config("pointmass", overrides=[f"{key}={[value] if is_list else value}"])
    for edge in ([meta["min"]] if "min" in meta else []) + ([meta["max"]] if "max" in meta else []):
        check_value(key, (edge,) if is_list else edge, meta)


@pytest.mark.parametrize("text, steps", [("0", None), ("-1", None), ("1e3", 1000), ("1_000", 1000), ("1", 1)])
def test_a_positive_count_refuses_0_and_below_and_takes_numbers_as_typed(text, steps):
    if steps is None:
        with pytest.raises(UserError, match=rf"^run.steps must be positive, got {text}$"):
            build_config("pointmass", overrides=[f"run.steps={text}"])
        with pytest.raises(UserError, match="run.steps must be positive"):
            build_config("pointmass", flags={"run.steps": text})  # a named flag: the same check, the same line
    else:
        assert build_config("pointmass", overrides=[f"run.steps={text}"]).run.steps == steps
        assert build_config("pointmass", flags={"run.steps": text}).run.steps == steps


def test_choices_are_read_from_the_live_registries(monkeypatch):
    from agents.balancers import BALANCERS
    from agents.trunks import TRUNKS
    from continual.strategies import METHODS
    for key, registry in (("sac.trunk", TRUNKS), ("balance.method", BALANCERS), ("continual.method", METHODS)):
        with pytest.raises(UserError, match=f"unknown {key} 'newcomer'"):
            build_config("pointmass", overrides=[f"{key}=newcomer", "continual.sequence=PM2"])
        monkeypatch.setitem(registry, "newcomer", object)
        assert "newcomer" in choices(_meta(key))
    cfg = build_config("pointmass", overrides=["sac.trunk=newcomer", "balance.method=newcomer",
                                                "continual.method=newcomer", "continual.sequence=PM2"])
    assert (cfg.sac.trunk, cfg.balance.method, cfg.continual.method) == ("newcomer",) * 3


def test_zero_actors_means_the_driver_samples_with_rllib_only():
    assert build_config("pointmass", flags={"run.engine": "rllib", "runtime.actors": 0}).runtime.actors == 0
    for flags in ({"runtime.actors": 0}, {"run.engine": "rllib", "runtime.actors": -1}):
        with pytest.raises(UserError, match="runtime.actors must be a positive number or auto"):
            build_config("pointmass", flags=flags)


PM4 = SimpleNamespace(name="PM4", tasks=range(4), num_goals=50)


@pytest.mark.parametrize("overrides, world, message", [
    (["continual.sequence=PM2"], 2, "continual runs (--sequence) train one stage at a time and need a single"),
    ([], 5, "5 learner ranks but only 4 tasks: every rank needs a task"),
    (["replay.save_in_checkpoint=true"], 2, "replay.save_in_checkpoint is not supported with several learner"),
    (["balance.method=famo"], 2, "balance.method famo reads every task's losses in one place"),
    (["eval.goals=51"], 1, "eval.goals must be at most 50 for PM4, got 51"),
    (["run.engine=rllib"], 2, "--engine rllib does not support torchrun learner ranks"),
    (["run.engine=rllib", "balance.method=pcgrad"], 1, "--engine rllib does not support --balancer pcgrad"),
    (["run.engine=rllib", "continual.sequence=PM2", "continual.method=si"], 1, "continual method si (supported:"),
])
def test_the_world_checks_fire_from_validate_py(overrides, world, message):
    """What Trainer.__init__, train_one and the RLlib driver checked, now before anything is built."""
    cfg = build_config("pointmass", overrides=overrides)
    with pytest.raises(UserError, match=re.escape(message)):
        check_launch(cfg, world, PM4)
    if world > 1:
        check_launch(cfg, 1, PM4)  # the ranks were the only reason
    check_launch(build_config("pointmass"), 4, PM4)


def test_flags_are_one_table_typed_by_their_keys_and_resume_names_what_may_change(tmp_path, monkeypatch, capsys):
    from agents.balancers import BALANCERS
    from launch.train import FLAGS, _flag_values, parse_args, resolve
    keys = {key for key, _, _ in leaves(Config())}
    assert [f.key for f in FLAGS if f.key and f.key not in keys] == []
    args = parse_args(["--steps", "1e3", "--actors", "2", "--device", "cpu", "--qsr-alpha", "1e-3", "--seed", "7"])
    cfg = build_config("pointmass", flags=_flag_values(args))
    assert (cfg.run.steps, cfg.runtime.actors, cfg.run.device, cfg.sync.qsr_alpha, cfg.run.seed) == \
        (1000, 2, "cpu", 1e-3, 7)
    with pytest.raises(UserError, match=re.escape("only --steps, --device, --backend, --actors, --envs-per-actor, "
                                                  "--ray-address and --dist-timeout may change (not --seed)")):
        resolve(parse_args(["--resume", str(tmp_path), "--seed", "1"]))
    monkeypatch.setitem(BALANCERS, "newcomer", object)  # the help lists the registry as it is
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    assert "newcomer" in capsys.readouterr().out
