"""External contact force on the end effector from MuJoCo's solved contacts (``mj_contactForce``)."""
from __future__ import annotations

import mujoco
import numpy as np


def ee_contact_force_n(model: mujoco.MjModel, data: mujoco.MjData, ee_body_ids: np.ndarray) -> np.ndarray:
    """Sum of contact forces that the rest of the world exerts on the bodies ``ee_body_ids``, world frame [N].

    MuJoCo's contact frame normal points from geom1 to geom2 and ``mj_contactForce`` returns the force
    acting on geom2 (in contact-frame coordinates), so a contact where the EE owns geom1 is negated.
    Contacts between two EE bodies (finger against palm) cancel and are skipped.
    """
    ee = set(int(b) for b in ee_body_ids)
    total = np.zeros(3)
    wrench = np.zeros(6)
    for i in range(data.ncon):
        contact = data.contact[i]
        b1 = int(model.geom_bodyid[contact.geom1])
        b2 = int(model.geom_bodyid[contact.geom2])
        in1, in2 = b1 in ee, b2 in ee
        if in1 == in2:
            continue
        mujoco.mj_contactForce(model, data, i, wrench)
        frame = contact.frame.reshape(3, 3)  # rows: normal, tangent1, tangent2 (world frame)
        force_world = frame.T @ wrench[:3]
        total += force_world if in2 else -force_world
    return total


def body_ids_matching(model: mujoco.MjModel, words: tuple[str, ...]) -> np.ndarray:
    """Ids of bodies whose name contains any of ``words`` (used for task envs we did not build)."""
    ids = []
    for b in range(model.nbody):
        name = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, b) or ""
        if any(w in name for w in words):
            ids.append(b)
    return np.asarray(ids, dtype=int)
