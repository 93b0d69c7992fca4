"""Keyboard teleop for real: Xvfb + the OpenCV viewer + xdotool typing, recorded into a LeRobot dataset."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

pytestmark = [pytest.mark.display, pytest.mark.slow]


def test_keyboard_teleop_records_what_was_typed(xvfb, xdotool, tmp_path):
    from armflow.data import LeRobotDataset

    root = tmp_path / "teleop_ds"
    env = {**os.environ, "DISPLAY": xvfb, "MUJOCO_GL": "osmesa", "PYOPENGL_PLATFORM": "osmesa",
           "QT_QPA_PLATFORM": "xcb"}
    proc = subprocess.Popen([sys.executable, "-m", "armflow.hardware.teleop_record", "--task", "lift",
                             "--root", str(root), "--episodes", "1", "--max-episode-steps", "2000"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # the title gains "[recording]" once the episode loop runs (env built, writer open)
        wid = xdotool("search", "--sync", "--name", r"armflow teleop \[recording\]").split()[0]
        xdotool("windowfocus", "--sync", wid)
        # 6 x up, 4 x forward (+x), close the gripper, then save the episode and quit.
        xdotool("key", "--delay", "150", *(["r"] * 6), *(["w"] * 4), "space")
        time.sleep(0.5)
        xdotool("key", "--delay", "200", "Return", "q")
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["episodes_saved"] == 1 and summary["outcomes"] == ["save"], summary

    ds = LeRobotDataset(root)
    ep = ds.episode(0)
    action, state = ep["action"], ep["observation.state"]
    assert ds.num_episodes == 1 and len(action) == summary["frames"]
    assert int(np.sum(action[:, 2] == 1.0)) == 6 and int(np.sum(action[:, 0] == 1.0)) == 4
    assert np.all(action[:, 1] == 0.0) and np.all(action[:, 3:6] == 0.0)
    assert action[0, 6] == -1.0 and action[-1, 6] == 1.0  # gripper: open, then closed by the space bar
    ee_start, ee_end = state[0, :3], state[-1, :3]
    assert ee_end[2] - ee_start[2] > 0.1  # moved up (6 x 5 cm commanded)
    assert ee_end[0] - ee_start[0] > 0.07  # moved forward (4 x 5 cm commanded)
    assert abs(ee_end[1] - ee_start[1]) < 0.02
    assert state[-1, 7] < 0.02  # fingers closed
