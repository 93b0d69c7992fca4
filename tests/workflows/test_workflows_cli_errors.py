"""Bad input through the real console entry: one clear paragraph naming the key/value/file, no traceback,
a non-zero exit (2 for a wrong command line); and Hydra's flags (--help, --cfg job, -m) behave like Hydra's.

Every case fails before any expensive work (no env, dataset or policy is built), so the file stays fast.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from armflow.workflows.cli import COMMANDS, main
from armflow.workflows.common import ConfigError, compose_config

ARMFLOW = Path(sys.executable).with_name("armflow")


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def not_a_dataset(tmp_path):
    (tmp_path / "notds").mkdir()
    (tmp_path / "notds" / "readme.txt").write_text("hello")
    return tmp_path / "notds"


@pytest.fixture
def checkpoint_without_config(tmp_path):
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "model.safetensors").write_bytes(b"")
    return tmp_path / "ckpt"


# (argv, exit code, fragments the message must contain)
USAGE_CASES = [
    (["improve", "preset=bogus"], ["preset=bogus", "serl, robofume, medal"]),  # refused before any demo is recorded
    (["improve", "intervention=joystick"], ["joystick", "keyboard, spacemouse, none"]),
    (["collect", "+stepz=10"], ["'stepz'", "no armflow code reads it", "episodes"]),
    (["train", "+stepz=10"], ["'stepz'", "Did you mean 'steps'"]),
    (["train", "stepz=10"], ["'stepz'", "Did you mean 'steps'"]),
    (["train", "policy.horizn=3"], ["'policy.horizn'", "Did you mean 'horizon'"]),
    (["finetune", "algo.params.gama=0.9"], ["'algo.params.gama'", "Did you mean 'gamma'"]),
    (["evaluate", "episodes=-3", "checkpoint=/nonexistent"], ["episodes=-3", ">= 1"]),
    (["collect", "episodes=-5"], ["episodes=-5", ">= 1"]),
    (["collect", "episodes=0"], ["episodes=0", ">= 1"]),
    (["collect", "episodes=abc"], ["episodes=abc", "expected an int"]),
    (["collect", "episodes=2.5"], ["episodes=2.5", "expected an int"]),
    (["train", "lr=fast"], ["lr=fast", "expected a number"]),
    (["train", "batch_size=0"], ["batch_size=0", ">= 1"]),
    (["train", "ema_decay=1.5"], ["ema_decay=1.5", "<= 1"]),
    (["evaluate", "n_envs=0", "checkpoint=x"], ["n_envs=0"]),
    (["evaluate", "seed=-1", "checkpoint=x"], ["seed=-1", ">= 0"]),
    (["collect", "only_success=maybe"], ["only_success=maybe", "true or false"]),
    (["collect", "cameras=agentview"], ["cameras=agentview", "expected a list"]),
    (["bench", "sim", "steps=0"], ["steps=0"]),
    (["serve", "state_rate_hz=0"], ["state_rate_hz=0", "> 0"]),
    (["collect", "task=nope"], ["task=nope", "lift", "toy2d"]),
    (["evaluate", "task=lfit", "checkpoint=x"], ["Did you mean 'lift'"]),
    (["collect", "device=joystick"], ["device=joystick", "scripted"]),
    (["train", "policy=nope"], ["policy=nope", "diffusion, flow, gaussian"]),
    (["finetune", "algo=sac"], ["algo=sac", "dppo"]),
    (["finetune", "reward=dense", "checkpoint=x"], ["reward=dense", "shaped"]),
    (["serve", "robot=ur6"], ["robot=ur6", "Did you mean 'ur'"]),
    (["bench", "finetune", "algos=[ppo,sac]"], ["'sac'", "fpo"]),
    (["bench", "train", "policy_type=vae"], ["policy_type=vae", "gaussian"]),
    (["train", "policy=flow,diffusion"], ["policy=flow,diffusion", "-m"]),
    (["train", "episodes=[1"], ["episodes=[1"]),
    (["train", "--bogus"], ["--bogus", "--multirun"]),
    (["train", "hydra.job.chdir=true"], ["hydra.job.chdir", "hydra.run.dir"]),
    (["colect"], ["Did you mean 'collect'"]),
    (["bench", "gpu"], ["'gpu'", "sim"]),
    (["train"], ["dataset is required", "LeRobot v3 dataset root"]),
    (["evaluate"], ["checkpoint is required"]),
    (["finetune"], ["checkpoint is required"]),
]


@pytest.mark.parametrize("argv,fragments", USAGE_CASES, ids=[" ".join(c[0]) for c in USAGE_CASES])
def test_bad_command_line_is_one_clear_paragraph_and_exit_2(capsys, tmp_path, argv, fragments):
    code, out, err = run_cli(capsys, *argv, f"out={tmp_path / 'run'}")
    assert code == 2, err
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert err.startswith("armflow "), err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    assert not (tmp_path / "run").exists()  # refused before any work, not even a run dir


def test_input_files_that_are_wrong_exit_1_naming_the_file(capsys, tmp_path, not_a_dataset,
                                                           checkpoint_without_config):
    code, _, err = run_cli(capsys, "train", f"dataset={not_a_dataset}", "steps=1", f"out={tmp_path / 't'}")
    assert code == 1 and str(not_a_dataset) in err and "info.json" in err and "Traceback" not in err
    code, _, err = run_cli(capsys, "evaluate", f"checkpoint={checkpoint_without_config}", "episodes=1",
                           f"out={tmp_path / 'e'}")
    assert code == 1 and str(checkpoint_without_config) in err and "config.json" in err
    assert "Traceback" not in err
    code, _, err = run_cli(capsys, "serve", "limits=no_such_limits", f"out={tmp_path / 's'}")
    assert code == 1 and "no_such_limits" in err and "sim_panda" in err and "Traceback" not in err


def test_armflow_debug_shows_the_traceback(tmp_path):
    env = dict(os.environ, ARMFLOW_DEBUG="1")
    cmd = [str(ARMFLOW), "collect", "episodes=-5", f"out={tmp_path}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and "Traceback" in proc.stderr and "episodes=-5" in proc.stderr
    plain = subprocess.run(cmd[:-1], capture_output=True, text=True, timeout=120)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr


def test_open_maps_and_policy_keys_take_plus_keys():
    """`+robot_options.KEY` / `+task_overrides.KEY` / `+policy.KEY` are read by their component (which
    validates them), so they are allowed; the key must not exist yet for `+`."""
    assert compose_config("serve", ["+robot_options.rate_hz=100"]).robot_options.rate_hz == 100
    assert compose_config("finetune", ["+task_overrides.max_episode_steps=10"]).task_overrides.max_episode_steps == 10
    assert compose_config("train", ["+policy.num_inference_steps=5"]).policy.num_inference_steps == 5
    with pytest.raises(ConfigError, match="already has 'steps'"):
        compose_config("train", ["+steps=5"])
    with pytest.raises(ConfigError, match=r"\+robot_options.rate_hz=100"):
        compose_config("serve", ["robot_options.rate_hz=100"])


def test_nullable_and_float_keys_take_their_forms():
    cfg = compose_config("evaluate", ["n_workers=null", "num_threads=2"])
    assert cfg.n_workers is None and cfg.num_threads == 2
    assert compose_config("train", ["lr=1e-4"]).lr == pytest.approx(1e-4)
    assert compose_config("finetune", ["budget_s=12.5"]).budget_s == 12.5  # a float key takes an int or a float
    assert compose_config("bench_train", ["policy_type=diffusion"]).policy_type == "diffusion"


def test_top_level_help_lists_every_command_and_exits_0(capsys):
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0
    for name in COMMANDS:
        line = next(l for l in out.splitlines() if l.strip().startswith(f"armflow {name} "))
        assert len(line.split(maxsplit=1 + len(name.split()))[-1]) > 10  # a description follows the name
    assert "record demos" in out and "--multirun" in out


def test_console_script_help_exits_0():
    proc = subprocess.run([str(ARMFLOW), "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "armflow train" in proc.stdout
    proc = subprocess.run([str(ARMFLOW)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "usage: armflow" in proc.stderr


def test_command_help_shows_groups_keys_and_defaults(capsys):
    code, out, err = run_cli(capsys, "train", "--help")
    assert code == 0 and "Traceback" not in err
    assert "policy: diffusion, flow, gaussian (default flow)" in out
    assert "steps: 3000" in out and "batch_size: 256" in out and "n_action_steps: 8" in out
    code, out, _ = run_cli(capsys, "train", "policy=diffusion", "--help")
    assert code == 0 and "prediction_type: v_prediction" in out
    code, out, _ = run_cli(capsys, "bench", "sim", "-h")
    assert code == 0 and "vec_envs: 8" in out


def test_cfg_job_prints_the_composed_config_and_runs_nothing(capsys, tmp_path):
    code, out, err = run_cli(capsys, "train", "--cfg", "job", "policy=diffusion", "steps=7", f"out={tmp_path / 'x'}")
    assert code == 0, err
    cfg = yaml.safe_load(out)
    assert cfg["steps"] == 7 and cfg["policy"]["type"] == "diffusion" and cfg["policy"]["prediction_type"]
    assert not (tmp_path / "x").exists()
    code, _, err = run_cli(capsys, "train", "--cfg", "hydra")
    assert code == 2 and "--cfg job" in err


def test_hydra_run_dir_is_the_run_dir(capsys, tmp_path):
    assert compose_config("collect", [f"hydra.run.dir={tmp_path / 'h'}"]).out == str(tmp_path / "h")
    stamped = compose_config("collect", [f"hydra.run.dir={tmp_path}/" + "${now:%Y}"]).out
    assert stamped.endswith(str(__import__("datetime").date.today().year))
    code, _, err = run_cli(capsys, "collect", f"hydra.run.dir={tmp_path / 'a'}", f"out={tmp_path / 'b'}")
    assert code == 2 and "disagree" in err


def test_multirun_sweeps_every_combination_into_numbered_dirs(capsys, tmp_path):
    """`-m seed=0,1 noise_std=0.0,0.01` runs four tiny toy2d collections into <sweep dir>/0..3, each with
    its own config and Hydra's `.hydra/` files."""
    sweep = tmp_path / "sweep"
    code, out, err = run_cli(capsys, "collect", "-m", "task=toy2d", "episodes=1", "seed=0,1",
                             "noise_std=0.0,0.01", f"hydra.sweep.dir={sweep}")
    assert code == 0, err
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["0", "1", "2", "3"]
    seen = set()
    for job in jobs:
        cfg = yaml.safe_load((sweep / job / "config.yaml").read_text())
        assert cfg["out"] == str(sweep / job)
        seen.add((cfg["seed"], cfg["noise_std"]))
        assert json.loads((sweep / job / "summary.json").read_text())["episodes_saved"] == 1
        overrides = yaml.safe_load((sweep / job / ".hydra" / "overrides.yaml").read_text())
        assert f"seed={cfg['seed']}" in overrides and "task=toy2d" in overrides
        assert yaml.safe_load((sweep / job / ".hydra" / "config.yaml").read_text())["seed"] == cfg["seed"]
    assert seen == {(0, 0.0), (0, 0.01), (1, 0.0), (1, 0.01)}
    assert "#3 : " in out


