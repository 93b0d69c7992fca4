"""``armflow finetune algo=dppo|fpo|dsrl|ppo checkpoint=DIR task=NAME``: RL fine-tuning of a pretrained policy.

Loop: collect (S chunks x N envs) -> update -> every ``eval_every_iters`` a deterministic evaluation on
separate envs over fixed seeds -> checkpoints + resumable state. Stops at ``budget_s`` wall-clock
(including time before a resume) or ``env_steps``.

Outputs under ``out``: ``metrics.jsonl`` + ``tb/`` (MetricLogger), ``curves.png``, ``checkpoints/{best,last}``
(``save_pretrained``; DSRL: the base checkpoint + ``dsrl_noise_actor.safetensors``, load it with
``armflow.policies.rl.load_dsrl_policy``), ``state/`` (resume) and ``summary.json``.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from armflow.workflows.common import MetricLogger, write_json
from armflow.workflows.finetune_backends import BACKENDS
from armflow.workflows.finetune_rollout import EnvSpec, LearnerSpec, build_reward


def check_compat(policy, algo: str, task: str, overrides: dict) -> None:
    """Checkpoint vs task: action dim, observation keys/shapes, chunk length vs episode length."""
    from armflow.policies.base import image_chw
    from armflow.policies.encoders import IMAGE_PREFIX
    from armflow.policies.rl import ALGOS
    from armflow.sim import make_env
    from armflow.sim.obs_layout import combined_layout_problem

    if algo not in ALGOS:
        raise KeyError(f"unknown algo {algo!r}; valid algos: {', '.join(ALGOS)}")
    env = make_env(task, **overrides)
    try:
        d_a = int(env.action_space.shape[0])
        if policy.action_dim != d_a:
            raise ValueError(f"checkpoint action_dim={policy.action_dim} does not match task {task!r} action dim {d_a}")
        spaces = env.observation_space.spaces
        problem = combined_layout_problem(policy.obs_spec, {k: tuple(v.shape) for k, v in spaces.items()},
                                          "checkpoint", f"task {task!r}")
        if problem:
            raise ValueError(problem)
        for key, shape in policy.obs_spec.items():
            if key not in spaces:
                raise ValueError(f"checkpoint needs observation {key!r} but task {task!r} provides {sorted(spaces)}")
            env_shape = tuple(spaces[key].shape)
            # Images compare per-frame as (3, H, W): a checkpoint may state (H, W, 3) (env/LeRobot) or (3, H, W).
            if key.startswith(IMAGE_PREFIX) and image_chw(key, env_shape) == policy.input_shapes[key]:
                continue
            if env_shape != tuple(shape):
                raise ValueError(f"checkpoint observation {key!r} shape {tuple(shape)} does not match task "
                                 f"{task!r} shape {env_shape}")
        if policy.n_action_steps > env.max_episode_steps:
            raise ValueError(f"checkpoint n_action_steps={policy.n_action_steps} (horizon {policy.horizon}) exceeds "
                             f"task {task!r} max_episode_steps={env.max_episode_steps}")
    finally:
        env.close()


def _build(cfg: DictConfig):
    from armflow.policies import load_policy

    if not cfg.checkpoint:
        raise ValueError("armflow finetune: checkpoint=DIR is required (a policy checkpoint from `armflow train`)")
    policy = load_policy(cfg.checkpoint, steered=False)  # RL fine-tunes the base of a steered export
    overrides = OmegaConf.to_container(cfg.task_overrides, resolve=True) or {}
    check_compat(policy, cfg.algo.name, cfg.task, overrides)
    params = OmegaConf.to_container(cfg.algo.params, resolve=True) or {}
    spec = LearnerSpec(cfg.algo.name, str(cfg.checkpoint), params, int(cfg.n_envs), int(cfg.threads))
    reward = {"reward_mode": str(cfg.reward), "shaping_scale": float(cfg.shaping_scale),
              "reward_model": OmegaConf.to_container(cfg.reward_model, resolve=True),
              "reward_noise": (float(cfg.reward_noise.fn), float(cfg.reward_noise.fp))}
    train_overrides = overrides  # a detector that ends episodes: the simulator's success no longer does (eval keeps it)
    if cfg.reward == "model" and cfg.reward_model.get("terminal"):
        train_overrides = {**overrides, "terminate_on_success": False}
    train_env = EnvSpec(cfg.task, int(cfg.n_envs), int(cfg.n_workers), train_overrides, int(cfg.seed), **reward)
    build_reward(train_env)  # a bad reward config fails here, before workers start
    eval_reward = {**reward, "reward_model": {**reward["reward_model"], "terminal": False}}  # eval: the simulator's end
    eval_env = EnvSpec(cfg.task, int(cfg.n_eval_envs), 0, overrides, int(cfg.eval_seed), **eval_reward)
    window = {"n_obs_steps": policy.n_obs_steps, "obs_keys": tuple(policy.obs_spec),
              "n_action_steps": policy.n_action_steps}
    if cfg.backend not in BACKENDS:
        raise KeyError(f"unknown backend {cfg.backend!r}; valid: {', '.join(BACKENDS)}")
    return BACKENDS[cfg.backend](spec, train_env, eval_env, window)


def _save_state(backend, out: Path, counters: dict) -> None:
    """Write state.tmp, then swap it in (commit_state_dir): every kill window leaves a complete state."""
    from armflow.workflows.train_state import commit_state_dir

    tmp = out / "state.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    backend.save(str(tmp), counters["env_steps"], {"counters": counters})
    commit_state_dir(tmp, out / "state", counters["env_steps"])


def _resume(backend, out: Path) -> dict | None:
    from armflow.workflows.train_state import newest_state_dir, truncate_metrics

    state = newest_state_dir(out / "state")
    if state is None:
        return None
    _, extra = backend.load(str(state))
    counters = extra["counters"]
    truncate_metrics(out / "metrics.jsonl", counters["env_steps"])  # rows logged after this state
    return counters


def _evaluate(backend, cfg, counters: dict, logger: MetricLogger, out: Path) -> dict:
    seeds = [int(cfg.eval_seed) + i for i in range(int(cfg.eval_episodes))]
    res = backend.evaluate(seeds, int(cfg.eval_seed))
    sr = res["success_rate"]
    counters["evals"].append({"env_steps": counters["env_steps"], "wall_time_s": counters["wall_time_s"],
                              "success_rate": sr, "return_mean": res["return_mean"],
                              "rl_return_mean": res["rl_return_mean"]})
    if counters["start"] is None:
        counters["start"] = sr
    if sr >= 0.9 and counters["reach90"] is None:
        counters["reach90"] = {"env_steps": counters["env_steps"], "wall_time_s": counters["wall_time_s"]}
    if counters["best"] is None or sr > counters["best"]:
        counters["best"] = sr
        backend.export(str(out / "checkpoints" / "best"))
    logger.log(counters["env_steps"], {"eval/success_rate": sr, "eval/return": res["return_mean"],
                                       "eval/rl_return": res["rl_return_mean"],
                                       "eval/length": res["length_mean"], "charts/wall_time_s": counters["wall_time_s"]})
    return res


def budget_percent(env_steps: int, wall_s: float, env_steps_budget: int, budget_s: float) -> float:
    """Percent of the run done, by whichever budget (env steps or wall clock) ends it first, so the
    progress bar's total and its ETA are the budget that actually stops the run."""
    return 100.0 * min(1.0, max(env_steps / max(env_steps_budget, 1), wall_s / max(budget_s, 1e-9)))


