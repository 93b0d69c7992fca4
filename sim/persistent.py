"""Persistent-state (reset-free) episodes, EARL style (Sharma et al. 2021), for direct-sim use.

``PersistentEnv(env)``: the first ``reset()`` is a real scene reset; later ``reset()`` calls keep the
scene where it is and return its current observation, only the episode bookkeeping restarts (the
wrapped env's step counter, so its time limit counts from there). ``reset(options={"scene": True})``
forces a real reset (a human reset). ``scene_resets`` counts real resets (the first included),
``soft_resets`` the kept ones; ``info["scene_reset"]`` says which a reset was.

``in_workspace(env, i, margin_m)``: cube ``i`` is on or above the table and inside the box the arm
reaches; a cube outside it is stuck for the reset skill and needs a human (scene) reset.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np

# The box where the Panda's grip site reaches a cube pointing down [m], world frame (table top at z = 0,
# table x in [-0.05, 0.95], y in [-0.6, 0.6]); the tasks place cubes within (0.5, 0) +- 0.12.
WORKSPACE_LOW_M = (0.25, -0.30, 0.0)
WORKSPACE_HIGH_M = (0.75, 0.30, 0.40)


def in_workspace(env, i: int = 0, margin_m: float = 0.01) -> bool:
    """Cube ``i``'s centre lies in ``WORKSPACE_LOW_M .. WORKSPACE_HIGH_M`` shrunk by ``margin_m`` in x, y
    and not more than ``margin_m`` below its resting height (fallen off the table: far below)."""
    base = getattr(env, "unwrapped", env)
    cube = base.cube_pos(i)
    low, high = np.asarray(WORKSPACE_LOW_M), np.asarray(WORKSPACE_HIGH_M)
    inside_xy = bool(np.all(cube[:2] >= low[:2] + margin_m) and np.all(cube[:2] <= high[:2] - margin_m))
    return inside_xy and base.rest_height_m - margin_m <= cube[2] <= high[2]


class PersistentEnv(gym.Wrapper):
    """``env`` whose resets after the first keep the scene (see module docstring)."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.scene_resets = 0  # real scene resets, the first included
        self.soft_resets = 0  # resets that kept the scene
        self._obs: dict | None = None  # the latest observation

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """A real reset the first time or with ``options={"scene": True}``; otherwise keep the scene."""
        options = dict(options or {})
        scene = bool(options.pop("scene", False)) or self._obs is None
        if scene:
            self._obs, info = self.env.reset(seed=seed, options=options or None)
            self.scene_resets += 1
        else:
            self.unwrapped._steps = 0  # CubeEnv's episode step counter: its time limit restarts here
            self.soft_resets += 1
            info = {"success": False}
        return self._obs, {**info, "scene_reset": scene}

    def step(self, action):
        if self._obs is None:
            raise RuntimeError("PersistentEnv: reset() before step()")
        self._obs, reward, terminated, truncated, info = self.env.step(action)
        return self._obs, reward, terminated, truncated, info
