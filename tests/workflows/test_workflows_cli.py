"""Every CLI entry point runs a few real steps; bad input gets a clear message."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from armflow.workflows.cli import COMMANDS, main, split_command
from armflow.workflows.common import ConfigError, compose_config


def test_unknown_command_lists_valid_names():
    with pytest.raises(ConfigError, match="Did you mean 'collect'.*Valid: collect"):
        split_command(["colect"])
    with pytest.raises(ConfigError, match="valid: sim, inference"):
        split_command(["bench", "gpu"])


@pytest.mark.parametrize("name", sorted({cfg for _, cfg in COMMANDS.values()}))
def test_every_command_config_composes_with_out_key(name):
    cfg = compose_config(name)
    assert "out" in cfg and cfg.out is None


def test_unknown_override_key_fails_loudly():
    with pytest.raises(ConfigError, match="episodez"):
        compose_config("collect", ["episodez=3"])


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory):
    """collect 3 lift demos -> train 30 steps -> evaluate 2 episodes, through the real CLI."""
    root = tmp_path_factory.mktemp("pipeline")
    assert main(["collect", "task=lift", "episodes=3", f"out={root / 'collect'}"]) == 0
    assert main(["train", f"dataset={root / 'collect' / 'dataset'}", "steps=30", "log_every=10", "save_every=15",
                 "batch_size=32", f"out={root / 'train'}"]) == 0
    assert main(["evaluate", f"checkpoint={root / 'train' / 'checkpoint'}", "task=lift", "episodes=2", "n_envs=2",
                 "n_workers=0", "video_episodes=1", f"out={root / 'eval'}"]) == 0
    return root


def test_collect_writes_dataset_and_summary(tiny_pipeline):
    from armflow.data import LeRobotDataset

    summary = json.loads((tiny_pipeline / "collect" / "summary.json").read_text())
    ds = LeRobotDataset(tiny_pipeline / "collect" / "dataset")
    assert ds.num_episodes == summary["episodes_saved"] == 3
    ep = ds.episode(0)
    assert ep["action"].shape[1] == 7 and ep["next.success"][-1].item() is True
    assert (tiny_pipeline / "collect" / "config.yaml").exists()
    # LeRobot's split: proprioception and the cube's (privileged) state are separate features
    assert ds.features["observation.state"]["shape"] == (8,)
    assert ds.features["observation.environment_state"]["shape"] == (10,)
    assert ep["observation.state"].shape[1] == 8 and ep["observation.environment_state"].shape[1] == 10
    assert set(ds.stats) >= {"observation.state", "observation.environment_state"}


def test_train_and_evaluate_read_both_state_features(tiny_pipeline):
    """The default obs_keys take proprioception and environment state; evaluate feeds the policy both."""
    from armflow.policies import load_policy

    policy = load_policy(tiny_pipeline / "train" / "checkpoint")
    assert policy.obs_spec == {"observation.state": (8,), "observation.environment_state": (10,)}
    result = json.loads((tiny_pipeline / "eval" / "eval.json").read_text())
    assert result["task_overrides"] == {} and all(r["length"] > 0 for r in result["per_episode"])


@pytest.fixture(scope="module")
def combined_layout_checkpoint(tmp_path_factory):
    """A flow checkpoint with the layout recorded before the state split: one observation.state (18,) on lift."""
    import numpy as np

    from armflow.policies import make_policy

    stats = {"observation.state": {"min": -np.ones(18), "max": np.ones(18)},
             "action": {"min": -np.ones(7), "max": np.ones(7)}}
    path = tmp_path_factory.mktemp("old") / "checkpoint"
    make_policy("flow", {"observation.state": (18,)}, 7, stats, n_obs_steps=2, horizon=8,
                n_action_steps=4).save_pretrained(path)
    return path


def test_evaluate_explains_an_old_combined_layout_checkpoint(combined_layout_checkpoint, tmp_path, capsys):
    code = main(["evaluate", f"checkpoint={combined_layout_checkpoint}", "task=lift", "episodes=1", "n_workers=0",
                 "video_episodes=0", f"out={tmp_path / 'eval'}"])
    err = " ".join(capsys.readouterr().err.split())  # the message is one paragraph, whatever the line wrapping
    assert code == 2 and "Traceback" not in err
    assert f"checkpoint {combined_layout_checkpoint}: its observation.state has 18 dims, the combined layout" in err
    assert "observation.state (8,)" in err and "observation.environment_state (10,)" in err
    assert "Retrain" in err and "+task_overrides.state_layout=combined" in err


def test_evaluate_runs_an_old_checkpoint_with_the_combined_layout(combined_layout_checkpoint, tmp_path):
    assert main(["evaluate", f"checkpoint={combined_layout_checkpoint}", "task=lift", "episodes=1", "n_envs=1",
                 "n_workers=0", "video_episodes=1", "+task_overrides.state_layout=combined",
                 f"out={tmp_path / 'eval'}"]) == 0
    result = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert result["episodes"] == 1 and result["task_overrides"] == {"state_layout": "combined"}
    assert len(result["videos"]) == 1


def test_train_writes_checkpoint_metrics_and_resumes(tiny_pipeline):
    from armflow.workflows import train as train_wf

    train_dir = tiny_pipeline / "train"
    assert (train_dir / "checkpoint" / "config.json").exists()
    assert (train_dir / "checkpoint" / "model.safetensors").exists()
    rows = [json.loads(l) for l in (train_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [10, 20, 30]
    assert all(r["train/loss"] == r["train/loss"] for r in rows)  # finite, not NaN
    # resume continues from step 30 to 40 instead of restarting
    cfg = compose_config("train", [f"dataset={tiny_pipeline / 'collect' / 'dataset'}", "steps=40", "log_every=10",
                                   "batch_size=32", "resume=true", f"out={train_dir}"])
    summary = train_wf.main(cfg)
    assert summary["steps"] == 40
    rows = [json.loads(l) for l in (train_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows][-1] == 40 and len(rows) == 4


def test_evaluate_writes_results_video_and_plots(tiny_pipeline):
    result = json.loads((tiny_pipeline / "eval" / "eval.json").read_text())
    assert result["episodes"] == 2 and 0.0 <= result["success_rate"] <= 1.0
    assert [r["seed"] for r in result["per_episode"]] == [100000, 100001]
    assert len(result["videos"]) == 1 and Path(result["videos"][0]).stat().st_size > 1000
    assert all(Path(p).exists() for p in result["plots"])


def test_evaluate_rejects_mismatched_checkpoint(tiny_pipeline, capsys):
    code = main(["evaluate", f"checkpoint={tiny_pipeline / 'train' / 'checkpoint'}", "task=toy2d", "episodes=1",
                 "n_workers=0", "video_episodes=0", f"out={tiny_pipeline / 'bad'}"])
    err = capsys.readouterr().err
    assert code == 2 and "action_dim" in err and "Traceback" not in err


def test_collect_sigkill_leaves_finished_episodes_readable(tmp_path):
    """SIGKILL `armflow collect` mid-run: every finished episode stays readable, the dataset stays valid."""
    from armflow.data import LeRobotDataset

    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "armflow.workflows.cli", "collect", "task=lift", "episodes=200", f"out={out}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    root = out / "dataset"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        info = root / "meta" / "info.json"
        if info.exists() and json.loads(info.read_text()).get("total_episodes", 0) >= 2:
            break
        time.sleep(0.05)
    time.sleep(0.3)  # land somewhere inside the next episode
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    ds = LeRobotDataset(root)
    assert ds.num_episodes >= 2
    for i in range(ds.num_episodes):
        ep = ds.episode(i)
        assert len(ep["action"]) > 0 and bool(ep["next.done"][-1])


def test_quickstart_end_to_end_writes_summary_and_report(tmp_path):
    """The main job at toy scale: every stage runs for real (serve is a separate process)."""
    out = tmp_path / "qs"
    assert main(["quickstart", "demos=3", "train_steps=20", "eval_episodes=3", "eval_n_envs=2", "video_episodes=1",
                 "steering.rollouts=3", "steering.critic_steps=5", "steering.K=2", "finetune_env_steps=64",
                 "finetune_overrides=['n_envs=2','n_steps=2','eval_episodes=2','n_eval_envs=2','eval_every_iters=1',"
                 "'algo.params.minibatch_size=8']", "deploy_episodes=3", f"out={out}"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    rates = summary["success_rate"]
    assert list(rates) == ["demos", "pretrained", "steered", "finetuned", "deployed"]
    assert all(0.0 <= v <= 1.0 for v in rates.values()) and rates["demos"] == 1.0
    assert summary["episodes_evaluated"] == 3 and summary["episodes_deployed"] == 3
    assert summary["bridge_rtt_us"]["p50"] > 0 and summary["wall_time_s"] > 0
    # the steered stage is the same policy reranked by a critic trained on demos + its own recorded episodes
    assert summary["steering"]["type"] == "vgps" and summary["steering"]["K"] == 2
    critic = json.loads((out / "critic" / "summary.json").read_text())
    assert critic["transitions"] > 0 and (out / "rollouts" / "meta" / "info.json").exists()
    # the RL stage used the measured DPPO recipe with the quickstart's overrides on top, and the env-step budget
    ft_cfg = yaml.safe_load((out / "finetune" / "config.yaml").read_text())
    assert ft_cfg["algo"]["name"] == "dppo" and ft_cfg["n_envs"] == 2 and ft_cfg["reward"] == "shaped"
    assert ft_cfg["env_steps"] == 64 and summary["finetune"]["env_steps"] >= 64
    # the fine-tuned policy is what was deployed; every gain is paired over the same seeds
    assert summary["deployed_checkpoint"] == str(out / "finetune" / "checkpoints" / "best")
    for stage in ("steered", "finetuned", "deployed"):
        gain = summary["gain_vs_pretrained"][stage]
        assert gain["episodes"] == 3 and gain["points"] == pytest.approx(100 * (rates[stage] - rates["pretrained"]))
    report = (out / "report.md").read_text()
    assert "success.png" in report and ".mp4" in report and "| steered |" in report and "V-GPS" in report
    assert (out / "success.png").exists()


def test_quickstart_wall_time_sums_the_invocations_that_built_the_run(tmp_path):
    from armflow.workflows.quickstart import WallClock

    first = WallClock(tmp_path)
    time.sleep(0.05)
    t1 = first.total()  # a run that crashed after this stage
    resumed = WallClock(tmp_path)
    assert resumed.before == pytest.approx(t1) and resumed.total() >= t1 + 0.0 and t1 >= 0.05


def test_paired_gain_interval_is_zero_when_every_seed_moves_alike():
    from armflow.workflows.quickstart import paired_gain

    base = {"per_episode": [{"seed": s, "success": s % 2 == 0} for s in range(10)]}
    same = paired_gain(base, base)
    assert same["points"] == 0 and same["ci95_points"] == 0 and not same["significant"]
    better = paired_gain(base, {"per_episode": [{"seed": s, "success": True} for s in range(10)]})
    assert better["points"] == 50 and better["ci95_points"] > 0 and better["episodes"] == 10
    assert better["significant"]  # 5 of 10 seeds flipped to success, none the other way


def test_serve_accepts_a_limits_file_override():
    """`limits=` must stay a plain key (a config group of the same name once swallowed it)."""
    cfg = compose_config("serve", ["limits=/tmp/my_limits.yaml"])
    assert cfg.limits == "/tmp/my_limits.yaml"
