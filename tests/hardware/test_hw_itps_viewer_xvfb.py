"""`armflow evaluate viewer=true` / `armflow deploy viewer=true` for real: Xvfb, the OpenCV window, xdotool clicks
and drags over the rendered cubes -> the ITPS-steered policy's goal, saved in the run and replayable."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.display, pytest.mark.slow]
ARMFLOW = str(Path(sys.executable).parent / "armflow")
SEED, SIZE, STEPS = 100000, 480, 30  # 30-step episodes: 1.5 s shown at pick_either's 20 Hz
SHORT = f"+task_overrides.max_episode_steps={STEPS}"


def pick_either_policy(path) -> str:
    """A small flow policy over pick_either's observations (untrained: the goal's path is what is tested)."""
    import torch

    from armflow.policies import make_policy

    torch.manual_seed(0)
    spec = {"observation.state": (8,), "observation.environment_state": (20,)}
    stats = {k: {"min": -np.ones(s[0]), "max": np.ones(s[0])} for k, s in spec.items()}
    stats["action"] = {"min": -np.ones(7), "max": np.ones(7)}
    return str(make_policy("flow", spec, 7, stats, mlp_width=32, mlp_blocks=1, time_dim=8).save_pretrained(path))


def scene(seed=SEED):
    """(cube positions (2, 3), their top faces' pixels in the topview window)."""
    from armflow.sim import make_env
    from armflow.workflows.itps_viewer import world_to_pixel

    env = make_env("pick_either")
    env.reset(seed=seed)
    base = env.unwrapped
    cubes = np.array([base.cube_pos(i) for i in (0, 1)])
    pix = [world_to_pixel(base.model, base._data, "topview", c + [0, 0, base.rest_height_m], SIZE, SIZE) for c in cubes]
    env.close()
    return cubes, pix


def run_with_window(cmd, xvfb, xdotool, gesture, timeout_s=240) -> str:
    """Start ``cmd`` on the Xvfb display, do ``gesture(wid)`` in its window, wait for it to end; its stdout."""
    proc = subprocess.Popen(cmd, env={**os.environ, "DISPLAY": xvfb, "QT_QPA_PLATFORM": "xcb"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wid = xdotool("search", "--sync", "--name", "armflow itps").split()[0]
        xdotool("windowfocus", "--sync", wid)
        time.sleep(1.0)  # the first frames drawn
        gesture(wid)
        out, _ = proc.communicate(timeout=timeout_s)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-3000:]
    return out


def click(xdotool, wid, uv) -> None:
    xdotool("mousemove", "--window", wid, str(uv[0]), str(uv[1]), "click", "1")
    time.sleep(0.3)


def evaluate_replay(ckpt, goals_file, out) -> dict:
    """The same run headless, its goals set again from ``goals_file`` at their seeds and steps."""
    from armflow.workflows.cli import main as run

    assert run(["evaluate", f"checkpoint={ckpt}", "task=pick_either", "episodes=1", "video_episodes=0",
                "steering.type=itps", "steering.strategy=bi", SHORT, f"viewer_goals={goals_file}", f"out={out}"]) == 0
    return json.loads((out / "eval.json").read_text())


def test_evaluate_click_over_cube_one_steers_there_and_the_run_replays(xvfb, xdotool, tmp_path):
    cubes, pix = scene()
    ckpt = pick_either_policy(tmp_path / "p")
    out = tmp_path / "eval"
    cmd = [ARMFLOW, "evaluate", f"checkpoint={ckpt}", "task=pick_either", "episodes=1", "video_episodes=1",
           "steering.type=itps", "steering.strategy=bi", "viewer=true", "viewer_wait_s=90", SHORT, f"out={out}"]

    def gesture(wid):
        click(xdotool, wid, (2, SIZE - 3))  # the table's corner: outside the workspace box, refused in the window
        click(xdotool, wid, pix[1])

    log = run_with_window(cmd, xvfb, xdotool, gesture)
    result = json.loads((out / "eval.json").read_text())
    viewer = result["viewer"]
    assert len(viewer["clicks"]) == 2 and "outside the workspace box" in viewer["refused"][0]["refused"], viewer
    assert "refused: steering.goal: point" in log
    (goal,) = viewer["goals"]
    assert (goal["seed"], goal["step"], goal["kind"]) == (SEED, 0, "point")
    assert np.linalg.norm(np.asarray(goal["goal_m"]) - cubes[1]) < 0.02, (goal, cubes[1].tolist())
    # the steering diagnostics: every chunk of the episode was sampled with that goal
    applied = result["steering"]["diagnostics"]["goals_applied"]
    assert len(applied) == 1 and applied[0]["first_chunk"] == 0
    assert applied[0]["chunks"] == result["steering"]["diagnostics"]["chunk_calls"]
    np.testing.assert_allclose(applied[0]["goal_m"], goal["goal_m"], atol=1e-6)
    assert result["per_episode"][0]["length"] == STEPS and len(result["videos"]) == 1
    # reproducible: the saved goals replayed headless give the same episode and the same steered chunks
    again = evaluate_replay(ckpt, out / "eval.json", tmp_path / "replay")
    assert again["per_episode"] == result["per_episode"]
    assert again["steering"]["diagnostics"]["goals_applied"] == applied


def test_evaluate_drag_sketches_a_path_from_cube_zero_to_cube_one(xvfb, xdotool, tmp_path):
    cubes, ((u0, v0), (u1, v1)) = scene()
    out = tmp_path / "eval"
    cmd = [ARMFLOW, "evaluate", f"checkpoint={pick_either_policy(tmp_path / 'p')}", "task=pick_either",
           "episodes=1", "video_episodes=0", "steering.type=itps", "steering.strategy=gd", "viewer=true",
           "viewer_wait_s=90", SHORT, f"out={out}"]

    def gesture(wid):
        xdotool("mousemove", "--window", wid, str(u0), str(v0), "mousedown", "1")
        for f in np.linspace(0.1, 1.0, 10):  # motion events with the button held
            xdotool("mousemove", "--window", wid, str(round(u0 + f * (u1 - u0))), str(round(v0 + f * (v1 - v0))))
            time.sleep(0.05)
        xdotool("mouseup", "1")

    run_with_window(cmd, xvfb, xdotool, gesture)
    result = json.loads((out / "eval.json").read_text())
    (goal,) = result["viewer"]["goals"]
    path = np.asarray(goal["goal_m"])
    assert goal["kind"] == "path" and path.ndim == 2 and len(path) >= 3, goal
    assert np.linalg.norm(path[0] - cubes[0]) < 0.02 and np.linalg.norm(path[-1] - cubes[1]) < 0.02, path
    applied = result["steering"]["diagnostics"]["goals_applied"]
    assert applied and np.shape(applied[0]["goal_m"]) == path.shape


def test_unsteered_viewer_shows_the_rollout_and_refuses_goals(xvfb, xdotool, tmp_path):
    _, pix = scene()
    out = tmp_path / "eval"
    cmd = [ARMFLOW, "evaluate", f"checkpoint={pick_either_policy(tmp_path / 'p')}", "task=pick_either",
           "episodes=1", "n_envs=4", "video_episodes=0", "viewer=true", "viewer_wait_s=3", SHORT, f"out={out}"]
    log = run_with_window(cmd, xvfb, xdotool, lambda wid: click(xdotool, wid, pix[1]))
    assert "n_envs=4 ignored" in log
    result = json.loads((out / "eval.json").read_text())
    assert result["viewer"]["goals"] == [] and "steering.type=itps" in result["viewer"]["refused"][0]["refused"]
    assert result["episodes"] == 1 and result["per_episode"][0]["length"] == STEPS


def test_deploy_click_over_cube_one_steers_there_through_the_bridge(xvfb, xdotool, tmp_path):
    from armflow.workflows.quickstart import start_server, stop_server

    cubes, pix = scene()
    ckpt = pick_either_policy(tmp_path / "p")
    endpoint, out = f"ipc://{tmp_path}/bridge", tmp_path / "deploy"
    server = start_server("pick_either", endpoint, tmp_path / "serve",
                          env={"cameras": ["topview"], "max_episode_steps": STEPS})
    try:
        cmd = [ARMFLOW, "deploy", f"checkpoint={ckpt}", f"endpoint={endpoint}", "episodes=1", "video_episodes=0",
               "steering.type=itps", "steering.strategy=bi", "viewer=true", "viewer_wait_s=90", f"out={out}"]
        unserved = subprocess.run(cmd + ["viewer_camera=agentview"], env={**os.environ, "DISPLAY": xvfb},
                                  capture_output=True, text=True, timeout=120)
        assert unserved.returncode != 0 and "no 'observation.images.agentview'" in unserved.stderr
        assert "cameras=[agentview]" in unserved.stderr, unserved.stderr[-2000:]
        run_with_window(cmd, xvfb, xdotool, lambda wid: click(xdotool, wid, pix[1]))
    finally:
        stop_server(server)
    summary = json.loads((out / "summary.json").read_text())
    (goal,) = summary["viewer"]["goals"]
    assert (goal["seed"], goal["step"]) == (SEED, 0)
    assert np.linalg.norm(np.asarray(goal["goal_m"]) - cubes[1]) < 0.02, (goal, cubes[1].tolist())
    applied = summary["steering"]["diagnostics"]["goals_applied"]
    assert len(applied) == 1 and applied[0]["chunks"] == summary["steering"]["diagnostics"]["chunk_calls"]
    # the deployed run's goals replayed in evaluate: the same seed, outcome and length
    ev = evaluate_replay(ckpt, out / "summary.json", tmp_path / "replay")
    d, e = summary["per_episode"][0], ev["per_episode"][0]
    assert (d["seed"], d["success"], d["length"]) == (e["seed"], e["success"], e["length"]) == (SEED, False, STEPS)
    assert ev["steering"]["diagnostics"]["goals_applied"][0]["goal_m"] == applied[0]["goal_m"]
