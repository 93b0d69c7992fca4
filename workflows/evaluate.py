"""``armflow evaluate``: success rate of a checkpoint over N seeded episodes in vectorised envs.

Seeds are ``seed, seed+1, ...`` (default 100000+, never used by ``armflow collect``'s defaults);
writes ``eval.json``, PNG plots and MP4 rollouts of the first ``video_episodes`` seeds. ``viewer=true``: the
rollout in the ITPS viewer's window, one env (``armflow.workflows.viewer_rollout``).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from armflow.workflows.rollout import PolicyRunner, run_episodes


def check_compatible(policy, env_obs_space, env_action_dim: int, source: str, task: str) -> None:
    """Fail clearly when a checkpoint's observation/action spec does not fit the task (``source`` names the
    checkpoint); a checkpoint of the layout before the state split gets the message saying what to do."""
    from armflow.sim.obs_layout import combined_layout_problem

    if policy.action_dim != env_action_dim:
        raise SystemExit(f"{source}: policy action_dim {policy.action_dim} does not match task {task!r} "
                         f"action dim {env_action_dim}")
    env_shapes = {k: tuple(space.shape) for k, space in env_obs_space.spaces.items()}
    problem = combined_layout_problem(policy.obs_spec, env_shapes, source, f"task {task!r}")
    if problem:
        raise SystemExit(problem)
    for key, shape in policy.obs_spec.items():
        if key not in env_obs_space.spaces:
            raise SystemExit(f"{source}: policy needs observation {key!r} which task {task!r} does not provide "
                             f"(it has {sorted(env_obs_space.spaces)})")
        if tuple(env_obs_space.spaces[key].shape) != tuple(shape):
            raise SystemExit(f"{source}: observation {key!r} has shape {tuple(env_obs_space.spaces[key].shape)} "
                             f"in task {task!r} but the policy expects {tuple(shape)}")


def record_videos(policy, task: str, seeds: list[int], video_dir: Path, env_overrides: dict,
                  limits: str | None = None) -> dict[str, list[str]]:
    """Roll ``seeds`` in one in-process env; one MP4 per episode of the rendered scene (``videos``) and, for a
    policy that reads cameras, one of the camera images it was given, side by side (``policy_view_videos``);
    ``limits``: behind the bridge's safety layer, as ``evaluate_policy(safety_limits=...)`` ran them."""
    from armflow.sim import make_env
    from armflow.workflows.media import CAMERA_PREFIX, camera_row, write_mp4

    paths: dict[str, list[str]] = {"videos": [], "policy_view_videos": []}
    if not seeds:
        return paths
    if limits:
        from armflow.control.sim_limits import SafetyLimitedEnv

        env = SafetyLimitedEnv(task, limits, **env_overrides)
    else:
        env = make_env(task, **env_overrides)
    render = getattr(env, "render_video", env.render)  # a larger 3/4 view where the task has one
    views = [k for k in policy.obs_spec if k.startswith(CAMERA_PREFIX)]
    runner = PolicyRunner(policy, 1)
    for seed in seeds:
        obs, _ = env.reset(seed=seed)
        runner.start({k: v[None] for k, v in obs.items()}, seeds=[seed])
        frames, seen, info = [render()], [camera_row(obs, views)], {"success": False}
        while True:
            obs, _, terminated, truncated, info = env.step(runner.act()[0])
            runner.observe({k: v[None] for k, v in obs.items()})
            frames.append(render())
            seen.append(camera_row(obs, views))
            if terminated or truncated:
                break
        name = f"seed{seed}_{'success' if info['success'] else 'failure'}"
        paths["videos"].append(str(write_mp4(video_dir / f"{name}.mp4", frames, fps=1.0 / env.ctrl_dt)))
        if views:
            paths["policy_view_videos"].append(
                str(write_mp4(video_dir / f"{name}_policy_view.mp4", seen, fps=1.0 / env.ctrl_dt)))
    env.close()
    return paths


