"""``armflow collect``: record demonstrations (scripted expert or a human device) into a LeRobot v3 dataset.

Each finished episode is saved atomically, so killing the process loses at most the episode in progress.
Every key of the env's observation space becomes a feature: on the arm tasks ``observation.state`` (robot
proprioception) and ``observation.environment_state`` (object state, privileged), plus any cameras.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

DEVICES = ("scripted", "keyboard", "spacemouse")


def dataset_features(env) -> dict[str, dict]:
    """LeRobot feature specs for an env's observation/action spaces plus the RL columns."""
    features: dict[str, dict] = {}
    for key, space in env.observation_space.spaces.items():
        if key.startswith("observation.images."):
            features[key] = {"dtype": "video", "shape": tuple(space.shape), "names": ["height", "width", "channels"]}
        else:
            features[key] = {"dtype": "float32", "shape": tuple(space.shape), "names": None}
    features["action"] = {"dtype": "float32", "shape": tuple(env.action_space.shape), "names": None}
    features["next.reward"] = {"dtype": "float32", "shape": (1,), "names": None}
    features["next.done"] = {"dtype": "bool", "shape": (1,), "names": None}
    features["next.truncated"] = {"dtype": "bool", "shape": (1,), "names": None}
    features["next.success"] = {"dtype": "bool", "shape": (1,), "names": None}
    return features


def make_frame(obs: dict, action: np.ndarray, reward: float, terminated: bool, truncated: bool, success: bool) -> dict:
    """One dataset row: the observation the action was taken in, the action, and what followed."""
    frame = {key: np.asarray(value) for key, value in obs.items()}
    frame["action"] = np.asarray(action, dtype=np.float32)
    frame["next.reward"] = np.array([reward], dtype=np.float32)
    frame["next.done"] = np.array([terminated or truncated])
    frame["next.truncated"] = np.array([truncated])
    frame["next.success"] = np.array([success])
    return frame


def run_scripted_episode(env, expert, seed: int, success_hold_steps: int = 0,
                         release_step: int | None = None) -> tuple[list[dict], bool]:
    """Roll one expert episode; returns (frames, success: the episode ever succeeded).

    ``success_hold_steps``: after the first success keep stepping that many steps (the expert goes on
    lifting), each frame labelled with the env's own ``success``; ``next.done`` is set on the last frame
    only. ``release_step``: a scripted failure -- from that step on the gripper is forced open (missed
    grasps, a dropped cube); the episode is labelled by what the env reports, never by the intent.
    """
    obs, _ = env.reset(seed=seed)
    expert.reset()
    frames, success, first, step = [], False, None, 0
    while True:
        action = np.asarray(expert(obs), dtype=np.float32)
        if release_step is not None and step >= release_step:
            action[-1] = -1.0  # gripper open
        next_obs, reward, terminated, truncated, info = env.step(action)
        now = bool(info["success"])
        first = step if (now and first is None) else first
        success = success or now
        if first is None:
            done = terminated or truncated
        else:  # holding after success: a termination that is not a success still ends it
            done = truncated or step - first >= success_hold_steps or (terminated and not now)
        terminated = bool(terminated) and done  # the episode goes on for the hold frames
        frames.append(make_frame(obs, action, float(reward), terminated, truncated, now))
        obs, step = next_obs, step + 1
        if done:
            return frames, success


def failure_plan(attempts: int, failures: float, seed: int, window: int = 16) -> list[int | None]:
    """Per attempt: None (a normal demo) or the step from which the gripper is forced open (a scripted
    failure), drawn with probability ``failures`` within the first ``window`` steps (a clean ``lift`` demo
    succeeds after ~20)."""
    rng = np.random.default_rng([seed, 15])
    fail = rng.random(attempts) < failures
    steps = rng.integers(0, window, size=attempts)
    return [int(s) if f else None for f, s in zip(fail, steps)]


