"""``python -m armflow.hardware.teleop_record``: teleoperate a sim task with a device and record a LeRobot v3 dataset.

The small stand-alone entry point behind the display test (the full CLI is ``armflow collect device=...``).
Prints one JSON summary line at the end.
"""
from __future__ import annotations

import argparse
import json

from armflow.hardware.teleop import DEVICES, make_device
from armflow.hardware.teleop_session import record_teleop_session


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="lift")
    ap.add_argument("--device", default="keyboard", choices=DEVICES)
    ap.add_argument("--root", required=True, help="dataset directory")
    ap.add_argument("--episodes", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-steps", type=int, default=None, help="end (and save) an episode after this many steps")
    ap.add_argument("--max-episode-steps", type=int, default=None, help="env time limit override [steps]")
    ap.add_argument("--camera", default=None, help="viewer camera (default: the env's)")
    args = ap.parse_args(argv)
    overrides = {} if args.max_episode_steps is None else {"max_episode_steps": args.max_episode_steps}
    summary = record_teleop_session(args.task, make_device(args.device), args.root, args.episodes, args.seed,
                                    max_steps=args.max_steps, env_overrides=overrides, camera=args.camera)
    print(json.dumps(summary), flush=True)
    return summary


if __name__ == "__main__":
    main()
