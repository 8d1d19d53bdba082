"""Config precedence, type checks and the saved-config round trip."""

import pytest

from launch.config import Config, build_config, load_run_config
from launch.config.overrides import to_dict
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
