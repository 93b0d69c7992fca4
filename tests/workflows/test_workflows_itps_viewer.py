"""The ITPS viewer without a display: its pixel <-> workspace map on the real MuJoCo cameras, the goal record
(goals_applied), viewer_goals replay and the refusals of `armflow evaluate viewer=true`."""
from __future__ import annotations

import json

import numpy as np
import pytest

from armflow.workflows.itps_viewer import pixel_to_plane, world_to_pixel


@pytest.mark.parametrize("camera", ["topview", "agentview"])
def test_a_cube_pixel_maps_back_to_the_cube_on_its_plane(camera):
    from armflow.sim import make_env

    env = make_env("pick_either")
    env.reset(seed=100000)
    base = env.unwrapped
    for i in range(2):
        cube = base.cube_pos(i)
        u, v = world_to_pixel(base.model, base._data, camera, cube, 480, 480)
        assert 0 <= u < 480 and 0 <= v < 480
        back = pixel_to_plane(base.model, base._data, camera, u, v, 480, 480, float(cube[2]))
        # one pixel's footprint at ~1 m from the camera is ~2 mm
        assert np.linalg.norm(back - cube) < 0.005, (camera, i, back, cube)
    env.close()


def test_topview_pixels_move_the_way_the_image_shows():
    """The top camera's image right is world -y (xyaxes "0 -1 0 1 0 0"), image up is world +x."""
    from armflow.sim import make_env

    env = make_env("pick_either")
    env.reset(seed=0)
    base = env.unwrapped
    centre = pixel_to_plane(base.model, base._data, "topview", 240, 240, 480, 480, 0.0)
    right = pixel_to_plane(base.model, base._data, "topview", 340, 240, 480, 480, 0.0)
    up = pixel_to_plane(base.model, base._data, "topview", 240, 140, 480, 480, 0.0)
    np.testing.assert_allclose(centre[:2], [0.5, 0.0], atol=3e-3)
    assert right[1] < centre[1] - 0.05 and abs(right[0] - centre[0]) < 1e-3
    assert up[0] > centre[0] + 0.05 and abs(up[1] - centre[1]) < 1e-3
    env.close()


def test_goal_timeline_groups_consecutive_chunks_by_goal():
    from armflow.workflows.itps_viewer import goal_timeline

    diag = [{"goal_m": None}, {"goal_m": [0.5, 0.1, 0.02]}, {"goal_m": [0.5, 0.1, 0.02]},
            {"goal_m": [[0.4, 0, 0.02], [0.5, 0, 0.02]]}, {"goal_m": None}, {"goal_m": [0.5, 0.1, 0.02]}]
    assert goal_timeline(diag) == [{"first_chunk": 1, "chunks": 2, "goal_m": [0.5, 0.1, 0.02]},
                                   {"first_chunk": 3, "chunks": 1, "goal_m": [[0.4, 0, 0.02], [0.5, 0, 0.02]]},
                                   {"first_chunk": 5, "chunks": 1, "goal_m": [0.5, 0.1, 0.02]}]


def test_bad_viewer_goals_files_fail_naming_the_key(tmp_path):
    from armflow.workflows.itps_viewer import load_goals

    bad = tmp_path / "bad.json"
    for text, words in [('{"episodes": 3}', "viewer.goals"), ('[{"seed": 1, "step": 0, "goal_m": [2.0, 0, 0]}]',
                                                               "outside the workspace box"), ("not json", "JSON")]:
        bad.write_text(text)
        with pytest.raises(SystemExit) as exc:
            load_goals(bad)
        assert f"viewer_goals={bad}" in str(exc.value) and words in str(exc.value), str(exc.value)
    ok = tmp_path / "ok.json"
    ok.write_text(json.dumps({"viewer": {"goals": [{"seed": 7, "step": 4, "goal_m": [0.5, 0.1, 0.02]}]}}))
    np.testing.assert_allclose(load_goals(ok)[(7, 4)], [0.5, 0.1, 0.02])


def test_a_camera_on_the_robot_is_refused_for_the_viewer():
    from armflow.sim import make_env
    from armflow.workflows.itps_viewer import camera_id

    env = make_env("pick_either")
    env.reset(seed=0)
    assert camera_id(env.unwrapped.model, "topview", fixed=True) >= 0
    with pytest.raises(ValueError, match="viewer_camera='wrist' moves with the robot"):
        camera_id(env.unwrapped.model, "wrist", fixed=True)
    with pytest.raises(ValueError, match="viewer_camera='nope'.*topview"):
        camera_id(env.unwrapped.model, "nope")
    env.close()


def pick_either_policy(path):
    import torch

    from armflow.policies import make_policy

    torch.manual_seed(0)
    spec = {"observation.state": (8,), "observation.environment_state": (20,)}
    stats = {k: {"min": -np.ones(s[0]), "max": np.ones(s[0])} for k, s in spec.items()}
    stats["action"] = {"min": -np.ones(7), "max": np.ones(7)}
    return make_policy("flow", spec, 7, stats, mlp_width=32, mlp_blocks=1, time_dim=8,
                       num_inference_steps=3).save_pretrained(path)


def test_replayed_goals_steer_the_chunks_from_their_step_and_reset_each_episode(tmp_path):
    """Headless (viewer=false, viewer_goals=FILE): the goal given at step 5 of the first episode steers its chunks
    from the next one on; the second episode starts without a goal (the goal is per episode)."""
    from armflow.workflows.cli import main as run

    goals = tmp_path / "goals.json"
    goals.write_text(json.dumps([{"seed": 100000, "step": 5, "goal_m": [0.5, 0.1, 0.02]}]))
    out = tmp_path / "eval"
    assert run(["evaluate", f"checkpoint={pick_either_policy(tmp_path / 'p')}", "task=pick_either", "episodes=2",
                "video_episodes=0", "steering.type=itps", "steering.strategy=gd",
                "+task_overrides.max_episode_steps=16", f"viewer_goals={goals}", f"out={out}"]) == 0
    result = json.loads((out / "eval.json").read_text())
    assert result["viewer"]["goals"] == [{"seed": 100000, "step": 5, "goal_m": [0.5, 0.1, 0.02], "kind": "point"}]
    # chunks of T_a = 8 steps: episode 1 samples at steps 0 and 8, episode 2 at 0 and 8: the goal steers only the
    # second chunk of the first episode
    applied = result["steering"]["diagnostics"]["goals_applied"]
    assert [(a["first_chunk"], a["chunks"]) for a in applied] == [(1, 1)], applied
    assert result["steering"]["diagnostics"]["chunk_calls"] == 4


def test_the_viewer_refuses_what_it_cannot_show(tmp_path, capsys):
    from armflow.workflows.cli import main as run

    ckpt = pick_either_policy(tmp_path / "p")
    base = ["evaluate", f"checkpoint={ckpt}", "task=pick_either", "episodes=1", "viewer=true", f"out={tmp_path}"]
    for extra, words in [(["executor=rtc", "delay_ms=100"], "executor=rtc delay_ms=100 is not supported"),
                         ([f"record={tmp_path / 'rec'}"], "record= is not supported"),
                         (["viewer_size=10"], "viewer_size=10 must be an int >= 64"),
                         (["viewer=maybe"], "viewer=maybe: expected true or false")]:
        assert run(base + extra) != 0
        assert words in capsys.readouterr().err
