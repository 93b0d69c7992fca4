"""``lift`` and ``lift_hard``: pick up one cube from a randomised spot on the table.

``lift`` places the cube within +-8 cm of (0.5, 0) m with no yaw. ``lift_hard`` is the same task
from a wider spread (+-12 cm, 2.25x the area): a policy imitating a few ``lift`` demos covers only
part of it, which makes it the starting point for RL fine-tuning. Calibration probe (an MLP
behaviour-cloned on 20 ``lift`` demos at expert noise 0.1, 40 seeded episodes): 68% on ``lift``,
32% on ``lift_hard``; adding a +-0.5 rad random yaw (``cube_yaw_range_rad=0.5``) drops it to 5%.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from armflow.sim.tasks.config import CubeTaskConfig, build_config
from armflow.sim.tasks.cube_env import CubeEnv


@dataclass(frozen=True)
class LiftConfig(CubeTaskConfig):
    """Defaults of ``lift`` (every field is documented on ``CubeTaskConfig``)."""

    cube_centers_xy_m: tuple = ((0.5, 0.0),)
    cube_xy_range_m: tuple = (0.08, 0.08)
    cube_yaw_range_rad: float = 0.0


@dataclass(frozen=True)
class LiftHardConfig(CubeTaskConfig):
    """Defaults of ``lift_hard``: wider placement (yaw available as an override)."""

    cube_centers_xy_m: tuple = ((0.5, 0.0),)
    cube_xy_range_m: tuple = (0.12, 0.12)
    cube_yaw_range_rad: float = 0.0


DEFAULT_MAX_EPISODE_STEPS = {"lift": LiftConfig.max_episode_steps, "lift_hard": LiftHardConfig.max_episode_steps}


def make_lift(render_mode: str | None = None, **overrides: Any) -> CubeEnv:
    """The ``lift`` env; ``overrides`` are ``LiftConfig`` fields (unknown keys raise TypeError)."""
    return CubeEnv(build_config(LiftConfig, overrides, "lift"), task_name="lift", render_mode=render_mode)


def make_lift_hard(render_mode: str | None = None, **overrides: Any) -> CubeEnv:
    """The ``lift_hard`` env; ``overrides`` are ``LiftHardConfig`` fields (unknown keys raise TypeError)."""
    return CubeEnv(build_config(LiftHardConfig, overrides, "lift_hard"), task_name="lift_hard",
                   render_mode=render_mode)
