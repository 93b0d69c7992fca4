"""The shared config schema of the native cube tasks and the strict override check."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from armflow import configs
from armflow.sim.obs_layout import check_state_layout

C = TypeVar("C")


@dataclass(frozen=True)
class CubeTaskConfig:
    """Everything a native Panda cube task reads; each task file ships its own defaults."""

    max_episode_steps: int | None = 100  # time limit [control steps] -> ``truncated``; None: gym.make's TimeLimit
    ctrl_hz: float = 20.0  # control rate [Hz]; ctrl_dt = 1 / ctrl_hz
    sim_dt_s: float = 0.01  # physics timestep [s]; ctrl_dt must be a multiple of it (5 substeps at 20 Hz)
    cube_half_m: float = 0.02  # cube half edge [m]
    cube_centers_xy_m: tuple = ((0.5, 0.0),)  # nominal (x, y) of each cube [m]; len = number of cubes
    cube_xy_range_m: tuple = (0.08, 0.08)  # uniform placement noise +- (x, y) around each centre [m]
    cube_yaw_range_rad: float = 0.0  # uniform cube yaw +- [rad]
    init_qpos_noise_rad: float = 0.02  # uniform noise +- on the home joint angles at reset [rad]
    lift_height_m: float = 0.04  # success: grasped cube raised this far above its resting height [m]
    reach_weight: float = 1.0  # reward: reach = w * (1 - tanh(10 * |ee - cube|))
    grasp_weight: float = 0.5  # reward: grasp = w * [both finger pads touch the cube]
    lift_weight: float = 1.0  # reward: lift = w * grasped * clip(height / lift_height_m, 0, 1)
    success_bonus: float = 5.0  # reward: success = bonus on the success step
    terminate_on_success: bool = True  # False: success is reported (info) but does not end the episode (a
    # reward model's detection ends it instead: `armflow finetune reward=model reward_model.terminal=true`)
    max_dpos_m: float = 0.05  # action scale: position delta at |a| = 1 [m / step]
    max_drot_rad: float = 0.5  # action scale: rotation delta at |a| = 1 [rad / step]
    cube_orientation_obs: bool = True  # False: observation.environment_state leaves out the cube quaternions (6 per cube):
    # a policy whose demos only had flat, square cubes reads a turned cube as far out of distribution (armflow improve)
    cameras: tuple = ()  # camera names to add as observation.images.<cam>: agentview, wrist, topview
    image_size: int = 84  # rendered images are image_size x image_size
    state_layout: str = "split"  # split: proprio in observation.state, cubes in observation.environment_state;
    # combined: both in one observation.state, the layout before the split (old checkpoints; sim/obs_layout.py)


def build_config(cls: type[C], overrides: dict[str, Any], where: str) -> C:
    """``armflow.configs.build_config`` (unknown keys raise ``ConfigError``) plus the task checks below."""
    if isinstance(overrides.get("cameras"), str):  # cameras=agentview on a command line
        overrides = {**overrides, "cameras": (overrides["cameras"],)}
    cfg = configs.build_config(cls, overrides, where)
    _validate(cfg, where)
    return cfg


def _validate(cfg: CubeTaskConfig, where: str) -> None:
    check_state_layout(cfg.state_layout, where)
    if not cfg.cube_orientation_obs and cfg.state_layout == "combined":
        raise ValueError(f"{where}: cube_orientation_obs=false needs state_layout=split (the combined layout is fixed)")
    substeps = (1.0 / cfg.ctrl_hz) / cfg.sim_dt_s
    if abs(substeps - round(substeps)) > 1e-6 or round(substeps) < 1:
        raise ValueError(f"{where}: 1/ctrl_hz={1 / cfg.ctrl_hz} s is not a multiple of sim_dt_s={cfg.sim_dt_s}")
    if not cfg.cube_centers_xy_m or any(len(c) != 2 for c in cfg.cube_centers_xy_m):
        raise ValueError(f"{where}: cube_centers_xy_m must be a non-empty list of (x, y); got {cfg.cube_centers_xy_m}")
    if len(cfg.cube_xy_range_m) != 2:
        raise ValueError(f"{where}: cube_xy_range_m must be (x, y); got {cfg.cube_xy_range_m}")
    if (cfg.max_episode_steps is not None and cfg.max_episode_steps < 1) or cfg.image_size < 8:
        raise ValueError(f"{where}: need max_episode_steps >= 1 (or None) and image_size >= 8; got "
                         f"{cfg.max_episode_steps}, {cfg.image_size}")
