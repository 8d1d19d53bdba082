"""Every bad input: one readable line on stderr, exit code 2, no traceback, nothing written."""

import shutil
import subprocess

import pytest
import torch

from launch.train import main as train_main
from tests.conftest import train_in_process


def _assert_user_error(proc, *fragments):
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("args, fragments", [
    (["--suite", "atari"], ["unknown suite 'atari'", "metaworld", "pointmass"]),
    (["--suite", "metaworld", "--tasks", "reach-v3,fly-v3"], ["unknown task fly-v3", "MT10", "reach-v3"]),
    (["--suite", "pointmass", "--tasks", "MT10"], ["unknown task MT10", "PM4", "reach-n"]),
    (["--suite", "pointmass", "--set", "sac.learning_rate=1"], ["unknown config key sac.learning_rate"]),
    (["--suite", "pointmass", "--set", "nosuch.key=1"], ["unknown config key nosuch.key"]),
    (["--suite", "pointmass", "--set", "sac.gamma=high"], ["sac.gamma expects float", "'high'"]),
    (["--suite", "pointmass", "--set", "sac.hidden_sizes=64"], ["sac.hidden_sizes expects a list"]),
    (["--suite", "pointmass", "--set", "novalue"], ["--set expects key=value"]),
    (["--suite", "pointmass", "--steps", "-5"], ["run.steps must be positive"]),
    (["--suite", "pointmass", "--steps", "0"], ["run.steps must be positive"]),
    (["--suite", "pointmass", "--steps", "ten"], ["run.steps expects int"]),
    (["--suite", "pointmass", "--device", "tpu"], ["device"]),
    (["--suite", "pointmass", "--set", "eval.goals=51"], ["eval.goals must be at most 50"]),
    (["--suite", "pointmass", "--no-such-flag"], ["unrecognized arguments: --no-such-flag"]),
    (["--suite", "pointmass", "--backend", "mpi"], ["unknown backend 'mpi'", "single, local, ray"]),
    (["--suite", "pointmass", "--actors", "0"], ["runtime.actors must be a positive number or auto, got 0"]),
    (["--suite", "pointmass", "--actors", "many"], ["runtime.actors must be a positive number or auto", "'many'"]),
    (["--suite", "pointmass", "--set", "sac.compile=fast"], ["unknown sac.compile 'fast'", "reduce-overhead"]),
    (["--suite", "pointmass", "--set", "sac.encoder_tau=0.05"], ["sac.encoder_tau is the target rate of a shared"]),
    (["--suite", "pointmass", "--set", "sac.encoder=mlp", "--set", "sac.encoder_tau=2"],
     ["sac.encoder_tau must be in [0, 1]"]),
    (["--suite", "pointmass", "--set", "sac.compile=default", "--balancer", "pcgrad"], ["compiled passes"]),
    (["--suite", "pointmass", "--set", "replay.device=gpu"], ["unknown replay.device 'gpu'", "learner"]),
    (["--suite", "pointmass", "--set", "replay.capacity_per_task=10"], ["replay.capacity_per_task (10) must hold"]),
    (["--suite", "pointmass", "--set", "eval.policy=greedy"], ["unknown eval.policy 'greedy'", "mean, sample"]),
    (["--suite", "pointmass", "--set", "sac.update_order=random"], ["unknown sac.update_order"]),
    (["--suite", "pointmass", "--set", "sac.actor_lr=1e-3x"], ["sac.actor_lr expects float"]),
    (["--suite", "pointmass", "--balancer", "pcgard"], ["unknown balance.method 'pcgard'", "pcgrad", "famo"]),
    (["--suite", "pointmass", "--balancer", "famo", "--set", "balance.networks=[critic,actor]"],
     ["balance.method famo", "balance.networks=[critic]"]),
    (["--suite", "pointmass", "--set", "balance.networks=[policy]"], ["balance.networks must name some of"]),
    (["--suite", "pointmass", "--set", "balance.cagrad_c=-1"], ["balance.cagrad_c must be >= 0, got -1.0"]),
    (["--suite", "pointmass", "--balancer", "mgda", "--set", "balance.mgda_normalize=l1"],
     ["unknown balance.mgda_normalize 'l1'", "none, l2"]),
    (["--suite", "pointmass", "--set", "balance.nashmtl_max_norm=-1"],
     ["balance.nashmtl_max_norm must be >= 0 (0: no clip)"]),
    (["--suite", "pointmass", "--sync", "gossip"], ["unknown sync.mode 'gossip'", "step, local, qsr"]),
    (["--suite", "pointmass", "--sync", "local", "--sync-period", "0"], ["sync.period must be positive, got 0"]),
    (["--suite", "pointmass", "--sync", "qsr", "--qsr-alpha", "1e-3x"], ["sync.qsr_alpha expects float"]),
    (["--suite", "pointmass", "--set", "sac.lr_schedule=step"], ["unknown sac.lr_schedule 'step'", "cosine"]),
    (["--suite", "pointmass", "--set", "sac.trunk=resnet"], ["unknown sac.trunk 'resnet'", "mlp, hyper"]),
    (["--suite", "pointmass", "--set", "aux.pvn_rate=1"], ["aux.pvn_rate must be in (0, 1), got 1.0"]),
    (["--suite", "pointmass", "--method", "ewc"], ["continual.method ewc needs a task sequence"]),
    (["--suite", "pointmass", "--set", "sac.lr_final_fraction=2"],
     ["sac.lr_final_fraction must be in [0, 1], got 2.0"]),
    (["--suite", "pointmass", "--set", "sac.precision=tf32", "--device", "cpu"],
     ["sac.precision=tf32 runs matmuls on a CUDA GPU's TF32 tensor cores"]),
    (["--suite", "pointmass", "--set", "sac.memory=rnn"], ["unknown sac.memory 'rnn'", "gru, lstm"]),
    (["--suite", "pointmass", "--set", "sac.memory=gru", "--set", "sac.memory_sequence=0"],
     ["sac.memory_sequence must be positive"]),
    (["--suite", "pointmass", "--set", "sac.memory=gru", "--set", "sac.memory_burn_in=64"],
     ["sac.memory=gru does not support yet", "sac.memory_burn_in=64"]),
    (["--suite", "pointmass", "--set", "sac.memory=lstm", "--sequence", "PM2", "--method", "bc"],
     ["sac.memory=lstm does not support yet", "continual.method=bc"]),
    (["--suite", "pointmass", "--set", "sac.memory=gru", "--set", "aux.reward=1"], ["auxiliary losses"]),
    (["--suite", "pointmass", "--set", "sac.memory=gru", "--sequence", "PM2", "--method", "hnet",
      "--set", "sac.head=hyper"], ["continual.method=hnet without sac.trunk=hyper"]),
    (["--suite", "pointmass", "--set", "sac.memory=gru", "--set", "sac.trunk=hyper", "--set", "sac.hypernet=chunked",
      "--set", "sac.hyper_chunk_units=5"], ["sac.hyper_chunk_units=5", "divide the hidden size"]),
    (["--suite", "pointmass", "--set", "sac.hypernet=rnn"], ["sac.hypernet=rnn shapes hypernetworks"]),
    (["--suite", "pointmass", "--set", "sac.memory=gru", "--set", "sac.trunk=hyper", "--sequence", "PM2",
      "--method", "ewc"], ["continual.method=ewc with sac.trunk=hyper"]),
    (["--suite", "pointmass", "--sequence", "PM2", "--method", "ewc", "--set", "continual.hnet_fisher=true"],
     ["continual.hnet_fisher weights the hnet regularizer"]),
    (["--suite", "pointmass", "--set", "sac.hypernet=cnn"], ["unknown sac.hypernet 'cnn'", "mlp, chunked, rnn"]),
    (["--suite", "pointmass", "--set", "sac.trunk=hyper", "--set", "sac.hypernet=chunked", "--set",
      "sac.hyper_growth=true"], ["sac.hyper_growth", "sac.hypernet=rnn and --method hnet"]),
    (["--suite", "pointmass", "--set", "sac.memory=gru", "--balancer", "pcgrad"], ["balance.method=pcgrad"]),
    (["--suite", "pointmass", "--set", "sac.memory=gru", "--set", "sac.encoder=mlp"], ["sac.encoder=mlp"]),
    (["--suite", "pointmass", "--set", "sac.memory=gru", "--set", "replay.normalize_rewards=true"],
     ["replay.normalize_rewards"]),
    (["--suite", "pointmass", "--set", "sac.memory_context=15"], ["sac.memory_context is a recurrent mode"]),
    (["--suite", "pointmass", "--set", "sac.memory=lstm", "--set", "sac.memory_context=15"],
     ["3RL's context window runs through a GRU"]),
    (["--suite", "pointmass", "--set", "sac.memory=gru", "--engine", "rllib"],
     ["--engine rllib does not support", "sac.memory=gru"]),
    # continual learning without task boundaries (launch/config/boundaries.py)
    (["--suite", "pointmass", "--sequence", "PM2", "--method", "packnet", "--set", "continual.boundaries=hidden"],
     ["--method packnet acts at task boundaries", "continual.detector=plateau or change"]),
    (["--suite", "pointmass", "--sequence", "PM2", "--set", "continual.boundaries=hidden", "--set", "sac.head=multi"],
     ["gives the networks no task id", "sac.head=multi"]),
    (["--suite", "pointmass", "--sequence", "PM2", "--set", "continual.boundaries=hidden", "--set",
      "sac.task_input=true"], ["gives the networks no task id", "sac.task_input=false"]),
    (["--suite", "pointmass", "--sequence", "PM2", "--set", "continual.boundaries=hidden", "--set",
      "continual.blend_steps=7000"], ["continual.blend_steps=7,000 is longer than a stage (6,000 env steps)"]),
    (["--suite", "pointmass", "--sequence", "PM2", "--method", "ewc", "--set", "continual.detector=plateau"],
     ["continual.detector needs continual.boundaries=hidden"]),
    (["--suite", "pointmass", "--sequence", "PM2", "--set", "continual.blend_steps=100"],
     ["continual.blend_steps needs continual.boundaries=hidden"]),
    (["--suite", "pointmass", "--sequence", "PM2", "--method", "mir"], ["--method mir is a task-free method"]),
    (["--suite", "pointmass", "--sequence", "PM2", "--method", "agem", "--set", "continual.boundaries=hidden"],
     ["--method agem keeps per-task state"]),
    (["--suite", "pointmass", "--sequence", "PM2", "--method", "clear", "--set", "continual.boundaries=hidden",
      "--set", "sac.memory=gru"], ["--method clear keeps single transitions"]),
    (["--suite", "pointmass", "--sequence", "PM2", "--method", "3rl", "--set", "continual.boundaries=hidden",
      "--set", "sac.memory=none"], ["--method 3rl is SAC with a context window"]),
    (["--suite", "pointmass", "--sequence", "PM2", "--method", "3rl", "--set", "continual.boundaries=hidden",
      "--set", "continual.reset_replay=true"], ["--method 3rl replays everything", "reset_replay must be false"]),
    (["--suite", "pointmass", "--sequence", "PM2", "--set", "continual.boundaries=hidden", "--set",
      "continual.reset_optimizer=true"], ["reset at task boundaries", "need a detector"]),
    (["--suite", "pointmass", "--sequence", "PM2", "--set", "continual.boundaries=unknown"],
     ["unknown continual.boundaries 'unknown'", "given, hidden"]),
    (["--suite", "pointmass", "--sequence", "PM2", "--set", "continual.boundaries=hidden", "--set",
      "continual.detector=cusum"], ["unknown continual.detector 'cusum'", "plateau, change"]),
    (["--suite", "pointmass", "--set", "continual.boundaries=hidden"], ["describe a task sequence"]),
    (["--suite", "metaworld", "--tasks", "reach-v3", "--set", "env.target_visible=true"],
     ["env.target_visible is pointmass's"]),
    (["--suite", "pointmass", "--sequence", "PM2", "--set", "continual.boundaries=hidden", "--balancer", "famo"],
     ["balance.method famo balances per-task losses", "one task"]),
    (["--suite", "pointmass", "--sequence", "PM2", "--set", "continual.boundaries=hidden", "--method", "tfmas",
      "--set", "sac.memory=gru"], ["--method tfmas keeps single transitions"]),
    (["--suite", "pointmass", "--sequence", "PM2", "--set", "continual.boundaries=hidden", "--method", "mir",
      "--set", "continual.replay_fraction=1"], ["continual.replay_fraction < 1"]),
    (["--suite", "pointmass", "--sequence", "PM2", "--set", "continual.boundaries=hidden", "--engine", "rllib"],
     ["--engine rllib does not support", "continual.boundaries=hidden"]),
    # plasticity remedies (launch/config/plasticity.py)
    (["--suite", "pointmass", "--set", "plasticity.redoo=true"], ["unknown config key plasticity.redoo"]),
    (["--suite", "pointmass", "--set", "plasticity.cbp=-1e-4"], ["plasticity.cbp must be in [0, 1]", "got -0.0001"]),
    (["--suite", "pointmass", "--set", "plasticity.l2_init=-0.1"], ["plasticity.l2_init must be >= 0"]),
    (["--suite", "pointmass", "--set", "plasticity.redo_every=0"], ["plasticity.redo_every must be positive"]),
    (["--suite", "pointmass", "--set", "plasticity.redo=maybe"], ["plasticity.redo expects"]),
    (["--suite", "pointmass", "--set", "plasticity.networks=policy"], ["unknown plasticity.networks 'policy'"]),
    (["--suite", "pointmass", "--set", "plasticity.redo_every=500"],
     ["plasticity.redo_every is a setting of plasticity.redo, which is off"]),
    (["--suite", "pointmass", "--sequence", "PM2", "--set", "plasticity.reset_temperature=true"],
     ["plasticity.reset_temperature is a setting of plasticity.reset, which is off"]),
    (["--suite", "pointmass", "--set", "plasticity.reset=1"], ["plasticity.reset acts at stage starts",
                                                               "a multi-task run has none"]),
    (["--suite", "pointmass", "--sequence", "PM2", "--set", "continual.boundaries=hidden",
      "--set", "plasticity.shrink_perturb=true"], ["hidden boundaries without a detector", "shrink_perturb_every"]),
    (["--suite", "pointmass", "--set", "plasticity.redo=true", "--set", "sac.trunk=hyper", "--set",
      "sac.head=hyper"], ["plasticity.redo recycles units of MLP trunks", "sac.trunk=hyper"]),
    (["--suite", "pointmass", "--set", "plasticity.cbp=1e-4", "--set", "sac.hidden_sizes=[64]"],
     ["plasticity.cbp has no unit to recycle", "per-task heads"]),
    (["--suite", "pointmass", "--set", "plasticity.l2_init=1e-3", "--engine", "rllib"],
     ["--engine rllib does not support", "plasticity.l2_init"]),
])
def test_bad_flags(tmp_path, capsys, args, fragments):
    """In-process (the CLI's main, as `python launch/train.py` runs it): one line, exit 2."""
    run = tmp_path / "run"
    code = train_main([*args, "--run-dir", str(run)])
    captured = capsys.readouterr()
    _assert_user_error(subprocess.CompletedProcess(args, code, captured.out, captured.err), *fragments)
    assert not run.exists()


