"""``pick_either``: two identical cubes left and right of the gripper; lifting either one succeeds.

The demonstrations are bimodal (the scripted expert picks a cube at random each episode), so a
unimodal policy that averages the two modes reaches between the cubes and fails.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from armflow.sim.tasks.config import CubeTaskConfig, build_config
from armflow.sim.tasks.cube_env import CubeEnv


@dataclass(frozen=True)
class PickEitherConfig(CubeTaskConfig):
    """Defaults of ``pick_either`` (every field is documented on ``CubeTaskConfig``)."""

    cube_centers_xy_m: tuple = ((0.5, 0.12), (0.5, -0.12))
    cube_xy_range_m: tuple = (0.03, 0.03)
    cube_yaw_range_rad: float = 0.0


DEFAULT_MAX_EPISODE_STEPS = {"pick_either": PickEitherConfig.max_episode_steps}


def make_pick_either(render_mode: str | None = None, **overrides: Any) -> CubeEnv:
    """The ``pick_either`` env; ``overrides`` are ``PickEitherConfig`` fields (unknown keys raise TypeError)."""
    return CubeEnv(build_config(PickEitherConfig, overrides, "pick_either"), task_name="pick_either",
                   render_mode=render_mode)
