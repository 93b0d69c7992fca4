"""DynaGuide on ``pick_either``: goal examples of one cube lifted steer which cube a frozen flow policy picks.

    python scripts/dynaguide_pick_either.py DEMOS POLICY DYNAMICS OUT [--target 1] [--ws 0,0.5,1,2]
        [--episodes 100] [--goal-frames 1] [--alpha 1.0] [--no-negatives]

DEMOS: the scripted ``pick_either`` demos the policy and the dynamics model were trained on (``armflow collect``,
``armflow train``, ``armflow dynamics``). Positive goals: the last frames of the demos that lifted ``target`` (the
cube highest at the end, as ``armflow bench cfg`` labels them); negatives: those of the other cube. For each w
(w = 0: the unsteered policy, bit for bit) the policy is evaluated on the same unseen seeds (100000+) and the
script reports success and alignment (the successful episodes that lifted ``target``), cached per w under OUT.
Prints a ``BENCH_JSON`` line.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def lifted_cubes(demos: str, n_cubes: int = 2) -> list[int]:
    from armflow.data import LeRobotDataset
    from armflow.workflows.bench_cfg import CUBE_STRIDE, Z

    ds = LeRobotDataset(demos, check_videos=False)
    heights = [ds.episode(i)["observation.environment_state"][-1, [CUBE_STRIDE * c + Z for c in range(n_cubes)]]
               for i in range(ds.num_episodes)]
    return [int(np.argmax(h)) for h in heights]


def main() -> dict:
    import torch

    from armflow.policies import load_policy
    from armflow.policies.steering import steer
    from armflow.workflows.common import bench_line, write_json
    from armflow.workflows.evaluate import evaluate_policy

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for name in ("demos", "policy", "dynamics", "out"):
        p.add_argument(name)
    p.add_argument("--target", type=int, default=1)
    p.add_argument("--ws", default="0,0.5,1,2")
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--seed", type=int, default=100_000)
    p.add_argument("--goal-frames", type=int, default=1)
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--mcmc-steps", type=int, default=0)
    p.add_argument("--no-negatives", action="store_true")
    p.add_argument("--n-envs", type=int, default=8)
    args = p.parse_args()
    torch.set_num_threads(1)
    out, lifted = Path(args.out), lifted_cubes(args.demos)
    pos = [i for i, c in enumerate(lifted) if c == args.target]
    neg = [i for i, c in enumerate(lifted) if c != args.target]
    result = {"demos_per_cube": np.bincount(lifted, minlength=2).tolist(), "target": args.target,
              "episodes": args.episodes, "alpha": args.alpha, "goal_frames": args.goal_frames,
              "negatives": not args.no_negatives, "mcmc_steps": args.mcmc_steps}
    for w in [float(x) for x in args.ws.split(",")]:
        path = out / f"w{w:g}" / "eval.json"
        if path.is_file():
            run = json.loads(path.read_text())
        else:
            policy = load_policy(args.policy)
            steered = w > 0 or args.mcmc_steps > 0  # w = 0 without the corrector: the policy itself, bit for bit
            if steered:
                policy = steer(policy, {"type": "dynaguide", "dynamics": args.dynamics, "goals": args.demos,
                                        "goal_episodes": pos, "negatives": "" if args.no_negatives else args.demos,
                                        "negative_episodes": neg, "goal_frames": args.goal_frames, "guidance": w,
                                        "alpha": args.alpha, "mcmc_steps": args.mcmc_steps})
            run = evaluate_policy(policy, "pick_either", args.episodes, args.seed, args.n_envs, 0, progress=False)
            if steered:
                from armflow.policies.steering import summarise_diagnostics

                diags = policy.diagnostics
                run["steering"] = {**summarise_diagnostics(diags), "guidance_norm_mean": float(np.mean(
                    [np.mean(d["guidance_norm"]) for d in diags])), "goal_score_mean": float(np.mean(
                        [np.mean(d["goal_score"]) for d in diags]))}
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json(path, run)
        wins = [r for r in run["per_episode"] if r["success"]]
        align = float(np.mean([r["mode"] == args.target for r in wins])) if wins else float("nan")
        result.update({f"w{w:g}_success": run["success_rate"], f"w{w:g}_alignment": align})
        if "steering" in run:
            result[f"w{w:g}_hook_ms_p50"] = run["steering"]["hook_ms_p50"]
            result[f"w{w:g}_latency_ms_p50"] = run["steering"]["latency_ms_p50"]
        print(f"[dynaguide] w={w:g}: success {run['success_rate']:.2f}, alignment to cube {args.target} {align:.2f} "
              f"over {len(wins)} successes", flush=True)
    write_json(out / "dynaguide_pick_either.json", result)
    print(bench_line(result))
    return result


if __name__ == "__main__":
    main()
