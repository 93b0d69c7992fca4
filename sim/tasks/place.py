"""``place``: put a held cube down somewhere new in ``lift``'s region: the reset skill of reset-free improvement.

Same scene, placement region and observation layout as ``lift`` (one recorder and one bridge serve both).
``reset(seed)`` starts (with probability ``held_start_prob``, default 1; otherwise from lift's own start) from the
state a successful ``lift`` leaves: it resets the ``lift`` scene with
``seed`` and steps the scripted ``PickExpert`` (privileged, sim-only) until ``lifted`` first holds, so the
cube is grasped and held just above its random start spot (raised a further ``held_extra_lift_m`` draw, as high
as a learned lift leaves it); the episode step count then restarts at 0. Lift's start can be spread wider and
turned (``table_start_xy_m``, ``table_start_yaw_rad``): where failed forward attempts push the cube.
Deterministic given ``seed`` (MuJoCo is deterministic; the pick has no noise). ~20 ms per reset.

Success (``terminated``) = ``placed(env)`` AND the cube's xy moved >= ``min_move_m`` from where the
episode started (``env.start_xy_m``), so the forward skill gets a new in-distribution start.

``placed(env, i)`` is a plain predicate on sim state, reused by the bridge's sim driver as the privileged
audit flag ``success.place``: cube ``i`` rests on the table (centre z within ``REST_TOL_M`` of its rest
height, not grasped, linear speed < ``STILL_MPS``), its xy inside the task's placement region
(``cube_centers_xy_m[i] +- cube_xy_range_m``: lift's +-8 cm box around (0.5, 0)), the gripper open
(opening > ``OPEN_MIN_M``) and the grip site >= ``CLEARANCE_M`` above the cube centre.
``lifted(env)`` is lift's success predicate (some cube grasped and raised ``lift_height_m``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from armflow.sim.tasks.config import build_config
from armflow.sim.tasks.cube_env import CubeEnv
from armflow.sim.tasks.lift import LiftConfig

REST_TOL_M = 0.005  # placed: |cube z - rest height| below this [m]
STILL_MPS = 0.02  # placed: cube linear speed below this [m/s]
OPEN_MIN_M = 0.06  # placed: gripper opening above this [m] (fully open ~0.08)
CLEARANCE_M = 0.06  # placed: grip site at least this far above the cube centre [m]
PICK_MAX_STEPS = 300  # reset: control steps allowed for the scripted pick before redrawing the scene


@dataclass(frozen=True)
class PlaceConfig(LiftConfig):
    """Defaults of ``place``: lift's scene plus the place terms (other fields: ``CubeTaskConfig``)."""

    max_episode_steps: int | None = 50  # the noise-free PlaceExpert needs 19-25 steps (x2: room for a learned policy)
    min_move_m: float = 0.04  # success: cube xy moved at least this far from the episode start [m]
    held_start_prob: float = 1.0  # P(start with the cube held, as lift leaves it); else lift's start (cube on the
    # table, arm at home): the reset skill also fetches a cube a failed forward attempt left on the table
    table_start_xy_m: tuple | None = None  # lift's start only: the cube's xy drawn in its centre +- this [m] (wider
    # than the placement region: a failed forward attempt pushes the cube out of it, and the reset skill must fetch
    # it back from there); None: lift's own placement
    table_start_yaw_rad: float = 0.0  # lift's start only: cube yaw drawn in +- this [rad] (failed grasps turn it)
    held_extra_lift_m: tuple = (0.0, 0.0)  # held start: after the pick, the cube raised a further U(lo, hi) [m] (the
    # forward policy lifts it 3-8 cm higher than the pick leaves it; a reset skill that never saw that dropped it)
    move_weight: float = 1.0  # reward: move = w * clip(|cube xy - start xy| / min_move_m, 0, 1)
    lower_weight: float = 1.0  # reward: lower = w * move * (1 - tanh(20 * max(cube z - rest z, 0)))
    release_weight: float = 0.5  # reward: release = w * move * [cube on the table, not grasped, gripper open]


DEFAULT_MAX_EPISODE_STEPS = {"place": PlaceConfig.max_episode_steps}


def lifted(env: CubeEnv) -> bool:
    """``lift``'s success predicate: some cube is grasped and raised ``lift_height_m`` above its rest height."""
    return any(env.grasped(i) and env.cube_pos(i)[2] - env.rest_height_m > env.cfg.lift_height_m
               for i in range(env.n_cubes))


def in_region(env: CubeEnv, xy_m: np.ndarray, i: int = 0, shrink_m: float = 0.0) -> bool:
    """``xy_m`` (2,) [m] lies in cube ``i``'s placement region (``cube_centers_xy_m[i] +- cube_xy_range_m``),
    shrunk by ``shrink_m`` on every side."""
    offset = np.abs(np.asarray(xy_m, float) - np.asarray(env.cfg.cube_centers_xy_m[i], float))
    return bool(np.all(offset <= np.asarray(env.cfg.cube_xy_range_m, float) - shrink_m))


def cube_speed_mps(env: CubeEnv, i: int = 0) -> float:
    """Cube ``i``'s linear speed [m/s] (its free joint's first three dofs: world-frame velocity)."""
    dof = env.model.jnt_dofadr[env.model.jnt(f"cube{i}_joint").id]
    return float(np.linalg.norm(env.data.qvel[dof : dof + 3]))


