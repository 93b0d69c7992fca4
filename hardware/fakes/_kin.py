"""Denavit-Hartenberg forward kinematics and a numeric IK, used only by the SDK fakes to answer pose queries."""
from __future__ import annotations

import numpy as np

from armflow.hardware.kinematics import mat_to_quat, quat_error, rotvec_to_quat


def dh_forward(dh: np.ndarray, q_rad: np.ndarray, modified: bool) -> np.ndarray:
    """4x4 flange pose in the base frame. ``dh`` rows: (a [m], d [m], alpha [rad]); standard or modified (Craig)."""
    T = np.eye(4)
    for (a, d, alpha), q in zip(dh, q_rad):
        ca, sa, ct, st = np.cos(alpha), np.sin(alpha), np.cos(q), np.sin(q)
        if modified:
            A = np.array([[ct, -st, 0, a], [st * ca, ct * ca, -sa, -d * sa], [st * sa, ct * sa, ca, d * ca], [0, 0, 0, 1]])
        else:
            A = np.array([[ct, -st * ca, st * sa, a * ct], [st, ct * ca, -ct * sa, a * st], [0, sa, ca, d], [0, 0, 0, 1]])
        T = T @ A
    return T


class DHArm:
    def __init__(self, dh: list[tuple[float, float, float]], modified: bool, flange_m: float = 0.0):
        self.dh, self.modified, self.flange_m = np.asarray(dh, float), modified, flange_m

    def pose(self, q_rad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(position [m], quaternion wxyz) of the tool point ``flange_m`` along the flange z axis."""
        T = dh_forward(self.dh, q_rad, self.modified)
        return T[:3, 3] + T[:3, 2] * self.flange_m, mat_to_quat(T[:3, :3])

    def ik(self, q0_rad: np.ndarray, pos_m: np.ndarray, quat_wxyz: np.ndarray, iters: int = 30) -> np.ndarray:
        """Damped least squares with a finite-difference Jacobian, starting at ``q0_rad``."""
        q = np.asarray(q0_rad, float).copy()
        for _ in range(iters):
            p, r = self.pose(q)
            err = np.concatenate([pos_m - p, quat_error(quat_wxyz, r)])
            if np.linalg.norm(err) < 1e-7:
                break
            J = np.zeros((6, len(q)))
            for j in range(len(q)):
                dq = np.zeros(len(q))
                dq[j] = 1e-6
                p2, r2 = self.pose(q + dq)
                J[:3, j] = (p2 - p) / 1e-6
                J[3:, j] = quat_error(r2, r) / 1e-6
            q += J.T @ np.linalg.solve(J @ J.T + 1e-4 * np.eye(6), err)
        return q


# Published DH tables (UR5e: standard DH from Universal Robots; Panda: modified DH from Franka's FCI docs;
# xArm7: modified DH from UFactory's user manual).
UR5E = DHArm([(0, 0.1625, np.pi / 2), (-0.425, 0, 0), (-0.3922, 0, 0), (0, 0.1333, np.pi / 2),
              (0, 0.0997, -np.pi / 2), (0, 0.0996, 0)], modified=False)
PANDA = DHArm([(0, 0.333, 0), (0, 0, -np.pi / 2), (0, 0.316, np.pi / 2), (0.0825, 0, np.pi / 2),
               (-0.0825, 0.384, -np.pi / 2), (0, 0, np.pi / 2), (0.088, 0, np.pi / 2)], modified=True, flange_m=0.107)
XARM7 = DHArm([(0, 0.267, 0), (0, 0, -np.pi / 2), (0, 0.293, np.pi / 2), (0.0525, 0, np.pi / 2),
               (0.0775, 0.3425, np.pi / 2), (0, 0, np.pi / 2), (0.076, 0.097, -np.pi / 2)], modified=True)


def rotvec_pose_to_quat(pose6: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pose6 = np.asarray(pose6, float)
    return pose6[:3].copy(), rotvec_to_quat(pose6[3:])