def run_finetune(cfg: DictConfig) -> dict:
    """Run fine-tuning as configured; returns the summary dict (also written to ``<out>/summary.json``)."""
    import torch
    from tqdm import tqdm

    from armflow.workflows.finetune_plots import plot_curves

    torch.set_num_threads(max(1, int(cfg.threads)))
    torch.manual_seed(int(cfg.seed))
    out = Path(cfg.out or "runs/finetune/latest")
    out.mkdir(parents=True, exist_ok=True)
    backend = _build(cfg)
    counters = _resume(backend, out) if cfg.resume else None
    resumed = counters is not None
    counters = counters or {"iteration": 0, "env_steps": 0, "wall_time_s": 0.0, "evals": [], "start": None,
                            "best": None, "reach90": None}
    logger = MetricLogger(out)
    n_steps = int(cfg.n_steps or cfg.algo.n_steps)
    t0, wall0 = time.monotonic(), counters["wall_time_s"]
    bar = tqdm(total=100.0, disable=not cfg.progress, desc=cfg.algo.name, unit="%",
               bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}{postfix}]")
    budget = (int(cfg.env_steps), float(cfg.budget_s))
    bar.update(budget_percent(counters["env_steps"], counters["wall_time_s"], *budget))
    try:
        if counters["start"] is None:
            _evaluate(backend, cfg, counters, logger, out)
        while counters["env_steps"] < int(cfg.env_steps) and counters["wall_time_s"] < float(cfg.budget_s):
            reseed = int(cfg.seed) + 7919 * (counters["iteration"] + 1) if resumed else None
            batch, stats = backend.collect(n_steps, reseed)
            resumed = False
            metrics = backend.update(batch)
            counters["iteration"] += 1
            counters["env_steps"] += stats["env_steps"]
            counters["wall_time_s"] = wall0 + time.monotonic() - t0
            bar.update(budget_percent(counters["env_steps"], counters["wall_time_s"], *budget) - bar.n)
            bar.set_description(f"{cfg.algo.name} {counters['env_steps']} env steps", refresh=False)
            eps = stats["episodes"]
            if eps:
                metrics["charts/episode_return"] = sum(e["return"] for e in eps) / len(eps)
                metrics["charts/episode_rl_return"] = sum(e["rl_return"] for e in eps) / len(eps)
                metrics["charts/episode_success"] = sum(e["success"] for e in eps) / len(eps)
            metrics.update(stats.get("rewards", {}))
            metrics.update({"charts/iteration": counters["iteration"], "charts/wall_time_s": counters["wall_time_s"],
                            "charts/sps": counters["env_steps"] / max(counters["wall_time_s"], 1e-6)})
            logger.log(counters["env_steps"], metrics)
            if counters["iteration"] % int(cfg.eval_every_iters) == 0:
                res = _evaluate(backend, cfg, counters, logger, out)
                bar.set_postfix(success=f"{res['success_rate']:.2f}")
            if counters["iteration"] % int(cfg.save_every_iters) == 0:
                _save_state(backend, out, counters)
        if not counters["evals"] or counters["evals"][-1]["env_steps"] != counters["env_steps"]:
            _evaluate(backend, cfg, counters, logger, out)
        backend.export(str(out / "checkpoints" / "last"))
        _save_state(backend, out, counters)
    finally:
        bar.close()
        logger.close()
        backend.close()
    summary = {"algo": cfg.algo.name, "task": cfg.task, "checkpoint": str(cfg.checkpoint),
               "success_rate": {"start": counters["start"], "final": counters["evals"][-1]["success_rate"],
                                "best": counters["best"]},
               "env_steps": counters["env_steps"], "wall_time_s": round(counters["wall_time_s"], 2),
               "iterations": counters["iteration"], "reach_90": counters["reach90"], "evals": counters["evals"]}
    write_json(out / "summary.json", summary)
    plot_curves(out / "metrics.jsonl", out / "curves.png", title=f"{cfg.algo.name} on {cfg.task}")
    return summary


def main(cfg: DictConfig) -> dict:
    summary = run_finetune(cfg)
    sr = summary["success_rate"]
    print(f"finetune {summary['algo']}: success {sr['start']:.2f} -> {sr['final']:.2f} (best {sr['best']:.2f}) "
          f"in {summary['env_steps']} env steps, {summary['wall_time_s']:.0f} s; outputs in {cfg.out}")
    return summary