def test_multirun_validates_every_job_before_running_any(capsys, tmp_path):
    code, _, err = run_cli(capsys, "collect", "-m", "task=toy2d,nope", "episodes=1", f"out={tmp_path / 's'}")
    assert code == 2 and "task=nope" in err
    assert not (tmp_path / "s").exists()  # job 0 (toy2d) did not run either


def test_out_names_the_sweep_dir_under_multirun(capsys, tmp_path):
    code, out, err = run_cli(capsys, "collect", "--multirun", "task=toy2d", "episodes=1", "seed=3,4",
                             f"out={tmp_path / 'sw'}")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "sw").iterdir()) == ["0", "1"]
    code, out, err = run_cli(capsys, "collect", "-m", "seed=3,4", f"hydra.run.dir={tmp_path}")
    assert code == 2 and "hydra.sweep.dir" in err


def test_library_entry_points_refuse_empty_counts(tmp_path):
    """quickstart and the benches call these directly (no CLI validation in between): no NaN, no ZeroDivision."""
    from armflow.workflows.collect import collect_scripted
    from armflow.workflows.evaluate import evaluate_policy

    with pytest.raises(ValueError, match="episodes=-3"):
        evaluate_policy(None, "toy2d", -3)
    with pytest.raises(ValueError, match="episodes=0"):
        collect_scripted("toy2d", tmp_path / "ds", 0)
    assert not (tmp_path / "ds").exists()


def test_a_limits_file_that_is_not_yaml_names_the_file(capsys, tmp_path):
    bad = tmp_path / "limits.yaml"
    bad.write_text("joint_margin_rad: [\n")
    code, _, err = run_cli(capsys, "serve", f"limits={bad}", f"out={tmp_path / 's'}")
    assert code == 1 and str(bad) in err and "YAML" in err and "Traceback" not in err


@pytest.mark.parametrize("config_name", ["collect", "serve"])
def test_camera_examples_in_the_config_comments_exist(config_name):
    """The comments once suggested `[front]`, which no task renders."""
    import re

    from armflow.sim.tasks import CAMERAS
    from armflow.workflows.config import config_text

    line = next(l for l in config_text(config_name).splitlines() if l.startswith("cameras:"))
    examples = re.findall(r"\[([a-z_]+)\]", line.partition("#")[2])
    assert examples and all(cam in CAMERAS for cam in examples), line
