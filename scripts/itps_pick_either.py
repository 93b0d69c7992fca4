"""ITPS on ``pick_either``: a point at cube ``target``'s position steers which cube a frozen flow policy lifts.

    python scripts/itps_pick_either.py POLICY OUT [--target 1] [--strategies base,pr,bi,gd,ss] [--episodes 100]
        [--eval-seed 100000] [--n-envs 10] [--K 32] [--guidance-gd 60] [--guidance-ss 60] [--mcmc-steps 4]
        [--bi-skip 0.5] [--radius-m 0] [--tracking 0.5] [--goal-at-rest]

POLICY: a flow policy trained on scripted ``pick_either`` demos (unsteered it lifts each cube about half the time).
The goal of every chunk is the target cube's position read from ``observation.environment_state`` (what a user's
click on that cube gives: the viewer maps a click to within a few mm of it, tests/hardware), one goal per env row
(``ITPSPolicy.set_goal(per_row=True)``); ``--goal-at-rest``: its last resting position instead (the click a user
made before the grasp, kept while the cube is carried). For each strategy the policy is evaluated on the same unseen
seeds (``eval_seed``..): success, alignment (the successful episodes that lifted ``target``, per-episode ``mode`` as in
``armflow bench cfg``), mean alignment distance [m] and ms per chunk call (batch ``n_envs``; batch-1 latency is
``armflow bench steering``'s). Results are cached per strategy under OUT; prints a table and a ``BENCH_JSON`` line.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from armflow.workflows.bench_cfg import CUBE_STRIDE

ENV_KEY = "observation.environment_state"
REST_Z_M = 0.025  # a cube centre below this rests on the table (resting: 0.02)


class CubeGoal(nn.Module):
    """A Policy: the ITPS policy with each row's goal set to cube ``target``'s position before every chunk;
    ``at_rest``: its last position resting on the table (a click before the grasp, held while the cube is carried)."""

    def __init__(self, itps, target: int, at_rest: bool = False):
        super().__init__()
        self.itps, self.target, self.at_rest, self.rest_goal = itps, target, at_rest, None

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("itps"), name)

    def default_noise(self, batch, generator=None):
        return self.itps.default_noise(batch, generator)

    @torch.no_grad()
    def predict_chunk(self, obs, noise=None, hooks=None):
        i = CUBE_STRIDE * self.target
        cube = torch.as_tensor(obs[ENV_KEY])[:, -1, i:i + 3].numpy()
        if self.at_rest:
            resting = cube[:, 2] < REST_Z_M
            if self.rest_goal is None or len(self.rest_goal) != len(cube):
                self.rest_goal = cube.copy()
            self.rest_goal[resting] = cube[resting]
            cube = self.rest_goal
        self.itps.set_goal(cube, per_row=True)
        return self.itps.predict_chunk(obs, noise, hooks)


def run_one(ckpt: str, strategy: str, args, out: Path) -> dict:
    from armflow.policies import load_policy
    from armflow.policies.steering import steer, summarise_diagnostics
    from armflow.workflows.common import write_json
    from armflow.workflows.evaluate import evaluate_policy

    path = out / strategy / "eval.json"
    if path.is_file():
        return json.loads(path.read_text())
    base = load_policy(ckpt)
    if strategy == "base":  # unsteered, measured through the same distance for the table
        policy = steer(base, {"type": "itps", "strategy": "gd", "guidance": 0.0})
    else:
        guidance = args.guidance_ss if strategy == "ss" else args.guidance_gd
        policy = steer(base, {"type": "itps", "strategy": strategy, "K": args.K, "guidance": guidance,
                              "mcmc_steps": args.mcmc_steps, "bi_skip": args.bi_skip,
                              "radius_m": args.radius_m, "tracking": args.tracking})
    run = evaluate_policy(CubeGoal(policy, args.target, args.goal_at_rest), "pick_either", args.episodes, args.eval_seed, args.n_envs, 0,
                          progress=False)
    diag = policy.diagnostics
    run["steering"] = {"spec": policy.steering, "diagnostics": summarise_diagnostics(diag),
                       "alignment_m_mean": float(np.mean([d for x in diag for d in x["alignment_m"]]))}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, run)
    return run


def main() -> dict:
    from armflow.workflows.common import bench_line, write_json

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("policy")
    p.add_argument("out")
    p.add_argument("--target", type=int, default=1)
    p.add_argument("--strategies", default="base,pr,bi,gd,ss")
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--eval-seed", type=int, default=100000)
    p.add_argument("--n-envs", type=int, default=10)
    p.add_argument("--K", type=int, default=32)
    p.add_argument("--guidance-gd", type=float, default=60.0)
    p.add_argument("--guidance-ss", type=float, default=60.0)
    p.add_argument("--mcmc-steps", type=int, default=4)
    p.add_argument("--bi-skip", type=float, default=0.5)
    p.add_argument("--radius-m", type=float, default=0.0)
    p.add_argument("--tracking", type=float, default=None)
    p.add_argument("--goal-at-rest", action="store_true", help="goal: the cube's last resting position")
    args = p.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    result: dict = {"target": args.target, "episodes": args.episodes, "eval_seed": args.eval_seed}
    rows = []
    for strategy in args.strategies.split(","):
        run = run_one(args.policy, strategy, args, out)
        wins = [r for r in run["per_episode"] if r["success"]]
        align = float(np.mean([r["mode"] == args.target for r in wins])) if wins else float("nan")
        ms = run["steering"]["diagnostics"]["latency_ms_p50"]
        name = "base" if strategy == "base" else f"itps_{strategy}"
        result.update({f"{name}_success": run["success_rate"], f"{name}_alignment": align,
                       f"{name}_distance_m": run["steering"]["alignment_m_mean"], f"{name}_chunk_ms_p50": ms})
        rows.append((name, run["success_rate"], align, len(wins), run["steering"]["alignment_m_mean"], ms))
        print(f"[itps] {name}: success {run['success_rate']:.2f}, alignment to cube {args.target} {align:.2f} over "
              f"{len(wins)} successes, distance {rows[-1][4]:.3f} m, {ms:.1f} ms per chunk call", flush=True)
    print(f"\n{'strategy':<10} {'success':>8} {'align':>6} {'wins':>5} {'dist_m':>7} {'ms/call':>8}")
    for r in rows:
        print(f"{r[0]:<10} {r[1]:>8.2f} {r[2]:>6.2f} {r[3]:>5d} {r[4]:>7.3f} {r[5]:>8.1f}")
    write_json(out / "itps_pick_either.json", result)
    print(bench_line(result))
    return result


if __name__ == "__main__":
    main()
