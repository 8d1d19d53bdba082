"""Config precedence, type checks and the saved-config round trip."""

import pytest

from launch.config import Config, build_config, load_run_config, to_dict
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
