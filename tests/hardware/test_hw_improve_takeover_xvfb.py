"""Human takeover in `armflow improve` for real: under Xvfb, xdotool key presses in the improve window take over
from the policy, steer the (simulated, served) arm, and hand back; the steps land in the dataset and the forward
skill's intervention buffer, flagged."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

pytestmark = [pytest.mark.display, pytest.mark.slow]


def test_keyboard_takeover_lands_in_the_intervention_buffer(xvfb, xdotool, improve_assets, improve_overrides,
                                                            tmp_path):
    from armflow.data import LeRobotDataset

    out = tmp_path / "run"
    # never detected: the forward skill (the learner) runs all along; the watched stream runs at 20 Hz
    args = [sys.executable, "-m", "armflow.workflows.cli", "improve", "intervention=keyboard",
            *improve_overrides(improve_assets, out, threshold=1.0, extra=["budget_minutes=0.4", "max_failures=1000"])]
    env = {**os.environ, "DISPLAY": xvfb, "QT_QPA_PLATFORM": "xcb"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wid = xdotool("search", "--sync", "--name", "armflow improve").split()[0]
        xdotool("windowfocus", "--sync", wid)
        deadline = time.monotonic() + 120
        while not (out / "metrics.jsonl").exists():  # a few policy attempts first
            assert time.monotonic() < deadline and proc.poll() is None, "improve never started its loop"
            time.sleep(0.2)
        xdotool("key", "--delay", "120", "t", *(["w"] * 6), "t")
        output, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interventions"] == 1 and summary["intervention_steps"] >= 6
    ds = LeRobotDataset(out / "dataset")
    flagged = ds.column("improve.intervention").reshape(-1)
    actions = ds.column("action")
    human = np.flatnonzero(flagged)
    assert len(human) == summary["intervention_steps"]
    assert int(np.sum(actions[human, 0] == 1.0)) == 6  # the six "w" presses: +x
    assert np.all(actions[human, 1:6] == 0.0)
    assert not flagged[: human[0]].any()  # the policy drove before the takeover
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert max(r.get("learner/forward_interventions", 0) for r in rows) >= 1  # chunks in the intervention buffer
