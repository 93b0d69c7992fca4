"""Keyboard takeover for real: Xvfb + the OpenCV window + xdotool typing into ``intervention_demo``."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

pytestmark = [pytest.mark.display, pytest.mark.slow]


def test_keyboard_takeover_steer_and_handback(xvfb, xdotool, tmp_path):
    log_path = tmp_path / "log.json"
    env = {**os.environ, "DISPLAY": xvfb, "QT_QPA_PLATFORM": "xcb"}
    proc = subprocess.Popen([sys.executable, "-m", "armflow.hardware.intervention_demo", "--out", str(log_path),
                             "--ticks", "1200", "--rate-hz", "20"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wid = xdotool("search", "--sync", "--name", "armflow improve").split()[0]
        xdotool("windowfocus", "--sync", wid)
        time.sleep(0.5)  # some policy ticks first
        # take over, 4 x forward (+x), close the gripper, hand back; then a few policy ticks and quit
        xdotool("key", "--delay", "150", "t", *(["w"] * 4), "space", "t")
        time.sleep(0.5)
        xdotool("key", "q")
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    log = json.loads(log_path.read_text())
    ticks = log["ticks"]
    assert len(ticks) < 1200  # "q" ended it
    human = [i for i, row in enumerate(ticks) if row["action"] is not None]
    assert human, "the takeover key never took over"
    first, last = human[0], human[-1]
    assert human == list(range(first, last + 1))  # one contiguous stretch in control
    assert first >= 1 and all(row["action"] is None and not row["active"] for row in ticks[:first])
    assert all(row["action"] is None for row in ticks[last + 1:]) and last + 1 < len(ticks)
    actions = np.array([ticks[i]["action"] for i in human])
    assert int(np.sum(actions[:, 0] == 1.0)) == 4  # the four "w" presses, +x only
    assert np.all(actions[:, 1:6] == 0.0) and np.all(np.isin(actions[:, 0], [0.0, 1.0]))
    assert actions[0, 6] == -1.0 and actions[-1, 6] == 1.0  # open when taken over, closed after space
    assert log["takeovers"] == log["handbacks"] == 1 and log["steps_in_control"] == len(human)
    assert log["handback_gripper"] == 1.0
    assert [name for name, _ in log["events"]] == ["takeover", "handback"]
