"""Live clicks in ``armflow evaluate viewer=true`` on ``pick_either``: one run over N seeds on a display (Xvfb), and at
each episode's start (the window holds the arm until the first goal) xdotool clicks the top face of cube TARGET.

    Xvfb :178 &  DISPLAY=:178 python scripts/itps_viewer_clicks.py POLICY OUT [--episodes 20] [--target 1]
        [--strategy bi] [--seed 100000]

Prints the run's success, the lifted cube of each success (``successful_modes``) and a ``BENCH_JSON`` line;
``OUT/eval.json`` holds the goals, which ``armflow evaluate ... viewer_goals=OUT/eval.json`` replays.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

SIZE = 480


def cube_pixels(seed: int) -> list[tuple[int, int]]:
    """The topview window pixels of both cubes' top faces at the reset of ``seed``."""
    from armflow.sim import make_env
    from armflow.workflows.itps_viewer import world_to_pixel

    env = make_env("pick_either")
    env.reset(seed=seed)
    base = env.unwrapped
    pix = [world_to_pixel(base.model, base._data, "topview", base.cube_pos(i) + [0, 0, base.rest_height_m], SIZE,
                          SIZE) for i in (0, 1)]
    env.close()
    return pix


def main() -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("policy")
    p.add_argument("out")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--target", type=int, default=1)
    p.add_argument("--strategy", default="bi")
    p.add_argument("--seed", type=int, default=100000)
    args = p.parse_args()
    env = {**os.environ, "QT_QPA_PLATFORM": "xcb"}
    cmd = [str(Path(sys.executable).parent / "armflow"), "evaluate", f"checkpoint={args.policy}", "task=pick_either",
           f"episodes={args.episodes}", f"seed={args.seed}", "video_episodes=0", "steering.type=itps",
           f"steering.strategy={args.strategy}", "viewer=true", "viewer_wait_s=120", f"viewer_size={SIZE}",
           f"out={args.out}"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wid = None
    for line in proc.stdout:  # the viewer prints each episode's start; the click follows it
        print(line, end="", flush=True)
        if line.startswith("[viewer] episode seed"):
            if wid is None:
                wid = subprocess.run(["xdotool", "search", "--sync", "--name", "armflow itps"], env=env,
                                     capture_output=True, text=True, timeout=60).stdout.split()[0]
            time.sleep(0.5)
            u, v = cube_pixels(int(line.split()[-1]))[args.target]
            subprocess.run(["xdotool", "mousemove", "--window", wid, str(u), str(v), "click", "1"], env=env,
                           check=True, timeout=60)
    if proc.wait() != 0:
        raise SystemExit(f"armflow evaluate exited {proc.returncode}")
    r = json.loads((Path(args.out) / "eval.json").read_text())
    res = {"success_rate": r["success_rate"], "successful_modes": r["successful_modes"],
           "goals": len(r["viewer"]["goals"]), "target": args.target, "strategy": args.strategy}
    print(f"BENCH_JSON: {json.dumps(res)}")
    return res


if __name__ == "__main__":
    main()
