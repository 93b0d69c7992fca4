"""Teleop glue shared by ``armflow collect device=keyboard`` (direct sim) and ``armflow teleop`` (through the bridge).

A *target* is what the device drives, with one small interface: ``fps``, ``reset(seed) -> obs``,
``step(action (7,)) -> (obs, reward, terminated, truncated, info)``, ``frame() -> uint8 (H, W, 3)``.
``EnvTarget`` wraps a sim env; ``DriverTarget`` wraps any ``Driver`` commanded in ``ee_delta`` mode
(the sim task driver, or ``BridgeClient`` for a remote one), reading the task observation and the
episode flags from ``state.extras``.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

SAVE_OUTCOMES = ("save", "success", "truncated", "max_steps")


class EnvTarget:
    def __init__(self, env, camera: str | None = None):
        self.env, self.camera = env, camera
        self.fps = 1.0 / env.ctrl_dt

    def reset(self, seed: int | None) -> dict:
        return self.env.reset(seed=seed)[0]

    def step(self, action: np.ndarray):
        return self.env.step(np.asarray(action, np.float32))

    def frame(self) -> np.ndarray:
        return self.env.render(self.camera)


class DriverTarget:
    """``next_state`` returns the state after a command (default ``driver.read_state``; the bridge waits for a new step)."""

    def __init__(self, driver, next_state: Callable[[], object] | None = None, reset: Callable[[int], object] | None = None):
        self.driver = driver
        self.fps = float(driver.info().native_rate_hz)
        self._next_state = next_state or driver.read_state
        self._reset = reset or getattr(driver, "reset", None)
        self.state = None

    def _obs(self) -> dict:
        return {k: np.asarray(v) for k, v in self.state.extras.items() if k.startswith("observation.")}

    def reset(self, seed: int | None) -> dict:
        self.state = self._reset(seed) if self._reset is not None else self.driver.read_state()
        return self._obs()

    def step(self, action: np.ndarray):
        a = np.asarray(action, float)
        self.driver.command("ee_delta", a[:6], gripper=float((a[6] + 1.0) / 2.0))
        self.state = self._next_state()
        ex = self.state.extras
        info = {"success": bool(ex.get("success", False))}
        return self._obs(), float(ex.get("reward", 0.0)), bool(ex.get("terminated", False)), \
            bool(ex.get("truncated", False)), info

    def frame(self) -> np.ndarray:
        for key, value in self.state.extras.items():
            if key.startswith("observation.images.") and np.asarray(value).ndim == 3:
                return np.asarray(value, np.uint8)
        img = np.zeros((240, 320, 3), np.uint8)  # no camera: a status panel (the viewer prints the pose)
        return img


def _status(target, step: int) -> str:
    state = getattr(target, "state", None)
    if state is not None:
        p = state.ee_pos_m
        return f"step {step}  ee [{p[0]:+.3f} {p[1]:+.3f} {p[2]:+.3f}] m  grip {state.gripper:.2f}"
    return f"step {step}"


def run_teleop_episode(target, device, on_frame: Callable, seed: int | None = None, max_steps: int | None = None,
                       realtime: bool = True) -> dict:
    """Drive ``target`` with ``device`` until an event or the episode ends.

    ``on_frame(obs, action, reward, terminated, truncated, info)`` is called after every step with the
    observation the action was taken in. Returns ``{"outcome", "steps", "success"}``; outcome is one of
    save | discard | quit | success | truncated | max_steps. A device's "success" event toggles a human
    success label (SERL's recorder): while it is on, ``info["success"]`` is true and ``info["human_success"]``
    set, whatever the target reports (a real arm has no success signal of its own).
    """
    if not hasattr(target, "frame"):  # a bare env or Driver
        target = EnvTarget(target) if hasattr(target, "ctrl_dt") else DriverTarget(target)
    obs = target.reset(seed)
    if hasattr(device, "reset"):
        device.reset()
    period_s, t_next, step, success, marked = 1.0 / target.fps, time.monotonic(), 0, False, False
    while True:
        if hasattr(device, "show"):
            device.show(target.frame(), _status(target, step) + ("  [SUCCESS]" if marked else ""))
        action, events = device.read()
        for outcome in ("quit", "discard", "save"):
            if outcome in events:
                return {"outcome": outcome, "steps": step, "success": success}
        marked = marked != ("success" in events)
        next_obs, reward, terminated, truncated, info = target.step(action)
        if marked:
            info = {**info, "success": True, "human_success": True}
        success = bool(info.get("success", False))
        on_frame(obs, action, reward, terminated, truncated, info)
        obs, step = next_obs, step + 1
        if terminated or truncated:
            return {"outcome": "success" if success else "truncated", "steps": step, "success": success}
        if max_steps is not None and step >= max_steps:
            return {"outcome": "max_steps", "steps": step, "success": success}
        if realtime:
            t_next += period_s
            pause = getattr(device, "wait", time.sleep)  # the keyboard keeps reading keys while we wait
            pause(max(0.0, t_next - time.monotonic()))


def dataset_features(observation_space, action_dim: int) -> dict[str, dict]:
    """LeRobot features for a dict observation space + the action and RL columns (as ``armflow collect``)."""
    features: dict[str, dict] = {}
    for key, space in observation_space.spaces.items():
        dtype = "video" if key.startswith("observation.images.") else "float32"
        names = ["height", "width", "channels"] if dtype == "video" else None
        features[key] = {"dtype": dtype, "shape": tuple(space.shape), "names": names}
    features["action"] = {"dtype": "float32", "shape": (action_dim,), "names": None}
    for key, dtype in (("next.reward", "float32"), ("next.done", "bool"), ("next.truncated", "bool"),
                       ("next.success", "bool")):
        features[key] = {"dtype": dtype, "shape": (1,), "names": None}
    return features


def make_frame(obs: dict, action, reward: float, terminated: bool, truncated: bool, info: dict) -> dict:
    frame = {k: np.asarray(v) for k, v in obs.items()}
    frame["action"] = np.asarray(action, np.float32)
    frame["next.reward"] = np.array([reward], np.float32)
    frame["next.done"] = np.array([terminated or truncated])
    frame["next.truncated"] = np.array([truncated])
    frame["next.success"] = np.array([bool(info.get("success", False))])
    return frame


def record_episodes(target, device, writer, task: str, episodes: int, seed: int = 0,
                    max_steps: int | None = None, realtime: bool = True) -> dict:
    """Record up to ``episodes`` saved episodes into an open ``LeRobotWriter``; quit ends early."""
    saved = discarded = frames = 0
    attempt, outcomes = 0, []
    while saved < episodes:
        result = run_teleop_episode(target, device, lambda *f: writer.add_frame(make_frame(*f)),
                                    seed=seed + attempt, max_steps=max_steps, realtime=realtime)
        attempt += 1
        outcomes.append(result["outcome"])
        if result["outcome"] in SAVE_OUTCOMES and result["steps"] > 0:
            writer.save_episode(task=task)
            saved, frames = saved + 1, frames + result["steps"]
        else:
            writer.clear_episode()
            discarded += int(result["outcome"] != "quit")
        if result["outcome"] == "quit":
            break
    return {"episodes_saved": saved, "episodes_discarded": discarded, "frames": frames, "outcomes": outcomes}


def record_teleop_session(task: str, device, root: str | Path, episodes: int, seed: int = 0,
                          max_steps: int | None = None, realtime: bool = True, env_overrides: dict | None = None,
                          camera: str | None = None) -> dict:
    """Teleoperate the sim task ``task`` directly and record a LeRobot v3 dataset at ``root``."""
    from armflow.data import LeRobotWriter
    from armflow.sim import make_env

    env = make_env(task, **(env_overrides or {}))
    target = EnvTarget(env, camera)
    features = dataset_features(env.observation_space, int(env.action_space.shape[0]))
    try:
        with LeRobotWriter(root, fps=int(round(target.fps)), features=features, robot_type="panda") as writer:
            return record_episodes(target, device, writer, task, episodes, seed, max_steps, realtime)
    finally:
        env.close()
        if hasattr(device, "close"):
            device.close()
