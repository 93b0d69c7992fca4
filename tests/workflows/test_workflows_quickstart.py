"""``armflow quickstart obs=vision``: the whole story from cameras, at toy scale, through the real CLI."""
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from armflow.workflows.cli import main
from armflow.workflows.common import ConfigError, compose_config

ENV_STATE = "observation.environment_state"
SIDE = 32  # tiny camera images
CAMERAS = ["observation.images.agentview", "observation.images.wrist"]


@pytest.fixture(scope="module")
def vision_run(tmp_path_factory):
    """Two demos with agentview + wrist at 32x32, 3 train steps, 2 eval episodes, 3 s of DSRL, one deployed episode."""
    import os

    os.environ.setdefault("MUJOCO_GL", "osmesa")
    os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")
    out = tmp_path_factory.mktemp("qs_vision")
    assert main(["quickstart", "obs=vision", "demos=2", "train_steps=3", f"obs.image_size={SIDE}", "eval_episodes=2",
                 "eval_n_envs=2", "video_episodes=1", "finetune_budget_s=3", "deploy_episodes=1", f"out={out}"]) == 0
    return out


def test_vision_policy_reads_cameras_and_proprioception_never_object_state(vision_run):
    train_cfg = yaml.safe_load((vision_run / "train" / "config.yaml").read_text())
    assert train_cfg["obs_keys"] == ["observation.state", *CAMERAS]
    spec = json.loads((Path(train_cfg["out"]) / "checkpoint" / "config.json").read_text())["obs_spec"]
    assert ENV_STATE not in spec and sorted(spec) == sorted(["observation.state", *CAMERAS])
    assert spec["observation.images.wrist"] == [SIDE, SIDE, 3]
    # every stage's env rendered the same cameras at the same size
    collect_cfg = yaml.safe_load((vision_run / "collect" / "config.yaml").read_text())
    assert collect_cfg["cameras"] == ["agentview", "wrist"] and collect_cfg["task_overrides"] == {"image_size": SIDE}
    for stage in ("evaluate", "finetune", "evaluate_finetuned"):
        stage_cfg = yaml.safe_load((vision_run / stage / "config.yaml").read_text())
        assert stage_cfg["task_overrides"] == {"cameras": ["agentview", "wrist"], "image_size": SIDE}, stage
    summary = json.loads((vision_run / "summary.json").read_text())
    assert summary["policy_inputs"] == list(spec) and list(summary["skipped"]) == ["steered"]  # vector-only critic
    assert list(summary["success_rate"]) == ["demos", "pretrained", "finetuned", "deployed"]
    assert summary["episodes_deployed"] == 1 and summary["finetune"]["env_steps"] > 0


def test_report_shows_the_policy_views_with_frames_of_the_camera_size(vision_run):
    from armflow.workflows.media import read_mp4

    report = (vision_run / "report.md").read_text()
    views = re.findall(r"\[([^]]+_policy_view\.mp4)\]\(([^)]+)\)", report)
    assert len(views) == 1, report
    frames = read_mp4(vision_run / views[0][1])
    # the two cameras side by side, one frame per observation of the episode (reset + every step)
    assert frames.shape[1:] == (SIDE, 2 * SIDE, 3) and len(frames) > 10
    assert frames.std() > 5  # a rendered scene, not a blank frame
    strip = re.search(r"!\[policy view [^]]*\]\(([^)]+\.png)\)", report)
    assert strip and (vision_run / strip.group(1)).stat().st_size > 1000
    third = re.findall(r"third person\): \[[^]]+\]\(([^)]+\.mp4)\)", report)
    assert len(third) == 1 and read_mp4(vision_run / third[0]).shape[1] > SIDE
    # the deployed episode's video holds the served cameras side by side (not one camera after the other)
    deployed = json.loads((vision_run / "deploy" / "summary.json").read_text())["videos"]
    assert len(deployed) == 1 and read_mp4(deployed[0]).shape[1:] == (SIDE, 2 * SIDE, 3)
    assert Path(deployed[0]).name in report


def test_obs_group_refuses_an_unknown_option_listing_the_valid_ones(capsys):
    with pytest.raises(ConfigError, match=r"obs=nonsense: no such obs .*Valid: state, vision"):
        compose_config("quickstart", ["obs=nonsense"])
    assert main(["quickstart", "obs=nonsense"]) == 2
    assert "Valid: state, vision" in capsys.readouterr().err


def test_obs_state_keeps_the_state_quickstart_and_help_lists_the_group(capsys):
    state, default = compose_config("quickstart", ["obs=state"]), compose_config("quickstart")
    assert state == default and default.obs.cameras == [] and default.obs.state_keys is None
    assert (default.demos, default.policy.type, default.finetune_algo, default.steering.rollouts) == (15, "diffusion",
                                                                                                     "dppo", 200)
    vision = compose_config("quickstart", ["obs=vision", "train_steps=7"])
    assert vision.train_steps == 7 and vision.demos == 100 and vision.demo_noise_std == 0.0  # the command line wins
    assert (vision.policy.type, vision.finetune_algo, vision.steering.rollouts) == ("flow", "dsrl", 0)
    assert main(["quickstart", "--help"]) == 0
    assert "obs: state, vision (default state)" in capsys.readouterr().out


def test_camera_row_puts_the_cameras_side_by_side_in_key_order():
    from armflow.workflows.media import camera_row

    a, b = np.zeros((4, 4, 3), np.uint8), np.full((4, 4, 3), 255, np.uint8)
    obs = {"observation.state": np.zeros(8), "observation.images.a": a, "observation.images.b": b}
    row = camera_row(obs)
    assert row.shape == (4, 8, 3) and row[:, :4].max() == 0 and row[:, 4:].min() == 255
    assert camera_row(obs, ["observation.images.b", "observation.images.a"])[:, :4].min() == 255
    assert camera_row({"observation.state": np.zeros(8)}) is None


def test_report_lists_a_skipped_stage_in_pipeline_order(tmp_path):
    from armflow.workflows.quickstart import write_report

    summary = {"task": "lift", "success_rate": {"demos": 1.0, "pretrained": 0.5, "deployed": 0.5}, "cameras": [],
               "image_size": 84, "policy_inputs": ["observation.state"], "wall_time_s": 1.0, "episodes_evaluated": 2,
               "skipped": {"finetuned": "finetune_budget_s=0"}}
    text = write_report(tmp_path, summary, {"evaluate": {}}).read_text()
    rows = [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ") and "stage" not in line]
    assert rows == ["demos", "pretrained", "finetuned", "deployed"]
    assert "| finetuned | skipped (finetune_budget_s=0) |" in text and "(no camera)" in text
