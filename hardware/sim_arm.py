"""The MuJoCo sim arm behind the ``Driver`` interface (Panda, UR5e, xArm7 kinematics from robosuite's MJCF).

Modes and setpoints (one ``command`` = one servo tick of ``1 / rate_hz`` seconds):

- ``joint_pos`` (dof,) [rad]: position-servo targets, clipped to the joint limits.
- ``joint_vel`` (dof,) [rad/s]: clipped to the velocity limits, integrated into the servo target.
- ``ee_pose`` (7,) position [m] + quaternion (w, x, y, z) in the base frame: differential IK.
- ``ee_delta`` (6,) position step [m] + rotation-vector step [rad], applied to the last EE target;
  clipped per tick to ``ee_delta_max_m`` / ``ee_delta_max_rad`` (RobotInfo: 1 m / 1 rad per unit,
  anchored on the target).
- ``set_motion_limits`` (the servo passes the safety layer's limits) bounds every joint target this
  driver makes itself: the integrated joint_vel target, and the IK steps of the Cartesian modes, which go
  through the layer's own joint-step limiter (``driver.limit_joint_step``: joint margins, speeds and
  acceleration, EE speeds, the box on the EE, the gripper's corners (``RobotInfo.ee_points_m``) and the
  spheres around the arm's links (``RobotInfo.link_radii_m``, ``hardware.link_spheres``)); an IK
  chasing an unreachable or lagging target must not swing the arm faster, or out of the box, issue 10.
  With them set, the servos also get the targets' feed-forward (``_feed_forward``), so the arm reaches what
  it is sent: measured states stay within the limits, not only the targets. ``forward_pose`` gives the
  safety layer the EE pose of a q, ``forward_link_points`` the link spheres' centres.
- gripper: 0 open .. 1 closed.

``realtime=False`` (lockstep): each ``command`` advances sim time by exactly one tick, deterministic.
``realtime=True``: sim time follows the wall clock; every call first steps physics up to "now".
Latency, jitter and drops go through ``CommandLink`` (in sim time).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import mujoco
import numpy as np

from armflow.hardware.driver import Driver, DriverError, MotionLimits, RobotInfo, RobotState, limit_joint_step
from armflow.hardware.kinematics import SiteIK, mat_to_quat, quat_mul, quat_normalize, rotvec_to_quat
from armflow.hardware.link import CommandLink, LinkConfig
from armflow.hardware.link_spheres import fit_link_spheres, gripper_corners
from armflow.hardware.real_common import clip_velocity
from armflow.hardware.sim_contact import ee_contact_force_n
from armflow.hardware.sim_scene import (ARMS, EE_SITE, FINGER_TRAVEL_M, GRIPPER_BODIES, HAND_BODY,
                                        arm_joint_names, build_arm_model, subtree_body_ids)

SIM_MODES = ("joint_pos", "joint_vel", "ee_pose", "ee_delta")
SETPOINT_DIM = {"ee_pose": 7, "ee_delta": 6}


@dataclass(frozen=True)
class SimArmConfig:
    arm: str = "panda"  # key of sim_scene.ARMS
    rate_hz: float = 500.0  # servo tick rate [Hz]
    timestep_s: float = 0.002  # physics step [s]; a tick is rate_hz**-1 / timestep_s physics steps
    realtime: bool = False
    latency_s: float = 0.0
    jitter_s: float = 0.0
    drop_prob: float = 0.0
    seed: int = 0
    ee_delta_max_m: float = 0.01  # largest ee_delta translation per tick [m]
    ee_delta_max_rad: float = 0.05  # largest ee_delta rotation per tick [rad]
    max_catchup_ticks: int = 200  # realtime mode: ticks simulated per call at most (then time is skipped)
    cameras: tuple[str, ...] = ()  # cameras rendered into state.extras["observation.images.<cam>"]
    image_size_px: tuple[int, int] = (128, 128)  # (width, height)


class SimArmDriver(Driver):
    def __init__(self, cfg: SimArmConfig = SimArmConfig()):
        if cfg.arm not in ARMS:
            raise KeyError(f"unknown sim arm {cfg.arm!r}; valid arms: {', '.join(ARMS)}")
        self.cfg = cfg
        self.model = build_arm_model(cfg.arm, cfg.timestep_s, tuple(cfg.image_size_px))
        self.data = mujoco.MjData(self.model)
        self._spec = ARMS[cfg.arm]
        self.dof = len(self._spec.home_rad)
        self._substeps = max(1, round(1.0 / (cfg.rate_hz * cfg.timestep_s)))
        self.tick_s = self._substeps * cfg.timestep_s
        self._names = arm_joint_names(self.model)
        self._vmax = np.asarray(self._spec.joint_vel_max_rad_s)
        self._qmin = self.model.jnt_range[: self.dof, 0].copy()
        self._qmax = self.model.jnt_range[: self.dof, 1].copy()
        self._q_lo, self._q_hi, self._qd_lim = self._qmin.copy(), self._qmax.copy(), self._vmax.copy()
        self._motion: MotionLimits | None = None
        self._ik = SiteIK(self.model, EE_SITE, self.dof, np.asarray(self._spec.home_rad))
        self._site = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_SITE, EE_SITE)
        self._ee_bodies = subtree_body_ids(self.model, HAND_BODY)
        gripper = [mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, b) for b in GRIPPER_BODIES]
        self._ee_points = gripper_corners(self.model, self._site, gripper, np.asarray(self._spec.home_rad))
        # the links from the second joint on (the first only spins about the base's vertical axis); the gripper
        # (box geoms) is covered by its corners
        arm_bodies = [int(b) for b in subtree_body_ids(self.model, mujoco.mj_id2name(
            self.model, mujoco.mjtObj.mjOBJ_BODY, int(self.model.jnt_bodyid[1])))]
        self._links = fit_link_spheres(self.model, arm_bodies)
        self._link = CommandLink(LinkConfig(cfg.latency_s, cfg.jitter_s, cfg.drop_prob, cfg.seed))
        self._renderer = None
        self._connected = False
        self._stopped = False
        self._wall_t0_s = 0.0
        self._q_cmd = np.asarray(self._spec.home_rad, float)
        self._qd_cmd = np.zeros(self.dof)  # velocity of the joint targets over the last tick [rad/s]
        self._qdd_cmd = np.zeros(self.dof)  # and its change [rad/s^2] (the servo's feed-forward)
        self._kp = self.model.actuator_gainprm[: self.dof, 0].copy()  # servo stiffness [N m / rad]
        self._kv = -self.model.actuator_biasprm[: self.dof, 2].copy()  # servo damping [N m s / rad]
        self._grip_cmd = 0.0
        self._ee_target: tuple[np.ndarray, np.ndarray] | None = None
        self.reset()

    # -- Driver interface -------------------------------------------------------------------------
    def info(self) -> RobotInfo:
        return RobotInfo(
            name=f"sim_{self.cfg.arm}", dof=self.dof, joint_names=self._names,
            joint_pos_min_rad=tuple(self._qmin), joint_pos_max_rad=tuple(self._qmax),
            joint_vel_max_rad_s=tuple(self._vmax), native_rate_hz=1.0 / self.tick_s,
            modes=SIM_MODES, is_sim=True, has_gripper=True, ee_points_m=self._ee_points,
            link_radii_m=tuple(round(float(r), 4) for r in self._links.radii_m),
        )

    def set_motion_limits(self, limits: MotionLimits) -> None:
        self._motion = limits
        self._q_lo = np.maximum(self._qmin, limits.q_min_rad)
        self._q_hi = np.minimum(self._qmax, limits.q_max_rad)
        self._qd_lim = np.minimum(self._vmax, limits.qd_max_rad_s)

    def forward_pose(self, q_rad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """EE site position [m] and quaternion (w, x, y, z) in the base frame at ``q_rad`` (for the safety layer)."""
        return self._ik.forward(np.asarray(q_rad, float))

    def forward_link_points(self, q_rad: np.ndarray) -> np.ndarray:
        """Centres (L, 3) [m] of the link spheres (``RobotInfo.link_radii_m``) in the base frame at ``q_rad``;
        reuses the kinematics of the last ``forward_pose`` when it was at the same ``q_rad`` (the joint-step
        limiter asks for both at every pose it checks)."""
        q = np.asarray(q_rad, float)
        data = self._ik.data
        if not np.array_equal(data.qpos[: self.dof], q):
            data.qpos[: self.dof] = q
            mujoco.mj_kinematics(self.model, data)
        return self._links.centres(data)

    def connect(self) -> None:
        self._connected = True
        self._wall_t0_s = time.monotonic() - self.data.time

    def close(self) -> None:
        self._connected = False
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def reset(self, seed: int | None = None) -> RobotState | None:
        """Sim only: arm back at home, gripper open, queue emptied; returns the first state when connected."""
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[: self.dof] = self._spec.home_rad
        self._q_cmd = np.asarray(self._spec.home_rad, float).copy()
        self._qd_cmd, self._qdd_cmd = np.zeros(self.dof), np.zeros(self.dof)
        self._grip_cmd, self._ee_target, self._stopped = 0.0, None, False
        self._link.clear()
        self._write_ctrl()
        mujoco.mj_forward(self.model, self.data)
        self._wall_t0_s = time.monotonic()
        return self.read_state() if self._connected else None

    def read_state(self) -> RobotState:
        self._require_connected()
        if self.cfg.realtime:
            self._catch_up()
        d = self.data
        extras = {"sim_time_s": float(d.time), "commands_dropped": self._link.n_dropped}
        for cam in self.cfg.cameras:
            extras[f"observation.images.{cam}"] = self.render(cam)
        return RobotState(
            t_capture_ns=time.monotonic_ns(),
            joint_pos_rad=d.qpos[: self.dof].copy(), joint_vel_rad_s=d.qvel[: self.dof].copy(),
            ee_pos_m=d.site_xpos[self._site].copy(), ee_quat_wxyz=mat_to_quat(d.site_xmat[self._site]),
            gripper=float(np.clip(d.qpos[self.dof : self.dof + 2].mean() / FINGER_TRAVEL_M, 0.0, 1.0)),
            ee_force_n=ee_contact_force_n(self.model, d, self._ee_bodies), extras=extras,
        )

    def command(self, mode: str, setpoint: np.ndarray, gripper: float | None = None) -> np.ndarray:
        self._require_connected()
        if self._stopped:
            raise DriverError(f"{self.info().name}: stopped (protective stop); call recover() first")
        sent = self._clip(mode, self._validate(mode, setpoint))
        grip = None if gripper is None else float(np.clip(gripper, 0.0, 1.0))
        self._link.send(self.data.time, (mode, sent.copy(), grip))
        if self.cfg.realtime:
            self._catch_up()
        else:
            self._tick()
        return sent

    def idle(self, n_ticks: int = 1) -> None:
        """Sim only (lockstep): advance ``n_ticks`` servo ticks with no new command (servos keep their targets)."""
        self._require_connected()
        for _ in range(n_ticks):
            self._tick()

    def hold(self) -> None:
        self._require_connected()
        self._link.clear()
        self._q_cmd = self.data.qpos[: self.dof].copy()
        self._qd_cmd, self._qdd_cmd = np.zeros(self.dof), np.zeros(self.dof)
        self._ee_target = None
        self._write_ctrl()

    def stop(self) -> None:
        self.hold()
        self.data.qvel[: self.dof] = 0.0  # a protective stop brakes hard; the servo then holds
        self._stopped = True

    def recover(self) -> None:
        self._require_connected()
        self._stopped = False
        self.hold()

    # -- internals --------------------------------------------------------------------------------
    def _require_connected(self) -> None:
        if not self._connected:
            raise DriverError(f"sim_{self.cfg.arm}: not connected; call connect() first")

    def _validate(self, mode: str, setpoint: np.ndarray) -> np.ndarray:
        if mode not in SIM_MODES:
            raise ValueError(f"sim_{self.cfg.arm}: unknown mode {mode!r}; valid modes: {', '.join(SIM_MODES)}")
        x = np.asarray(setpoint, dtype=float).reshape(-1)
        want = SETPOINT_DIM.get(mode, self.dof)
        if x.shape != (want,) or not np.all(np.isfinite(x)):
            raise ValueError(f"sim_{self.cfg.arm}: {mode} setpoint must be finite with shape ({want},), got {x}")
        return x

    def _clip(self, mode: str, x: np.ndarray) -> np.ndarray:
        if mode == "joint_pos":
            return self._inside(x)
        if mode == "joint_vel":
            return clip_velocity(x, self._q_cmd, self._q_lo, self._q_hi, self._qd_lim, self.tick_s)
        if mode == "ee_pose":
            return np.concatenate([x[:3], quat_normalize(x[3:])])
        dp, dr = x[:3], x[3:]
        dp = dp * min(1.0, self.cfg.ee_delta_max_m / max(np.linalg.norm(dp), 1e-12))
        dr = dr * min(1.0, self.cfg.ee_delta_max_rad / max(np.linalg.norm(dr), 1e-12))
        return np.concatenate([dp, dr])

    def _apply(self, mode: str, x: np.ndarray, grip: float | None) -> None:
        if grip is not None:
            self._grip_cmd = grip
        if mode in ("joint_pos", "joint_vel"):
            self._ee_target = None
            q = x if mode == "joint_pos" else self._q_cmd + x * self.tick_s
            self._q_cmd = self._inside(q)
            return
        if self._ee_target is None:
            self._ee_target = self._ik.forward(self._q_cmd)
        if mode == "ee_pose":
            pos, quat = x[:3].copy(), x[3:].copy()
        else:
            pos = self._ee_target[0] + x[:3]
            quat = quat_normalize(quat_mul(rotvec_to_quat(x[3:]), self._ee_target[1]))
        self._ee_target = (pos, quat)
        q_new = self._inside(self._ik.solve(self._q_cmd, pos, quat, self._qd_lim * self.tick_s))
        if self._motion is None:
            self._q_cmd = q_new
            return
        # the IK step as a joint velocity, limited like the safety layer's joint modes (acceleration included:
        # the servo's feed-forward needs continuous target velocities, and a real arm rejects jumps)
        v = (q_new - self._q_cmd) / self.tick_s
        v = limit_joint_step(self._motion, self._q_cmd, v, self._qd_cmd, self.tick_s, self._ik.forward,
                             link_fk=self.forward_link_points)
        self._q_cmd = self._inside(self._q_cmd + v * self.tick_s)

    def _inside(self, q: np.ndarray) -> np.ndarray:
        """``q`` clipped to the motion limits; a target already outside them may only move back inward."""
        return np.clip(q, np.minimum(self._q_lo, self._q_cmd), np.maximum(self._q_hi, self._q_cmd))

    def _write_ctrl(self) -> None:
        self.data.ctrl[: self.dof] = self._q_cmd
        self.data.ctrl[self.dof : self.dof + 2] = self._grip_cmd * FINGER_TRAVEL_M

    def _feed_forward(self, substep: int) -> None:
        """Servo feed-forward of the target trajectory (computed torque, as industrial servo drives add to
        their position loop), so the arm reaches each target at the end of its tick instead of lagging it
        by a per-joint, per-pose amount (which moved the EE up to 1.3x faster than the targets did): the
        inertial torque M(q) qdd_target, Coriolis + joint damping, the servo damping's kv qd_target, minus
        the one tick of motion kp (q_target - q_target_before) that the position loop sees at a tick's
        start when the arm is exactly on track. Only with motion limits set: then the targets are
        acceleration-limited (``limit_joint_step``) and the feed-forward is bounded; a hold or stop
        zeroes it (the target velocity is zero)."""
        d, n = self.data, self.dof
        if self._motion is None:
            return
        qacc, m_qdd = np.zeros(self.model.nv), np.zeros(self.model.nv)
        qacc[:n] = self._qdd_cmd
        mujoco.mj_mulM(self.model, d, m_qdd, qacc)
        ahead_s = self.tick_s - substep * self.model.opt.timestep  # how far the target is ahead of the arm
        d.qfrc_applied[:n] = (m_qdd[:n] + d.qfrc_bias[:n] - d.qfrc_passive[:n]
                              + (self._kv - self._kp * ahead_s) * self._qd_cmd)

    def _tick(self) -> None:
        q_before, qd_before = self._q_cmd.copy(), self._qd_cmd
        for mode, x, grip in self._link.receive(self.data.time):
            self._apply(mode, x, grip)
        # the targets' velocity and acceleration over this tick (a tick without a command holds the target);
        # bounded for targets that jump (a dropped or late command, a hold)
        self._qd_cmd = np.clip((self._q_cmd - q_before) / self.tick_s, -self._qd_lim, self._qd_lim)
        a_max = 2.0 * (self._motion.qdd_max_rad_s2 if self._motion is not None else 0.0)
        self._qdd_cmd = np.clip((self._qd_cmd - qd_before) / self.tick_s, -a_max, a_max)
        self._write_ctrl()
        for substep in range(self._substeps):
            self._feed_forward(substep)
            mujoco.mj_step(self.model, self.data)
            # mj_step leaves poses and forces of the state before its integration: recompute them, so a state
            # read now is one consistent snapshot (EE pose of these joints) and the feed-forward sees it
            mujoco.mj_forward(self.model, self.data)

    def _catch_up(self) -> None:
        due_ticks = int((time.monotonic() - self._wall_t0_s) / self.tick_s)
        done_ticks = int(round(self.data.time / self.tick_s))
        n = due_ticks - done_ticks
        if n > self.cfg.max_catchup_ticks:  # fell behind (paused process): skip time, do not spiral
            self._wall_t0_s += (n - self.cfg.max_catchup_ticks) * self.tick_s
            n = self.cfg.max_catchup_ticks
        for _ in range(max(n, 0)):
            self._tick()

    def render(self, camera: str = "front") -> np.ndarray:
        """uint8 (H, W, 3) image from a scene camera (offscreen; needs MUJOCO_GL set for headless use)."""
        if self._renderer is None:
            w, h = self.cfg.image_size_px
            self._renderer = mujoco.Renderer(self.model, height=h, width=w)
        self._renderer.update_scene(self.data, camera=camera)
        return self._renderer.render()