def test_malformed_and_wrong_config_files(tmp_path):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("sac:\n  actor_lr: [1e-3\n")
    _assert_user_error(train_in_process("--config", bad_yaml, "--run-dir", tmp_path / "a"), "malformed YAML",
                       "bad.yaml")
    not_mapping = tmp_path / "list.yaml"
    not_mapping.write_text("- 1\n- 2\n")
    _assert_user_error(train_in_process("--config", not_mapping, "--run-dir", tmp_path / "b"), "must hold a mapping")
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("sac:\n  actr_lr: 0.1\n")
    _assert_user_error(train_in_process("--config", unknown, "--run-dir", tmp_path / "c"),
                       "unknown config key sac.actr_lr")
    _assert_user_error(train_in_process("--config", tmp_path / "missing.yaml", "--run-dir", tmp_path / "d"),
                       "config file not found")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml", "list.yaml", "unknown.yaml"]


def test_existing_run_dir_is_not_overwritten(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "keep.txt").write_text("x")
    _assert_user_error(train_in_process("--suite", "pointmass", "--run-dir", run), "already exists", "--resume")
    assert [p.name for p in run.iterdir()] == ["keep.txt"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("finished") / "run"
    proc = train_in_process("--suite", "pointmass", "--backend", "single", "--steps", 400, "--run-dir", run,
                     "--set", "eval.goals=1")
    assert proc.returncode == 0, proc.stderr
    return run


def _copy(run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    return copy


def _snapshot(run):
    return {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}


def test_resume_missing_dir(tmp_path):
    _assert_user_error(train_in_process("--resume", tmp_path / "nope"), "cannot resume", "no config.yaml")


@pytest.mark.integration
def test_resume_without_checkpoint(finished_run, tmp_path):
    run = _copy(finished_run, tmp_path)
    shutil.rmtree(run / "checkpoints")
    _assert_user_error(train_in_process("--resume", run), "no checkpoint")


@pytest.mark.integration
def test_resume_corrupt_checkpoint_changes_nothing(finished_run, tmp_path):
    run = _copy(finished_run, tmp_path)
    latest = sorted((run / "checkpoints").glob("*.pt"))[-1]
    latest.write_bytes(latest.read_bytes()[:100])
    before = _snapshot(run)
    _assert_user_error(train_in_process("--resume", run, "--steps", 800), "corrupt checkpoint", latest.name)
    assert _snapshot(run) == before


@pytest.mark.integration
def test_resume_incompatible_checkpoint_version(finished_run, tmp_path):
    run = _copy(finished_run, tmp_path)
    latest = sorted((run / "checkpoints").glob("*.pt"))[-1]
    state = torch.load(latest, weights_only=True)
    state["format_version"] = 99
    torch.save(state, latest)
    _assert_user_error(train_in_process("--resume", run, "--steps", 800), "incompatible checkpoint", "version 99")


@pytest.mark.integration
def test_resume_checkpoint_not_matching_config(finished_run, tmp_path):
    run = _copy(finished_run, tmp_path)
    config = run / "config.yaml"
    config.write_text(config.read_text().replace("  - 64\n  - 64\n", "  - 32\n"))
    before = _snapshot(run)
    _assert_user_error(train_in_process("--resume", run, "--steps", 800), "checkpoint does not match")
    assert _snapshot(run) == before


@pytest.mark.integration
def test_resume_rejects_config_changes(finished_run):
    _assert_user_error(train_in_process("--resume", finished_run, "--set", "sac.gamma=0.5"), "only --steps, --device")


@pytest.mark.integration
def test_resume_checks_the_flags_it_may_change(finished_run):
    _assert_user_error(train_in_process("--resume", finished_run, "--steps", 0), "run.steps must be positive, got 0")
    _assert_user_error(train_in_process("--resume", finished_run, "--backend", "mpi"), "unknown backend 'mpi'")


@pytest.mark.integration
def test_resume_malformed_saved_config(finished_run, tmp_path):
    run = _copy(finished_run, tmp_path)
    (run / "config.yaml").write_text("env: [unclosed\n")
    _assert_user_error(train_in_process("--resume", run), "malformed YAML", "config.yaml")
