"""``armflow bench vgps``: V-GPS measured end to end (issue 13's target: a base policy at 40-60% raised by >= 20
points over >= 100 unseen seeds at K = 16; IQL vs Cal-QL; K in {4, 16, 64}).

Stages, each cached in ``out/`` so a rerun resumes: 1. base policy (given, or scripted demos + ``armflow train``),
2. ``rollouts`` base episodes recorded (``evaluate record=``), 3. ``ensemble`` critics per method (seeds seed..) on
demos + rollouts (``armflow critic``), V-GPS scoring a candidate by their mean Q, 4. success of the base and of V-GPS
for every (method, K) on the same unseen seeds.
``BENCH_JSON``: ``base_success``, ``<method>_k<K>_success``, ``<method>_k<K>_gain`` (points), plus the chunk
latency p50 of each run from its diagnostics (batched over ``n_envs``; batch-1 latency: ``armflow bench steering``).
"""
from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig

from armflow.workflows.common import bench_line, compose_config, write_json


def cached(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def base_policy(cfg: DictConfig, out: Path) -> tuple[str, str | None]:
    """(checkpoint, demo dataset or None)."""
    if cfg.checkpoint:
        return str(cfg.checkpoint), (str(cfg.dataset) if cfg.dataset else None)
    from armflow.workflows.collect import collect_scripted
    from armflow.workflows.train import train

    demos = out / "demos"
    if not (demos / "meta" / "info.json").is_file():
        collect_scripted(cfg.task, demos, int(cfg.demos), float(cfg.demo_noise_std), int(cfg.seed), progress=False)
    ckpt = out / "pretrain" / "checkpoint"
    if not (ckpt / "model.safetensors").is_file():
        train(compose_config("train", ["policy=flow", f"dataset={demos}", f"steps={cfg.train_steps}",
                                       f"seed={cfg.seed}", f"out={out / 'pretrain'}"]))
    return str(ckpt), str(demos)


def evaluate(cfg: DictConfig, ckpt: str, out: Path, steering: dict | None = None, seed=None, episodes=None,
             record: str | None = None) -> dict:
    from armflow.policies import load_policy
    from armflow.policies.steering import steer, summarise_diagnostics
    from armflow.workflows.evaluate import evaluate_policy

    done = cached(out / "eval.json")
    if done is not None:
        return done
    policy = load_policy(ckpt)
    policy = steer(policy, steering) if steering else policy
    result = evaluate_policy(policy, cfg.task, int(episodes or cfg.episodes), int(seed or cfg.eval_seed),
                             int(cfg.n_envs), 0, progress=False, record=record)
    result["diagnostics"] = summarise_diagnostics(getattr(policy, "diagnostics", []))
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "eval.json", result)
    return result


def diagnostics(run: dict) -> dict:
    """A run's summarised steering diagnostics (this bench's eval.json, or `armflow evaluate steering=...`'s)."""
    return run.get("diagnostics") or (run.get("steering") or {}).get("diagnostics", {})


def train_member(cfg: DictConfig, ckpt: str, demos, rollouts: Path, method: str, i: int, out: Path) -> str:
    """Critic ``i`` of ``method``'s ensemble (seed ``cfg.seed + i``; member 0 in ``critic_<method>``), trained on
    demos + rollouts unless cached; -> its critic dir."""
    from armflow.workflows.critic import train_critic

    critic_dir = out / (f"critic_{method}" if i == 0 else f"critic_{method}_seed{int(cfg.seed) + i}")
    if not (critic_dir / "critic" / "model.safetensors").is_file():
        data = [p for p in (demos, str(rollouts)) if p]
        train_critic(compose_config("critic", [f"dataset=[{','.join(data)}]", f"checkpoint={ckpt}", f"method={method}",
                                               f"steps={cfg.critic_steps}", f"seed={int(cfg.seed) + i}",
                                               f"out={critic_dir}", *list(cfg.critic_overrides)]), critic_dir)
    return str(critic_dir / "critic")


def main(cfg: DictConfig) -> dict:
    if int(cfg.ensemble) < 1:
        raise SystemExit(f"armflow bench vgps: ensemble={cfg.ensemble}; expected >= 1 critics per method")
    out = Path(cfg.out)
    ckpt, demos = base_policy(cfg, out)
    rollouts = out / "rollouts"
    evaluate(cfg, ckpt, out / "record", seed=int(cfg.rollout_seed), episodes=int(cfg.rollouts), record=str(rollouts))
    base = evaluate(cfg, ckpt, out / "base")
    result = {"base_success": base["success_rate"], "episodes": int(cfg.episodes), "rollouts": int(cfg.rollouts)}
    print(f"[bench vgps] base {base['success_rate']:.2f}", flush=True)
    critics = {}
    for method in cfg.methods:  # every critic first, then the (K, method) grid K-major: K=16 comes early
        critics[method] = [train_member(cfg, ckpt, demos, rollouts, method, i, out) for i in range(int(cfg.ensemble))]
    for k in cfg.Ks:
        for method in cfg.methods:
            members = critics[method]
            spec = {"type": "vgps", "critic": members[0] if len(members) == 1 else members, "K": int(k),
                    "beta": float(cfg.beta), "score_step": cfg.score_step}
            suffix = f"_ens{len(members)}" if len(members) > 1 else ""  # a cached single-critic run is another run
            suffix += f"_step{cfg.score_step}" if cfg.score_step is not None else ""
            run = evaluate(cfg, ckpt, out / f"vgps_{method}_k{int(k)}{suffix}", spec)
            key = f"{method}_k{int(k)}"
            result.update({f"{key}_success": run["success_rate"],
                           f"{key}_gain": 100 * (run["success_rate"] - base["success_rate"]),
                           f"{key}_chunk_ms_p50": diagnostics(run).get("latency_ms_p50")})
            print(f"[bench vgps] {method} K={k}: {run['success_rate']:.2f} ({result[f'{key}_gain']:+.0f} points)",
                  flush=True)
    write_json(out / "bench_vgps.json", result)
    print(bench_line(result))
    return result
