"""Lockstep deploy through a real bridge vs evaluate, on the same seeds: one policy (steered or not).

    python scripts/deploy_vs_evaluate.py TASK POLICY OUT [--steering JSON] [--episodes 100] [--seed 100000]
        [--n-envs 8] [--itps-cube 1] [--dynaguide-target 1]

Runs ``evaluate`` on the bare sim, ``evaluate limits=auto`` (the bridge's safety layer in-process) with ``n_envs``
envs and with one, and ``deploy`` through a lockstep ``sim_panda task=TASK`` server on loopback TCP (the code
``armflow serve`` / ``armflow deploy`` run). ``--steering``: a steering spec as JSON (``{"type": "vgps", ...}``);
``--itps-cube``: ITPS's goal is that cube's position every chunk (``scripts/itps_pick_either.CubeGoal``);
``--dynaguide-target``: DynaGuide's goal / negative episodes are the demos (the spec's ``goals``) that lifted that
cube / the other. Writes ``OUT/deploy_vs_evaluate.json`` (per-episode results of all four) and prints the success
rates, the identical episodes (success, length) of deploy with each evaluation, and a ``BENCH_JSON`` line.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import socket
from pathlib import Path

import numpy as np

SCRIPTS = Path(__file__).resolve().parent


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_policy(path: str, steering: dict | None, itps_cube: int | None, dynaguide_target: int | None):
    from armflow.policies import load_policy
    from armflow.policies.steering import steer

    policy = load_policy(path)
    if steering:
        steering = dict(steering)
        if dynaguide_target is not None:
            lifted = _script("dynaguide_pick_either").lifted_cubes(steering["goals"])
            steering["goal_episodes"] = [i for i, c in enumerate(lifted) if c == dynaguide_target]
            steering["negative_episodes"] = [i for i, c in enumerate(lifted) if c != dynaguide_target]
        policy = steer(policy, steering)
    if itps_cube is not None:
        policy = _script("itps_pick_either").CubeGoal(policy, itps_cube)
    return policy.eval()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(args) -> dict:
    from armflow.control.client import BridgeClient
    from armflow.control.launch import ServerProcess
    from armflow.control.server import ServerConfig
    from armflow.workflows.deploy import deploy
    from armflow.workflows.evaluate import evaluate_policy

    policy = build_policy(args.policy, json.loads(args.steering) if args.steering else None, args.itps_cube,
                          args.dynaguide_target)
    ev = lambda n_envs, limits: evaluate_policy(policy, args.task, args.episodes, args.seed, n_envs, 0,  # noqa: E731
                                                progress=False, safety_limits=limits)["per_episode"]
    runs = {"bare": ev(args.n_envs, None), "limits": ev(args.n_envs, "auto"), "limits_1env": ev(1, "auto")}
    cfg = ServerConfig(robot="sim_panda", robot_options={"task": args.task}, lockstep=True,
                       endpoint=f"tcp://127.0.0.1:{_free_port()}")
    with ServerProcess(cfg) as server, BridgeClient(server.endpoint) as client:
        runs["deploy"] = deploy(client, policy, args.episodes, args.seed)[0]["per_episode"]
    key = lambda r: (r["seed"], r["success"], r["length"])  # noqa: E731
    summary = {f"{name}_success": float(np.mean([r["success"] for r in per])) for name, per in runs.items()}
    for name in ("bare", "limits", "limits_1env"):
        summary[f"identical_{name}"] = sum(key(a) == key(b) for a, b in zip(runs[name], runs["deploy"]))
    summary["clamps_equal_1env"] = sum(a["clamps"] == b["clamps"] for a, b in zip(runs["limits_1env"], runs["deploy"]))
    summary["episodes_clamped"] = sum(bool(r["clamps"]) for r in runs["deploy"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "deploy_vs_evaluate.json").write_text(json.dumps({"args": vars(args), "summary": summary, "runs": runs}))
    return summary


def main() -> dict:
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for name in ("task", "policy", "out"):
        p.add_argument(name)
    p.add_argument("--steering", default=None)
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--seed", type=int, default=100_000)
    p.add_argument("--n-envs", type=int, default=8)
    p.add_argument("--itps-cube", type=int, default=None)
    p.add_argument("--dynaguide-target", type=int, default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    summary = run(args)
    print(f"[deploy_vs_evaluate] success: evaluate {summary['bare_success']:.2f}, evaluate limits=auto "
          f"{summary['limits_success']:.2f}, deploy {summary['deploy_success']:.2f}; identical episodes of deploy "
          f"with evaluate {summary['identical_bare']}, with limits=auto {summary['identical_limits']} "
          f"(of {args.episodes})")
    print("BENCH_JSON: " + json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