def gripper_dim(task: str, action_dim: int) -> int | None:
    """The gripper's action dimension (the last of the arm tasks' 7-D ee_delta + gripper), None elsewhere."""
    return action_dim - 1 if action_dim == 7 and not task.startswith("toy") else None


def evaluate_policy(policy, task: str, episodes: int, seed: int = 100_000, n_envs: int = 8,
                    n_workers: int | None = None, env_overrides: dict | None = None,
                    progress: bool = True, source: str = "evaluate", record: str | None = None,
                    execution=None, safety_limits: str | None = None) -> dict:
    """Success rate of ``policy`` on ``task`` over ``episodes`` seeded episodes (``source`` names the policy in
    errors); ``record``: a dir where the episodes are written as a LeRobot v3 dataset (``workflows.record``);
    ``execution``: a :class:`~armflow.workflows.realtime_exec.Execution` (chunk executor, simulated inference
    delay), which adds ``realtime`` metrics and per-episode discontinuity / time to success; ``safety_limits``: run
    the envs (in-process) behind the bridge's safety layer with these limits (a name under configs/safety_limits/
    or a YAML path; ``auto``: the file ``armflow serve`` picks for the task), as lockstep ``armflow deploy`` runs
    them: the same episodes, and per-episode ``clamps`` (``armflow.control.sim_limits``)."""
    from armflow.workflows.chunk_env import ChunkVecEnv

    if episodes < 1 or n_envs < 1:
        raise ValueError(f"evaluate {task}: episodes={episodes} and n_envs={n_envs} must be >= 1 "
                         "(a success rate over no episodes is undefined)")
    n_envs = min(n_envs, episodes)
    keep = max(policy.n_action_steps, policy.n_obs_steps + 1) if record else 0
    # a recording keeps every observation the env has (cameras for a reward model), the policy reads its own keys
    venv = None
    if safety_limits:
        from armflow.control.sim_limits import limited_vec_env

        venv = limited_vec_env(task, n_envs, safety_limits, env_overrides)
    env = ChunkVecEnv(task, n_envs, policy.n_obs_steps, None if record else tuple(policy.obs_spec), n_workers,
                      dict(env_overrides or {}), keep_steps=keep, venv=venv)
    recorder = None
    try:
        check_compatible(policy, env.venv.single_observation_space, env.action_dim, source, task)
        policy.eval()
        runner = PolicyRunner(policy, n_envs)
        act, on_start, t_a = runner.predict, runner.noise.seed, policy.n_action_steps
        if execution is not None:
            from armflow.workflows.realtime_exec import DelayedExecution

            act = DelayedExecution(runner, execution, env.venv.ctrl_dt, gripper_dim(task, env.action_dim))
            on_start, t_a = act.on_start, act.s
        if record:
            from armflow.workflows.record import EpisodeRecorder

            recorder = EpisodeRecorder(record, env, task)
        with tqdm(total=episodes, desc=f"evaluate {task}", unit="ep", disable=not progress) as bar:
            results = run_episodes(env, act, [seed + i for i in range(episodes)], t_a,
                                   on_start=on_start, progress=bar, on_step=recorder)
        if venv is not None:
            from armflow.control.sim_limits import add_episode_clamps

            add_episode_clamps(results, venv)
    finally:
        env.close()
        if recorder is not None:
            recorder.close()
    return {**episode_summary(task, results), **({"realtime": act.metrics(results)} if execution is not None else {}),
            **({"recorded": {"dataset": str(record), "episodes": recorder.episodes}} if recorder else {})}


def episode_summary(task: str, results: list[dict]) -> dict:
    """Success rate, the successful episodes' modes, mean return and length of per-episode ``results``."""
    successes = np.array([r["success"] for r in results])
    modes = [r["mode"] for r in results if r["success"] and r["mode"] >= 0]
    mode_counts = {str(m): modes.count(m) for m in sorted(set(modes))}
    return {"task": task, "episodes": len(results), "success_rate": float(successes.mean()),
            "successful_modes": mode_counts,
            "mean_return": float(np.mean([r["return"] for r in results])),
            "mean_length": float(np.mean([r["length"] for r in results])), "per_episode": results}


