"""The native Panda arm: a 7-D end-effector delta action -> joint position targets, in numpy on ``mj_jacSite``.

Action (robosuite OSC_POSE convention), all in [-1, 1]:
``[dx, dy, dz]`` scaled by ``max_dpos_m`` (world frame, relative to the current grip-site position),
``[rx, ry, rz]`` an axis-angle scaled by ``max_drot_rad`` (world frame, left-multiplied onto the
current orientation), ``g`` the gripper (-1 open, +1 closed; intermediate values interpolate the
finger targets). One damped-least-squares IK step turns the pose delta into joint targets, with a
null-space pull toward the home posture; MuJoCo's position servos (gravity-compensated) track them
for ``n_substeps`` physics steps. Servo lag: about half of a sustained delta is realised per control
step (like robosuite's OSC, the goal is re-anchored at the current pose every step).
"""
from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

from armflow.hardware.kinematics import damped_pinv
from armflow.sim.arm_mjcf import ARM_JOINTS, FINGER_JOINTS, HOME_QPOS

from numpy.core.umath import clip as _clip  # np.clip's ufunc, min(max(x, lo), hi), without its slow Python wrapper

FINGER_OPEN_M = 0.04  # finger joint travel [m]; the opening between the pads is about twice this


@dataclass(frozen=True)
class ArmControlConfig:
    """Gains of the differential-IK controller."""

    max_dpos_m: float = 0.05  # position delta at |action| = 1 [m per control step]
    max_drot_rad: float = 0.5  # rotation delta at |action| = 1 [rad per control step]
    damping: float = 0.05  # DLS damping lambda (rows of J are in m and rad)
    nullspace_gain: float = 0.2  # fraction of (home - q) added per step in the Jacobian null space
    max_dq_rad: float = 0.35  # per-step clamp on the joint target change [rad]


def quat_canonical(quat_wxyz: np.ndarray, ref_wxyz: np.ndarray) -> np.ndarray:
    """Pick the sign of ``quat_wxyz`` on the hemisphere of ``ref_wxyz`` (continuous near ``ref``)."""
    return quat_wxyz if float(np.dot(quat_wxyz, ref_wxyz)) >= 0.0 else -quat_wxyz


