"""``PickExpert``: a scripted grasp-and-lift for the native cube tasks (``lift``, ``lift_hard``, ``pick_either``).

Phases (a state machine on privileged cube and gripper state, proportional control in between, so
trajectories are smooth enough to imitate):

1. ``approach``: open, move above the target cube while turning the gripper to the cube's yaw;
2. ``descend``: go down until the grip site is at the cube centre;
3. ``close``: hold still and close the gripper for ``close_steps`` control steps;
4. ``lift``: raise the cube; if it slips out, start again from ``approach``.

On ``pick_either`` the target cube is drawn at random per episode (both modes ~50/50).
"""
from __future__ import annotations

import math

import mujoco
import numpy as np

_DOWN = np.diag([1.0, -1.0, -1.0])  # grip-site frame pointing down at zero yaw (world rotated pi about x)


class PickExpert:
    """Scripted expert for a ``CubeEnv`` (``armflow.sim.tasks.cube_env``)."""

    hover_m = 0.08  # approach height above the cube centre [m]
    lift_m = 0.12  # lift target above the resting height [m]
    pos_gain = 1.0  # fraction of the position error commanded per step
    max_speed = 0.7  # |position action| cap (0.7 * 5 cm = 3.5 cm per step)
    close_steps = 4  # control steps spent closing

    def __init__(self, env, noise_std: float = 0.0, seed: int | None = None):
        if noise_std < 0:
            raise ValueError(f"PickExpert: noise_std must be >= 0, got {noise_std}")
        self.env, self.noise_std = env, float(noise_std)
        self.rng = np.random.default_rng(seed)
        self.target = 0
        self.phase = "approach"
        self._count = 0
        self._grasp_pos = np.zeros(3)
        self._quat = np.zeros(4)
        self._rotvel = np.zeros(3)

    def reset(self) -> None:
        """Start a new episode: choose the target cube, go back to ``approach``."""
        self.target = int(self.rng.integers(self.env.n_cubes))
        self.phase, self._count = "approach", 0

    def __call__(self, obs=None) -> np.ndarray:
        """Action (7,) float32 in [-1, 1] for the env's current state (``obs`` is not needed)."""
        env = self.env
        cube = env.cube_pos(self.target)
        ee, _ = env.ee_pose()
        target_pos, grip = self._phase_target(cube, ee)
        dpos = self.pos_gain * (target_pos - ee) / env.cfg.max_dpos_m
        norm = float(np.linalg.norm(dpos))
        if norm > self.max_speed:
            dpos *= self.max_speed / norm
        drot = self._rotation_error(env.cube_yaw_rad(self.target)) / env.cfg.max_drot_rad
        action = np.concatenate((dpos, drot, [grip]))
        if self.noise_std > 0:
            action = action + self.rng.normal(0.0, self.noise_std, size=7)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    def _phase_target(self, cube: np.ndarray, ee: np.ndarray) -> tuple[np.ndarray, float]:
        """Advance the state machine; return (grip-site target [m], gripper command)."""
        env = self.env
        err_xy = float(np.linalg.norm(cube[:2] - ee[:2]))
        if self.phase == "approach":
            above = cube + (0.0, 0.0, self.hover_m)
            if err_xy < 0.012 and abs(above[2] - ee[2]) < 0.025:
                self.phase = "descend"
            return above, -1.0
        if self.phase == "descend":
            if err_xy > 0.03:
                self.phase = "approach"
            elif abs(cube[2] - ee[2]) < 0.008:
                self.phase, self._count, self._grasp_pos = "close", 0, cube.copy()
            return cube.copy(), -1.0
        if self.phase == "close":  # hold where the grasp started (the cube moves once touched)
            self._count += 1
            if self._count >= self.close_steps:
                self.phase = "lift"
            return self._grasp_pos.copy(), 1.0
        # lift: keep the grip; fall back to a new approach if the cube is lost
        if not env.grasped(self.target) and cube[2] < env.rest_height_m + 0.01 and ee[2] > cube[2] + 0.03:
            self.phase = "approach"
            return cube + (0.0, 0.0, self.hover_m), -1.0
        goal = np.array((self._grasp_pos[0], self._grasp_pos[1], env.rest_height_m + self.lift_m))
        return goal, 1.0

    def _rotation_error(self, cube_yaw_rad: float) -> np.ndarray:
        """World-frame axis-angle (3,) [rad] from the grip-site orientation to 'down, yawed like the cube'."""
        yaw = (cube_yaw_rad + math.pi / 4) % (math.pi / 2) - math.pi / 4  # cube symmetry: 90 deg
        c, s = math.cos(yaw), math.sin(yaw)
        desired = np.array(((c, -s, 0.0), (s, c, 0.0), (0.0, 0.0, 1.0))) @ _DOWN
        current = self.env.data.site_xmat[self.env.arm.site_id].reshape(3, 3)
        mujoco.mju_mat2Quat(self._quat, (desired @ current.T).reshape(-1))
        if self._quat[0] < 0:  # shortest rotation
            self._quat *= -1.0
        mujoco.mju_quat2Vel(self._rotvel, self._quat, 1.0)
        return self._rotvel.copy()
