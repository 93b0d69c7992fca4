"""Small rotation helpers and the one damped-least-squares IK core on a MuJoCo model (numpy only).

Quaternions are (w, x, y, z); rotation vectors are axis * angle [rad].
"""
from __future__ import annotations

from typing import Callable

import mujoco
import numpy as np


def quat_normalize(quat_wxyz: np.ndarray) -> np.ndarray:
    q = np.asarray(quat_wxyz, dtype=float)
    n = np.linalg.norm(q)
    if not np.isfinite(n) or n < 1e-9:
        raise ValueError(f"quaternion must be finite and non-zero, got {q}")
    q = q / n
    return q if q[0] >= 0 else -q


def quat_mul(a_wxyz: np.ndarray, b_wxyz: np.ndarray) -> np.ndarray:
    out = np.zeros(4)
    mujoco.mju_mulQuat(out, np.asarray(a_wxyz, float), np.asarray(b_wxyz, float))
    return out


def rotvec_to_quat(rotvec_rad: np.ndarray) -> np.ndarray:
    rotvec_rad = np.asarray(rotvec_rad, dtype=float)
    angle = float(np.linalg.norm(rotvec_rad))
    if angle < 1e-12:
        return np.array([1.0, 0.0, 0.0, 0.0])
    out = np.zeros(4)
    mujoco.mju_axisAngle2Quat(out, rotvec_rad / angle, angle)
    return out


def quat_to_rotvec(quat_wxyz: np.ndarray) -> np.ndarray:
    """Rotation vector [rad] of a unit quaternion (shortest arc)."""
    q = quat_normalize(quat_wxyz)
    out = np.zeros(3)
    mujoco.mju_quat2Vel(out, q, 1.0)
    return out


def quat_error(target_wxyz: np.ndarray, current_wxyz: np.ndarray) -> np.ndarray:
    """World-frame rotation vector taking ``current`` to ``target`` [rad]."""
    cur_inv = np.zeros(4)
    mujoco.mju_negQuat(cur_inv, quat_normalize(current_wxyz))
    return quat_to_rotvec(quat_mul(quat_normalize(target_wxyz), cur_inv))


def mat_to_quat(xmat: np.ndarray) -> np.ndarray:
    out = np.zeros(4)
    mujoco.mju_mat2Quat(out, np.asarray(xmat, float).reshape(9))
    return quat_normalize(out)


def damped_pinv(jac: np.ndarray, damping: float) -> Callable[[np.ndarray], np.ndarray]:
    """``x -> J^T (J J^T + damping^2 I)^-1 x``, the DLS core of ``SiteIK`` and the native OSC (``sim/arm.py``).

    One Cholesky through MuJoCo for every ``x`` (numpy's LAPACK may spin BLAS threads, ruinous on a shared
    core); ``jac`` is read at each call, so keep it unchanged meanwhile."""
    chol = jac @ jac.T
    chol.flat[:: len(chol) + 1] += damping**2  # + lambda^2 I
    mujoco.mju_cholFactor(chol, 0.0)

    def apply(x: np.ndarray) -> np.ndarray:
        y = np.empty(len(chol))
        mujoco.mju_cholSolve(y, chol, x)
        return jac.T @ y
    return apply


class SiteIK:
    """Damped least squares IK for one site over the first ``dof`` joints, on a private MjData.

    ``solve`` starts at ``q0_rad`` and moves at most ``max_step_rad`` per joint (so an unreachable target
    is approached at a bounded joint speed instead of jumping), with a weak pull towards ``q_rest_rad``
    in J's exact null space (keeps 7-dof elbows from drifting; the OSC's damped projector would leak the
    pull into the pose, an error that iterating to an absolute target keeps).
    """

    def __init__(self, model: mujoco.MjModel, site: str, dof: int, q_rest_rad: np.ndarray,
                 damping: float = 0.05, iterations: int = 3, rest_gain: float = 0.02):
        self.model, self.dof = model, dof
        self.data = mujoco.MjData(model)
        self.site_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, site)
        self.q_rest = np.asarray(q_rest_rad, float)
        self.damping, self.iterations, self.rest_gain = damping, iterations, rest_gain
        self.q_min = model.jnt_range[:dof, 0].copy()
        self.q_max = model.jnt_range[:dof, 1].copy()
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))

    def forward(self, q_rad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Site position [m] and quaternion (w, x, y, z) at joint angles ``q_rad``."""
        self.data.qpos[: self.dof] = q_rad
        mujoco.mj_kinematics(self.model, self.data)
        return self.data.site_xpos[self.site_id].copy(), mat_to_quat(self.data.site_xmat[self.site_id])

    def solve(self, q0_rad: np.ndarray, pos_m: np.ndarray, quat_wxyz: np.ndarray,
              max_step_rad: np.ndarray) -> np.ndarray:
        q = np.asarray(q0_rad, float).copy()
        for _ in range(self.iterations):
            pos, quat = self.forward(q)
            err = np.concatenate([pos_m - pos, quat_error(quat_wxyz, quat)])
            mujoco.mj_comPos(self.model, self.data)
            mujoco.mj_jacSite(self.model, self.data, self._jacp, self._jacr, self.site_id)
            jac = np.vstack([self._jacp[:, : self.dof], self._jacr[:, : self.dof]])
            dq = damped_pinv(jac, self.damping)(err)
            null = np.eye(self.dof) - np.linalg.pinv(jac) @ jac
            dq += null @ (self.rest_gain * (self.q_rest - q))
            q = np.clip(q + dq, self.q_min, self.q_max)
        step = np.clip(q - q0_rad, -max_step_rad, max_step_rad)
        return np.clip(np.asarray(q0_rad, float) + step, self.q_min, self.q_max)


def rpy_to_quat(rpy_rad: np.ndarray) -> np.ndarray:
    """Fixed-axis roll (x), pitch (y), yaw (z): R = Rz(yaw) Ry(pitch) Rx(roll) -> quaternion (w, x, y, z)."""
    roll, pitch, yaw = np.asarray(rpy_rad, float)
    qx = rotvec_to_quat(np.array([roll, 0.0, 0.0]))
    qy = rotvec_to_quat(np.array([0.0, pitch, 0.0]))
    qz = rotvec_to_quat(np.array([0.0, 0.0, yaw]))
    return quat_normalize(quat_mul(qz, quat_mul(qy, qx)))


def quat_to_rpy(quat_wxyz: np.ndarray) -> np.ndarray:
    """Inverse of ``rpy_to_quat`` (pitch in [-pi/2, pi/2])."""
    w, x, y, z = quat_normalize(quat_wxyz)
    roll = np.arctan2(2 * (w * x + y * z), 1 - 2 * (x * x + y * y))
    pitch = np.arcsin(np.clip(2 * (w * y - z * x), -1.0, 1.0))
    yaw = np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
    return np.array([roll, pitch, yaw])
