"""``python -m armflow.hardware.intervention_demo``: try the takeover key without a robot or a policy.

Polls an ``Intervention`` at ``--rate-hz`` for ``--ticks`` ticks (or until the device says "quit", e.g.
``q`` on the keyboard) and writes a JSON log: {"ticks": [{"active", "action" (7,) or null}], "takeovers",
"handbacks", "steps_in_control", "handback_gripper", "events"}. The display test drives it with xdotool.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from armflow.hardware.intervention import INTERVENTION_DEVICES, make_intervention


def run(intervention, ticks: int, rate_hz: float) -> dict:
    """Poll ``ticks`` times at ``rate_hz`` [Hz]; the frame is a gray square that turns green while the human drives."""
    period_s, t_next, rows = 1.0 / rate_hz, time.monotonic(), []
    for i in range(ticks):
        frame = np.full((64, 64, 3), (40, 160, 40) if intervention.active else (90, 90, 90), np.uint8)
        action = intervention.poll(frame, f"tick {i}")
        rows.append({"active": intervention.active, "action": None if action is None else action.tolist()})
        if "quit" in intervention.device_events:
            break
        t_next += period_s
        intervention.wait(t_next - time.monotonic())
    return {"ticks": rows, "takeovers": intervention.takeovers, "handbacks": intervention.handbacks,
            "steps_in_control": intervention.steps_in_control, "handback_gripper": intervention.handback_gripper,
            "events": intervention.events}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="keyboard", choices=INTERVENTION_DEVICES)
    ap.add_argument("--ticks", type=int, default=400)
    ap.add_argument("--rate-hz", type=float, default=20.0)
    ap.add_argument("--out", required=True, help="JSON log path")
    args = ap.parse_args(argv)
    intervention = make_intervention(args.device)
    try:
        log = run(intervention, args.ticks, args.rate_hz)
    finally:
        intervention.close()
    Path(args.out).write_text(json.dumps(log))
    return log


if __name__ == "__main__":
    main()
