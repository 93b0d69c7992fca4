"""``armflow bench multimodal``: flow vs diffusion vs Gaussian on the bimodal ``pick_either`` task.

Same demos (the expert picks either cube at random), same training budget; reports each policy's
success rate and which cube its successful rollouts lifted (both modes should appear for the
generative policies, while the unimodal Gaussian averages the modes and fails).

The budget matters more here than on ``lift``: a policy must learn a sharp fork at the start (a chunk
that hesitates between the cubes descends onto the table between them) and then read the chosen
cube's position to the centimetre. Under-fitted generative policies spread mass between the modes
and stop short of the cube, so ``configs/bench_multimodal.yaml`` trains 6000 steps, and the diffusion
policy uses v-prediction (``configs/policy/diffusion.yaml``), which fits the high-noise steps where
the mode is chosen much better than epsilon-prediction.
"""
from __future__ import annotations

import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from armflow.workflows.common import bench_line, compose_config, write_json


def train_one(cfg: DictConfig, policy_type: str, dataset: Path, out: Path) -> str:
    from armflow.workflows import train

    tcfg = compose_config("train", [f"policy={policy_type}", f"dataset={dataset}", f"steps={cfg.train_steps}",
                                    f"seed={cfg.seed}", f"out={out}"])
    if (out / "checkpoint" / "model.safetensors").exists():
        return str(out / "checkpoint")
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(OmegaConf.to_yaml(tcfg))
    return train.train(tcfg)["checkpoint"]


def main(cfg: DictConfig) -> dict:
    from armflow.policies import load_policy
    from armflow.workflows.collect import collect_scripted
    from armflow.workflows.evaluate import evaluate_policy
    from armflow.workflows.media import plot_bars

    out, t0 = Path(cfg.out), time.monotonic()
    dataset = out / "dataset"
    if not (dataset / "meta" / "info.json").exists():
        collect_scripted(cfg.task, dataset, int(cfg.demos), float(cfg.noise_std), int(cfg.seed))
    results: dict[str, dict] = {}
    for policy_type in cfg.policies:
        ckpt = train_one(cfg, policy_type, dataset, out / policy_type)
        ev = evaluate_policy(load_policy(ckpt), cfg.task, int(cfg.episodes), int(cfg.eval_seed),
                             int(cfg.n_envs), cfg.n_workers)
        results[policy_type] = {"success_rate": ev["success_rate"], "successful_modes": ev["successful_modes"]}
        print(f"[bench multimodal] {policy_type}: success {ev['success_rate']:.2f}, modes {ev['successful_modes']}")
    plot_bars(out / "success.png", {k: v["success_rate"] for k, v in results.items()}, "success rate",
              f"{cfg.task}: same demos, same budget")
    print(f"\n{'policy':<10} {'success':>8}  modes (cube index: successes)")
    for name, r in results.items():
        print(f"{name:<10} {r['success_rate']:>8.2f}  {r['successful_modes']}")
    bench = {f"{k}_success": v["success_rate"] for k, v in results.items()}
    bench.update({f"{k}_modes": v["successful_modes"] for k, v in results.items()})
    bench.update({"task": cfg.task, "episodes": int(cfg.episodes), "wall_time_s": time.monotonic() - t0})
    write_json(out / "summary.json", bench)
    print(bench_line(bench))
    return bench
