"""The ITPS viewer for real: Xvfb + the OpenCV window + an xdotool click over cube 1 -> the steered policy's goal."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

pytestmark = [pytest.mark.display, pytest.mark.slow]
SEED, SIZE = 100000, 480


def pick_either_policy(path):
    import torch

    from armflow.policies import make_policy

    torch.manual_seed(0)
    spec = {"observation.state": (8,), "observation.environment_state": (20,)}
    stats = {k: {"min": -np.ones(s[0]), "max": np.ones(s[0])} for k, s in spec.items()}
    stats["action"] = {"min": -np.ones(7), "max": np.ones(7)}
    return make_policy("flow", spec, 7, stats, mlp_width=32, mlp_blocks=1, time_dim=8).save_pretrained(path)


def test_click_over_cube_one_sets_the_policy_goal_there(xvfb, xdotool, tmp_path):
    from armflow.sim import make_env
    from armflow.workflows.itps_viewer import world_to_pixel

    env = make_env("pick_either")
    env.reset(seed=SEED)
    base = env.unwrapped
    cube = base.cube_pos(1)
    top = cube + [0, 0, base.rest_height_m]  # the centre of the cube's visible top face
    u, v = world_to_pixel(base.model, base._data, "topview", top, SIZE, SIZE)
    env.close()

    log = tmp_path / "log.json"
    ckpt = str(pick_either_policy(tmp_path / "p"))
    proc = subprocess.Popen([sys.executable, "-m", "armflow.workflows.itps_viewer", ckpt,
                             "--seed", str(SEED), "--size", str(SIZE), "--log", str(log), "--strategy", "gd",
                             "--wait-first-goal-s", "60"],
                            env={**os.environ, "DISPLAY": xvfb, "QT_QPA_PLATFORM": "xcb"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wid = xdotool("search", "--sync", "--name", "armflow itps").split()[0]
        xdotool("windowfocus", "--sync", wid)
        time.sleep(1.0)  # the first frames drawn
        xdotool("mousemove", "--window", wid, str(u), str(v), "click", "1")
        time.sleep(2.0)  # some chunks with the goal
        xdotool("key", "--window", wid, "q")
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    result = json.loads(log.read_text())
    assert len(result["clicks"]) == 1 and not result["clicks"][0]["drag"], result["clicks"]
    received = [g for g in result["goals_received"] if g is not None]
    assert received, "no chunk received the clicked goal"
    assert np.linalg.norm(np.asarray(received[-1]) - cube) < 0.01, (received[-1], cube.tolist())
    assert result["episodes"] and result["episodes"][0]["length"] >= 1


def test_drag_sketches_a_path_from_where_it_starts_to_where_it_ends(xvfb, xdotool, tmp_path):
    """A drag from above cube 0 to above cube 1 -> a path goal (several points) whose ends are those two points."""
    from armflow.sim import make_env
    from armflow.workflows.itps_viewer import world_to_pixel

    env = make_env("pick_either")
    env.reset(seed=SEED)
    base = env.unwrapped
    ends = [base.cube_pos(i) for i in (0, 1)]
    pix = [world_to_pixel(base.model, base._data, "topview", c, SIZE, SIZE) for c in ends]
    env.close()

    log = tmp_path / "log.json"
    ckpt = str(pick_either_policy(tmp_path / "p"))
    proc = subprocess.Popen([sys.executable, "-m", "armflow.workflows.itps_viewer", ckpt, "--seed", str(SEED),
                             "--size", str(SIZE), "--log", str(log), "--strategy", "gd", "--wait-first-goal-s", "60"],
                            env={**os.environ, "DISPLAY": xvfb, "QT_QPA_PLATFORM": "xcb"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wid = xdotool("search", "--sync", "--name", "armflow itps").split()[0]
        xdotool("windowfocus", "--sync", wid)
        time.sleep(1.0)
        (u0, v0), (u1, v1) = pix
        xdotool("mousemove", "--window", wid, str(u0), str(v0), "mousedown", "1")
        for f in np.linspace(0.1, 1.0, 10):  # motion events with the button held
            xdotool("mousemove", "--window", wid, str(round(u0 + f * (u1 - u0))), str(round(v0 + f * (v1 - v0))))
            time.sleep(0.05)
        xdotool("mouseup", "1")
        time.sleep(2.0)
        xdotool("key", "--window", wid, "q")
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    result = json.loads(log.read_text())
    assert len(result["clicks"]) == 1 and result["clicks"][0]["drag"], result["clicks"]
    received = [g for g in result["goals_received"] if g is not None]
    assert received and np.ndim(received[-1]) == 2 and len(received[-1]) >= 3, received[-1:]
    path = np.asarray(received[-1])
    assert np.linalg.norm(path[0] - ends[0]) < 0.01 and np.linalg.norm(path[-1] - ends[1]) < 0.01, path