class PandaArm:
    """Joint/site ids and the controller for the Panda inside an ``MjModel``/``MjData`` pair."""

    def __init__(self, model: mujoco.MjModel, data: mujoco.MjData, control: ArmControlConfig):
        self.model, self.data = model, data
        self.joint_names = ARM_JOINTS
        self.finger_joint_names = FINGER_JOINTS
        jid = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, n) for n in ARM_JOINTS + FINGER_JOINTS]
        self.qpos_idx = np.array([model.jnt_qposadr[j] for j in jid[:7]])
        self.dof_idx = np.array([model.jnt_dofadr[j] for j in jid[:7]])
        self.finger_qpos_idx = np.array([model.jnt_qposadr[j] for j in jid[7:]])
        self.finger_dof_idx = np.array([model.jnt_dofadr[j] for j in jid[7:]])
        self.site_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, "grip_site")
        self.q_low = model.jnt_range[jid[:7], 0].copy()
        self.q_high = model.jnt_range[jid[:7], 1].copy()
        self.q_home = np.array(HOME_QPOS)
        if list(self.dof_idx) != list(range(7)) or list(self.qpos_idx) != list(range(7)):
            raise ValueError("PandaArm expects the arm joints to be the model's first 7 qpos/dofs")
        self._finger_a, self._finger_b = (int(i) for i in self.finger_qpos_idx)
        self._quat = np.zeros(4)
        self._init_buffers()
        self.control = control

    def _init_buffers(self) -> None:
        """Work arrays and views for the per-step controller. A numpy call costs ~0.3 us (~0.8 us with a Python
        scalar operand, converted each call) against ~50 us of physics per control step, so the hot path makes
        few calls and passes arrays, never scalars."""
        self._jac_full = np.zeros((6, self.model.nv))  # mj_jacSite writes rows 0-2 (position), 3-5 (rotation)
        # J of the arm's dofs (the model's first 7, checked in __init__): a strided view, which BLAS reads in place
        self._jacp, self._jacr, self._jac = self._jac_full[:3], self._jac_full[3:], self._jac_full[:, :7]
        self._v = np.zeros(7)
        self._unit_low, self._unit_high = np.full(7, -1.0), np.full(7, 1.0)  # action bounds
        d = self.data  # views into MjData's fixed buffers (its getters build a new array object per call)
        self._qpos, self._ctrl, self._q_arm, self._ctrl_arm = d.qpos, d.ctrl, d.qpos[:7], d.ctrl[:7]

    @property
    def control(self) -> ArmControlConfig:
        return self._control

    @control.setter
    def control(self, control: ArmControlConfig) -> None:
        self._control = control
        # per-step constants as arrays (see _init_buffers): a[:3] * max_dpos_m, a[3:6] * max_drot_rad in one
        # multiply; the null-space gain and the joint-step clamp
        self._twist_scale = np.array([control.max_dpos_m] * 3 + [control.max_drot_rad] * 3)
        self._gain = np.full(7, control.nullspace_gain)
        self._dq_low, self._dq_high = np.full(7, -control.max_dq_rad), np.full(7, control.max_dq_rad)

    # ----- state -----------------------------------------------------------------------------
    def joint_pos(self) -> np.ndarray:
        """Arm joint angles (7,) [rad]."""
        return self.data.qpos[self.qpos_idx].copy()

    def ee_pos(self) -> np.ndarray:
        """Grip-site position (3,) [m], world frame."""
        return self.data.site_xpos[self.site_id].copy()

    def ee_quat(self) -> np.ndarray:
        """Grip-site orientation (4,) wxyz, world frame (sign as MuJoCo returns it)."""
        mujoco.mju_mat2Quat(self._quat, self.data.site_xmat[self.site_id])
        return self._quat.copy()

    def ee_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """(position (3,) [m], quaternion wxyz (4,)) of the grip site in the world frame."""
        return self.ee_pos(), self.ee_quat()

    def gripper_opening_m(self) -> float:
        """Distance travelled apart by the two fingers [m] (0 closed, ~0.08 fully open)."""
        return float(self._qpos[self._finger_a] - self._qpos[self._finger_b])

    # ----- reset / control ---------------------------------------------------------------------
    def set_home(self, q_rad: np.ndarray | None = None, gripper_open: bool = True) -> None:
        """Put the arm at ``q_rad`` (default home) at rest with matching servo targets."""
        q = self.q_home if q_rad is None else np.asarray(q_rad, dtype=float)
        self.data.qpos[self.qpos_idx] = q
        self.data.qvel[self.dof_idx] = 0.0
        finger = FINGER_OPEN_M if gripper_open else 0.0
        self.data.qpos[self.finger_qpos_idx] = (finger, -finger)
        self.data.qvel[self.finger_dof_idx] = 0.0
        self.data.ctrl[:7] = q
        self.data.ctrl[7:9] = (finger, -finger)

    def apply_action(self, action: np.ndarray) -> None:
        """Set servo targets (ctrl) from a 7-D action in [-1, 1]; needs kinematics fresh for the current qpos.

        As in robosuite's OSC_POSE, the goal is the *current* pose plus the delta (no integration), so
        the action is a function of the observed state and a zero action brings the arm to rest.
        """
        a = _clip(np.asarray(action, dtype=float), self._unit_low, self._unit_high)
        self.ik_step(a[:6] * self._twist_scale, out=self._ctrl_arm)
        finger = FINGER_OPEN_M * 0.5 * (1.0 - float(a[6]))
        self._ctrl[7] = finger
        self._ctrl[8] = -finger

    def ik_step(self, dx: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Joint targets (7,) [rad] for a world-frame twist ``dx = (dpos [m], drot axis-angle [rad])``.

        Damped least squares ``dq = J^T (J J^T + lambda^2 I)^-1 dx`` (``damped_pinv``, as in the drivers'
        ``SiteIK``), plus a null-space pull to home. ``out``: where to write the targets (default: a new array).
        """
        jac, control, q = self._jac, self._control, self._q_arm
        mujoco.mj_jacSite(self.model, self.data, self._jacp, self._jacr, self.site_id)
        pinv = damped_pinv(jac, control.damping)
        dq = pinv(dx)
        # Null-space pull v - J^+ J v with the damped J^+ (its small leak into the pose is undone next step).
        v = np.subtract(self.q_home, q, out=self._v)
        v *= self._gain
        v -= pinv(jac @ v)
        dq += v
        _clip(dq, self._dq_low, self._dq_high, out=dq)
        dq += q  # = q + clamp(dq): IEEE addition commutes, so the targets are the same bit for bit
        return _clip(dq, self.q_low, self.q_high, out=dq if out is None else out)
