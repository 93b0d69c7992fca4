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
    proc = subprocess.Popen([sys.executable, "-m", "armflow.workflows.itps_viewer", str(pick_either_policy(tmp_path / "p")),
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