def collect_scripted(task: str, root: str | Path, episodes: int, noise_std: float = 0.0, seed: int = 0,
                     cameras: list[str] | None = None, only_success: bool = True,
                     max_attempts_factor: float = 3.0, progress: bool = True,
                     env_overrides: dict | None = None, failures: float = 0.0,
                     success_hold_steps: int = 0) -> dict:
    """Record ``episodes`` scripted demos of ``task`` into ``root``; seeds are ``seed, seed+1, ...``.

    Returns ``{"episodes_saved", "attempts", "expert_success_rate", "frames", "successes_saved"}``. With
    ``only_success`` failed attempts are discarded (and counted in ``expert_success_rate``). ``failures``
    (needs ``only_success=False``) and ``success_hold_steps``: see ``run_scripted_episode``; together they
    record both classes for a success classifier (``armflow reward fit``).
    """
    from armflow.data import LeRobotWriter
    from armflow.sim import make_env, make_expert

    if episodes < 1 or max_attempts_factor < 1:
        raise ValueError(f"collect {task}: episodes={episodes} must be >= 1 and max_attempts_factor="
                         f"{max_attempts_factor} >= 1")
    if not 0.0 <= failures <= 1.0 or success_hold_steps < 0:
        raise ValueError(f"collect {task}: failures={failures} must be in [0, 1] and success_hold_steps="
                         f"{success_hold_steps} >= 0")
    if failures > 0 and only_success:
        raise ValueError(f"collect {task}: failures={failures} records scripted failures, but only_success=true "
                         "would drop them; set only_success=false")
    env = make_env(task, **{**(env_overrides or {}), **({"cameras": list(cameras)} if cameras else {})})
    expert = make_expert(env, noise_std=noise_std, seed=seed)
    fps = int(round(1.0 / env.ctrl_dt))
    saved = attempts = successes = frames_total = successes_saved = 0
    max_attempts = int(np.ceil(episodes * max_attempts_factor))
    plan = failure_plan(max_attempts, failures, seed)
    bar = tqdm(total=episodes, desc=f"collect {task}", unit="ep", disable=not progress)
    with LeRobotWriter(root, fps=fps, features=dataset_features(env), robot_type="panda") as writer:
        while saved < episodes and attempts < max_attempts:
            frames, success = run_scripted_episode(env, expert, seed + attempts, success_hold_steps, plan[attempts])
            attempts += 1
            successes += int(success)
            if only_success and not success:
                continue
            for frame in frames:
                writer.add_frame(frame)
            writer.save_episode(task=task)
            saved += 1
            successes_saved += int(success)
            frames_total += len(frames)
            bar.update(1)
            bar.set_postfix(expert_success=f"{successes / attempts:.2f}")
    bar.close()
    env.close()
    if saved < episodes:
        raise RuntimeError(
            f"collect {task}: only {saved}/{episodes} successful demos in {attempts} attempts "
            f"(noise_std={noise_std}); lower noise_std or set only_success=false")
    return {"episodes_saved": saved, "attempts": attempts, "expert_success_rate": successes / attempts,
            "frames": frames_total, "successes_saved": successes_saved}


def collect_human(cfg: DictConfig, root: Path) -> dict:
    """Record episodes from a keyboard or SpaceMouse through a live viewer."""
    from armflow.hardware.teleop import make_device, record_teleop_session

    overrides = {"max_episode_steps": int(cfg.human_episode_steps)} if cfg.human_episode_steps else {}
    overrides.update(OmegaConf.to_container(cfg.task_overrides, resolve=True))
    return record_teleop_session(task=cfg.task, device=make_device(cfg.device), root=root,
                                 episodes=int(cfg.episodes), seed=int(cfg.seed), env_overrides=overrides)


def main(cfg: DictConfig) -> dict:
    from armflow.workflows.common import write_json

    if cfg.device not in DEVICES:
        raise SystemExit(f"armflow collect: unknown device {cfg.device!r}; valid: {', '.join(DEVICES)}")
    out = Path(cfg.out)
    root = Path(cfg.dataset) if cfg.get("dataset") else out / "dataset"
    t0 = time.monotonic()
    if cfg.device == "scripted":
        summary = collect_scripted(cfg.task, root, int(cfg.episodes), float(cfg.noise_std), int(cfg.seed),
                                   list(cfg.cameras or []), bool(cfg.only_success),
                                   env_overrides=OmegaConf.to_container(cfg.task_overrides, resolve=True),
                                   failures=float(cfg.failures), success_hold_steps=int(cfg.success_hold_steps))
    else:
        summary = collect_human(cfg, root)
    summary.update({"task": cfg.task, "dataset": str(root), "wall_time_s": time.monotonic() - t0})
    write_json(out / "summary.json", summary)
    print(f"[collect] {summary['episodes_saved']} episodes -> {root}")
    return summary