def placed(env: CubeEnv, i: int = 0) -> bool:
    """Cube ``i`` set down in its placement region and let go (thresholds in the module docstring)."""
    cube = env.cube_pos(i)
    ee, _ = env.ee_pose()
    return (abs(cube[2] - env.rest_height_m) < REST_TOL_M and not env.grasped(i)
            and env.gripper_opening_m() > OPEN_MIN_M and ee[2] - cube[2] >= CLEARANCE_M
            and in_region(env, cube[:2], i) and cube_speed_mps(env, i) < STILL_MPS)


class PlaceEnv(CubeEnv):
    """``CubeEnv`` on lift's scene that starts with the cube held (see module docstring)."""

    def __init__(self, cfg: PlaceConfig, render_mode: str | None = None):
        if len(cfg.cube_centers_xy_m) != 1:
            raise ValueError(f"place: needs exactly one cube, got cube_centers_xy_m={cfg.cube_centers_xy_m}")
        wide = cfg.table_start_xy_m
        if len(cfg.held_extra_lift_m) != 2 or not 0 <= cfg.held_extra_lift_m[0] <= cfg.held_extra_lift_m[1]:
            raise ValueError(f"place: held_extra_lift_m must be (lo, hi) with 0 <= lo <= hi [m], got "
                             f"{cfg.held_extra_lift_m}")
        if wide is not None and (len(wide) != 2 or min(wide) < 0):
            raise ValueError(f"place: table_start_xy_m must be null or (x, y) >= 0 [m], got {wide}")
        if cfg.min_move_m < 0 or not 0.0 <= cfg.held_start_prob <= 1.0:
            raise ValueError(f"place: need min_move_m >= 0 and held_start_prob in [0, 1], got {cfg.min_move_m}, "
                             f"{cfg.held_start_prob}")
        super().__init__(cfg, task_name="place", render_mode=render_mode)
        self.start_xy_m = np.zeros(2)  # cube xy when the episode started [m]

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        from armflow.sim.experts.pick import PickExpert  # sim-only privileged setup; experts import tasks

        super().reset(seed=seed, options=options)
        if self.cfg.held_start_prob < 1.0 and self.np_random.random() >= self.cfg.held_start_prob:  # lift's start: the cube where lift put it
            self._spread_cube()
            self.start_xy_m = self.cube_pos(0)[:2].copy()
            return self._obs(), {"success": False}
        pick = PickExpert(self, noise_std=0.0, seed=0)
        while True:
            pick.reset()
            for _ in range(PICK_MAX_STEPS):
                CubeEnv.step(self, pick())
                if lifted(self):
                    self._raise_held()
                    self._steps = 0
                    self.start_xy_m = self.cube_pos(0)[:2].copy()
                    return self._obs(), {"success": False}
            super().reset(options=options)  # the pick failed: redraw the scene from the seeded rng

    def _raise_held(self, max_steps: int = 40) -> None:
        """Raise the held cube a further ``held_extra_lift_m`` draw (straight up, gripper closed)."""
        lo, hi = (float(v) for v in self.cfg.held_extra_lift_m)
        if hi <= 0:
            return
        goal_z = self.cube_pos(0)[2] + self.np_random.uniform(lo, hi)
        up = np.array([0.0, 0.0, 0.5, 0.0, 0.0, 0.0, 1.0])
        for _ in range(max_steps):
            if self.cube_pos(0)[2] >= goal_z:
                break
            CubeEnv.step(self, up)

    def _spread_cube(self) -> None:
        """Lift's start with the cube moved to ``table_start_xy_m`` / ``table_start_yaw_rad`` (when set)."""
        import mujoco

        cfg, rng = self.cfg, self.np_random
        if cfg.table_start_xy_m is None and cfg.table_start_yaw_rad <= 0:
            return
        half = np.asarray(cfg.cube_xy_range_m if cfg.table_start_xy_m is None else cfg.table_start_xy_m, float)
        xy = np.asarray(cfg.cube_centers_xy_m[0], float) + rng.uniform(-half, half)
        yaw = rng.uniform(-cfg.table_start_yaw_rad, cfg.table_start_yaw_rad) if cfg.table_start_yaw_rad > 0 else 0.0
        a = self._cube_qpos[0]
        self._data.qpos[a : a + 3] = (xy[0], xy[1], self.rest_height_m)
        self._data.qpos[a + 3 : a + 7] = (np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2))
        mujoco.mj_forward(self.model, self._data)

    def _reward_terms(self, state: list[float]) -> tuple[dict[str, float], bool, int]:
        """Shaped terms: move the cube away from its start, lower it, let go; success = placed and moved."""
        cfg = self.cfg
        cube = state[self.proprio_dim : self.proprio_dim + 3]
        moved_m = math.dist(cube[:2], self.start_xy_m)
        move = min(moved_m / cfg.min_move_m, 1.0) if cfg.min_move_m > 0 else 1.0
        height_m = max(cube[2] - self.rest_height_m, 0.0)
        released = height_m < REST_TOL_M and state[7] > OPEN_MIN_M and not self.grasped(0)
        success = moved_m >= cfg.min_move_m and placed(self)
        terms = {
            "move": cfg.move_weight * move,
            "lower": cfg.lower_weight * move * (1.0 - math.tanh(20.0 * height_m)),
            "release": cfg.release_weight * move * float(released),
            "success": cfg.success_bonus * float(success),
        }
        return terms, success, 0


def make_place(render_mode: str | None = None, **overrides: Any) -> PlaceEnv:
    """The ``place`` env; ``overrides`` are ``PlaceConfig`` fields (unknown keys raise ConfigError)."""
    return PlaceEnv(build_config(PlaceConfig, overrides, "place"), render_mode=render_mode)
