"""A ``Driver`` that wraps a native armflow sim task (``armflow.sim.make_env(task)``), for deploy/teleop tests.

One ``command("ee_delta", a6, gripper)`` is exactly one ``env.step`` with the 7-D action
``[a6 clipped to [-1, 1], 2 * gripper - 1]`` (the env's -1 open .. +1 closed convention, from the
driver's 0 open .. 1 closed), so a policy deployed through the bridge sees the same dynamics as in
direct evaluation. ``native_rate_hz = 1 / env.ctrl_dt``. ``read_state().extras`` carries the task
observation and the episode flags: ``observation.state``, ``observation.images.<cam>``, ``success``,
``terminated``, ``truncated``, ``reward``, ``episode_step``, and ``scene_resets`` (int: ``env.reset`` calls
since connect, the connect's own included). On the native cube tasks it also carries privileged audit flags
of the current sim state, for a reset-free improvement loop to audit its learned success detector and count
resets (never a reward): ``success.lift`` (bool, ``armflow.sim.tasks.place.lifted``: lift's success
predicate), ``success.place`` (bool, ``placed``: some cube set down in its region and let go) and
``in_workspace`` (bool, every cube inside ``armflow.sim.persistent.in_workspace``'s box).

Persistent stream (reset-free improvement: one scene, the arm keeps moving after a success)::

    armflow serve robot=sim_panda task=lift mode=lockstep +robot_options.persistent=true

``persistent=true`` switches the env's time limit off and publishes ``success`` / ``terminated`` /
``truncated`` as False: lockstep serving ends an episode on any of them (``ServoLoop._end_episode_if_done``
drops every queued waypoint after each step while one holds, so a chunk would run one step), and the
skills' predicates stay readable as ``success.lift`` / ``success.place``. The time limit alone is
``+robot_options.env={max_episode_steps:null}`` (``robot_options.env`` reaches ``SimTaskConfig.env``); with
it alone the env never truncates but a lockstep server still stops each chunk once lift succeeds.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import mujoco
import numpy as np

from armflow.hardware.driver import Driver, DriverError, MotionLimits, RobotInfo, RobotState
from armflow.hardware.sim_contact import body_ids_matching, ee_contact_force_n
from armflow.hardware.sim_scene import subtree_body_ids
from armflow.sim.persistent import in_workspace
from armflow.sim.tasks.cube_env import CubeEnv
from armflow.sim.tasks.place import lifted, placed

TASK_MODES = ("ee_delta",)
PANDA_VEL_MAX_RAD_S = (2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61)
FINGER_OPENING_MAX_M = 0.08  # the native Panda's finger opening when fully open [m]
# The env's OSC re-anchors its goal at the measured pose every step and its servos realise about half
# of the step per control period (sim/arm.py). Measured on lift (steps of +-1 and reversals): 0.50-0.55
# of max_dpos_m per step in translation, 0.54-0.68 of max_drot_rad in rotation. These bounds make the
# Cartesian speed the safety layer predicts an upper bound on the speed the arm reaches.
OSC_TRACKING = (0.6, 0.7)  # (translation, rotation)


@dataclass(frozen=True)
class SimTaskConfig:
    task: str = "lift"  # a name in armflow.sim.ENVS with the 7-D ee-delta action
    seed: int = 0  # seed of the first reset (connect); later resets take theirs from reset(seed)
    cameras: tuple[str, ...] = ()  # env cameras to render into extras
    env: dict = field(default_factory=dict)  # further env config overrides (unknown keys raise in sim)
    persistent: bool = False  # reset-free stream: no time limit, episode flags always False (module docstring)


class SimTaskDriver(Driver):
    def __init__(self, cfg: SimTaskConfig = SimTaskConfig()):
        from armflow.sim import make_env

        self.cfg = cfg
        overrides = dict(cfg.env)
        if cfg.cameras:
            overrides["cameras"] = tuple(cfg.cameras)
        if cfg.persistent:
            if overrides.get("max_episode_steps") is not None:
                raise ValueError(f"sim task driver: persistent=true has no time limit; drop env.max_episode_steps="
                                 f"{overrides['max_episode_steps']}")
            overrides["max_episode_steps"] = None
        self.env = make_env(cfg.task, **overrides)
        if tuple(self.env.action_space.shape) != (7,):
            raise ValueError(f"sim task driver: task {cfg.task!r} has action shape {self.env.action_space.shape}; "
                             "expected the 7-D ee-delta + gripper action")
        model = self.env.model
        has_hand = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "hand") >= 0
        self._ee_bodies = (subtree_body_ids(model, "hand") if has_hand
                           else body_ids_matching(model, ("hand", "finger", "gripper")))
        self._dof = len(self.env.joint_pos())
        jids = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, n) for n in self.env.joint_names]
        self._qmin = tuple(float(model.jnt_range[j, 0]) for j in jids)
        self._qmax = tuple(float(model.jnt_range[j, 1]) for j in jids)
        self._dof_idx = np.array([model.jnt_dofadr[j] for j in jids])
        self._connected = self._stopped = False
        self._grip = 0.0
        self._obs: dict = {}
        self._flags = {"success": False, "terminated": False, "truncated": False, "reward": 0.0}
        self._steps = 0
        self._scene_resets = 0  # env.reset calls since connect
        self._last_step: tuple = ({}, 0.0, False, False, {"success": False})  # the last env.step's return

    def info(self) -> RobotInfo:
        return RobotInfo(
            name=f"sim_task_{self.cfg.task}", dof=self._dof, joint_names=tuple(self.env.joint_names),
            joint_pos_min_rad=self._qmin, joint_pos_max_rad=self._qmax,
            joint_vel_max_rad_s=PANDA_VEL_MAX_RAD_S[: self._dof], native_rate_hz=1.0 / self.env.ctrl_dt,
            modes=TASK_MODES, is_sim=True, has_gripper=True,
            ee_delta_m_per_unit=float(self.env.cfg.max_dpos_m), ee_delta_rad_per_unit=float(self.env.cfg.max_drot_rad),
            ee_delta_anchor="measured", ee_delta_tracking=OSC_TRACKING,
        )

    def set_motion_limits(self, limits: MotionLimits) -> None:
        """The env's IK clips its joint targets to the margins instead of the hard limits. Its per-step
        joint target change stays the env's own (``ArmControlConfig.max_dq_rad``): changing it would change
        the dynamics a policy was trained and evaluated on; the box and the EE speeds are enforced by the
        safety layer on the ee_delta it sends (``RobotInfo.ee_delta_*``). The joint speeds this env reaches
        (0.594 vmax under the scripted expert) are stated by ``configs/safety_limits/sim_task_lift.yaml``."""
        self.env.arm.q_low = np.maximum(self.env.arm.q_low, limits.q_min_rad)
        self.env.arm.q_high = np.minimum(self.env.arm.q_high, limits.q_max_rad)

    def connect(self) -> None:
        if not self._connected:
            self._connected, self._scene_resets = True, 0
            self.reset(self.cfg.seed)

    def close(self) -> None:
        self._connected = False
        self.env.close()

    def reset(self, seed: int | None = None) -> RobotState:
        """Sim only: a new episode (``env.reset(seed=seed)``); returns its first state."""
        self._require_connected()
        self._obs, _ = self.env.reset(seed=seed)
        self._scene_resets += 1
        self._flags = {"success": False, "terminated": False, "truncated": False, "reward": 0.0}
        self._steps, self._grip, self._stopped = 0, 0.0, False
        return self.read_state()

    def read_state(self) -> RobotState:
        self._require_connected()
        pos, quat = self.env.ee_pose()
        opening = float(self.env.gripper_opening_m())
        extras = {key: np.array(value, copy=True) for key, value in self._obs.items()}
        extras.update(self._flags, episode_step=self._steps, scene_resets=self._scene_resets)
        extras.update(self._audit_flags())
        return RobotState(
            t_capture_ns=time.monotonic_ns(),
            joint_pos_rad=np.asarray(self.env.joint_pos(), float).copy(),
            joint_vel_rad_s=self.env.data.qvel[self._dof_idx].copy(),
            ee_pos_m=np.asarray(pos, float).copy(), ee_quat_wxyz=np.asarray(quat, float).copy(),
            gripper=float(np.clip(1.0 - opening / FINGER_OPENING_MAX_M, 0.0, 1.0)),
            ee_force_n=ee_contact_force_n(self.env.model, self.env.data, self._ee_bodies), extras=extras,
        )

    def _audit_flags(self) -> dict[str, bool]:
        """Privileged success predicates of the current sim state (module docstring); none off the cube tasks."""
        env = self.env
        if not isinstance(env, CubeEnv):
            return {}
        cubes = range(env.n_cubes)
        return {"success.lift": lifted(env), "success.place": any(placed(env, i) for i in cubes),
                "in_workspace": all(in_workspace(env, i) for i in cubes)}

    def command(self, mode: str, setpoint: np.ndarray, gripper: float | None = None) -> np.ndarray:
        self._require_connected()
        if self._stopped:
            raise DriverError(f"{self.info().name}: stopped; call recover() first")
        if mode not in TASK_MODES:
            raise ValueError(f"{self.info().name}: unknown mode {mode!r}; valid modes: {', '.join(TASK_MODES)}")
        x = np.asarray(setpoint, dtype=float).reshape(-1)
        if x.shape != (6,) or not np.all(np.isfinite(x)):
            raise ValueError(f"{self.info().name}: ee_delta setpoint must be finite (6,) in [-1, 1], got {x}")
        sent = np.clip(x, -1.0, 1.0)
        if gripper is not None:
            self._grip = float(np.clip(gripper, 0.0, 1.0))
        action = np.concatenate([sent, [2.0 * self._grip - 1.0]]).astype(np.float32)
        self._last_step = self.env.step(action)
        self._obs, reward, terminated, truncated, info = self._last_step
        self._steps += 1
        ends = not self.cfg.persistent  # a persistent stream never ends an episode (module docstring)
        self._flags = {"success": ends and bool(info["success"]), "terminated": ends and bool(terminated),
                       "truncated": ends and bool(truncated), "reward": float(reward)}
        return sent

    def last_obs(self) -> dict:
        """The task observation of the current state (the env's own arrays, as its reset / step returned them)."""
        self._require_connected()
        return self._obs

    def last_step(self) -> tuple:
        """The last ``command``'s ``env.step`` return ``(obs, reward, terminated, truncated, info)`` as the env gave
        it (``armflow.control.sim_limits`` runs evaluation through this driver and returns it unchanged)."""
        self._require_connected()
        return self._last_step

    def hold(self) -> None:
        """Nothing to do: the env's servos keep their last targets until the next step."""
        self._require_connected()

    def stop(self) -> None:
        self._require_connected()
        self._stopped = True

    def recover(self) -> None:
        self._require_connected()
        self._stopped = False

    def _require_connected(self) -> None:
        if not self._connected:
            raise DriverError(f"sim_task_{self.cfg.task}: not connected; call connect() first")