def plot_eval(out: Path, result: dict) -> list[Path]:
    from armflow.workflows.media import plot_curves

    per = result["per_episode"]
    seeds = [r["seed"] for r in per]
    running = np.cumsum([r["success"] for r in per]) / np.arange(1, len(per) + 1)
    return [plot_curves(out / "success_running.png", {"success rate": (range(1, len(per) + 1), running)},
                        "episodes evaluated", "running success rate", f"{result['task']}: {result['success_rate']:.2f}"),
            plot_curves(out / "returns.png", {"return": (seeds, [r["return"] for r in per])}, "seed", "episode return",
                        f"{result['task']} returns")]


def main(cfg: DictConfig) -> dict:
    from armflow.policies import load_policy
    from armflow.workflows.common import write_json
    from armflow.workflows.realtime_exec import execution_from_cfg, plot_actions
    from armflow.workflows.itps_viewer import add_goal_record
    from armflow.workflows.steering import apply_steering, steering_summary
    from armflow.workflows.viewer_rollout import evaluate_viewer, wants_viewer

    if not cfg.get("checkpoint"):
        raise SystemExit("armflow evaluate: set checkpoint=DIR (a policy dir with config.json + model.safetensors)")
    torch.set_num_threads(int(cfg.num_threads))
    out = Path(cfg.out)
    t0 = time.monotonic()
    policy = load_policy(cfg.checkpoint)
    overrides = dict(OmegaConf.to_container(cfg.task_overrides, resolve=True) or {})
    search = lambda p: evaluate_policy(p, cfg.task, int(cfg.steering.search_episodes or 20),  # noqa: E731
                                       int(cfg.seed) - 10_000, int(cfg.n_envs), cfg.n_workers, overrides, False,
                                       safety_limits=cfg.get("limits"))[
        "success_rate"]  # GPC weight search on seeds below the evaluated ones
    policy, steering = apply_steering(policy, cfg.get("steering"), search)
    if wants_viewer(cfg):  # the rollout in the ITPS viewer's window (one env), or a replay of its goals
        result, session = evaluate_viewer(policy, cfg, overrides, out, f"checkpoint {cfg.checkpoint}")
    else:
        result = evaluate_policy(policy, cfg.task, int(cfg.episodes), int(cfg.seed), int(cfg.n_envs), cfg.n_workers,
                                 overrides, source=f"checkpoint {cfg.checkpoint}", record=cfg.get("record"),
                                 execution=execution_from_cfg(cfg), safety_limits=cfg.get("limits"))
    if steering is not None:
        result["steering"] = steering_summary(policy, steering)
    if wants_viewer(cfg):
        add_goal_record(result, session, policy, str(cfg.viewer_camera))
    else:
        result.update(record_videos(policy, cfg.task, [int(cfg.seed) + i for i in range(int(cfg.video_episodes))],
                                    out / "videos", overrides, cfg.get("limits")))
    result["task_overrides"] = overrides
    result["plots"] = [str(p) for p in plot_eval(out, result)]
    if "realtime" in result:  # the first episode's executed actions with its chunk switches
        rt = result["realtime"]
        result["plots"].append(str(plot_actions(out / "actions_first_episode.png", rt.pop("trace_actions"),
                                                rt.pop("trace_switches"), f"{rt['executor']}, delay {rt['delay_ms']:.0f} ms",
                                                rt["ctrl_dt_s"])))
    result["checkpoint"], result["wall_time_s"] = str(cfg.checkpoint), time.monotonic() - t0
    write_json(out / "eval.json", result)
    print(f"[evaluate] {cfg.task}: success {result['success_rate']:.2f} over {result['episodes']} episodes")
    return result
