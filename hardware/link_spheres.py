"""The sim arm's bounding geometry for the safety layer: spheres around its links (``RobotInfo.link_radii_m``)
and the corners of its gripper (``RobotInfo.ee_points_m``).

Why: the workspace box held only the EE and the gripper's corners, so a tilted wrist could still put an arm
link on the table (the slow property test found ``link6`` striking it at 150 mm EE height; the bounce
drove joint 5 to 1.22x its speed limit). Real-arm stacks check such collisions on a few spheres per link
placed by forward kinematics (libfranka-style self/environment checks, MoveIt's sphere models); this
fits them once per model from the links' own mesh vertices.

Fit per link body (its mesh geoms, visual ones included: the sim scene lets every robot geom touch the
table): ``k`` centres seeded evenly along the vertex cloud's principal axis, a few rounds of
assign-to-nearest and move-to-the-cluster's-box-middle, then each sphere's radius is the farthest vertex
assigned to it plus ``margin_m`` (the convex hull MuJoCo collides with bulges a little between vertices of
different spheres). Numpy + mujoco only (robot side).
"""
from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np


@dataclass(frozen=True)
class LinkSpheres:
    """``K`` spheres: ``body_ids`` (K,) the link each rides on, ``offsets_m`` (K, 3) its centre in that body's
    frame, ``radii_m`` (K,)."""

    body_ids: np.ndarray
    offsets_m: np.ndarray
    radii_m: np.ndarray

    def centres(self, data: mujoco.MjData) -> np.ndarray:
        """Sphere centres (K, 3) in the world frame for ``data`` after ``mj_kinematics``."""
        rot = data.xmat[self.body_ids].reshape(-1, 3, 3)
        return data.xpos[self.body_ids] + (rot @ self.offsets_m[:, :, None])[:, :, 0]


def body_vertices(model: mujoco.MjModel, body: int) -> np.ndarray:
    """Mesh vertices (N, 3) of every mesh geom on ``body``, in the body frame (empty if it has none)."""
    pts = [np.zeros((0, 3))]
    for g in np.flatnonzero(model.geom_bodyid == body):
        if model.geom_type[g] != mujoco.mjtGeom.mjGEOM_MESH:
            continue
        mesh = model.geom_dataid[g]
        start, n = model.mesh_vertadr[mesh], model.mesh_vertnum[mesh]
        rot = np.zeros(9)
        mujoco.mju_quat2Mat(rot, model.geom_quat[g])
        pts.append(model.mesh_vert[start : start + n] @ rot.reshape(3, 3).T + model.geom_pos[g])
    return np.vstack(pts)


def _fit(vertices: np.ndarray, k: int, rounds: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """``k`` centres (k, 3) and radii (k,) whose spheres hold every vertex (module docstring)."""
    sample = vertices[:: max(1, len(vertices) // 4000)]  # the centres from a subsample: fit cost ~ms
    mean = sample.mean(axis=0)
    axis = np.linalg.eigh(np.cov((sample - mean).T))[1][:, -1]  # principal axis (covariance, not an N x N SVD)
    t = (sample - mean) @ axis
    centres = mean + np.outer(t.min() + (np.arange(k) + 0.5) / k * (t.max() - t.min()), axis)
    for _ in range(rounds):
        label = np.argmin(((sample[:, None] - centres[None]) ** 2).sum(axis=2), axis=1)
        centres = np.array([(sample[label == j].min(axis=0) + sample[label == j].max(axis=0)) / 2
                            if np.any(label == j) else centres[j] for j in range(k)])
    dist = np.linalg.norm(vertices[:, None] - centres[None], axis=2)  # every vertex, not only the sample
    label = np.argmin(dist, axis=1)
    radii = np.array([dist[label == j, j].max() if np.any(label == j) else 0.0 for j in range(k)])
    keep = radii > 0
    return centres[keep], radii[keep]


def fit_link_spheres(model: mujoco.MjModel, bodies: list[int], per_body: int = 3,
                     margin_m: float = 0.005) -> LinkSpheres:
    """``per_body`` spheres on each of ``bodies`` (ids) that has mesh geoms."""
    ids, offsets, radii = [], [], []
    for body in bodies:
        vertices = body_vertices(model, body)
        if not len(vertices):
            continue
        c, r = _fit(vertices, per_body)
        ids += [body] * len(r)
        offsets.append(c)
        radii.append(r + margin_m)
    if not ids:
        return LinkSpheres(np.zeros(0, int), np.zeros((0, 3)), np.zeros(0))
    return LinkSpheres(np.asarray(ids, int), np.vstack(offsets), np.concatenate(radii))


def gripper_corners(model: mujoco.MjModel, site: int, bodies: list[int], q_home_rad: np.ndarray
                    ) -> tuple[tuple[float, float, float], ...]:
    """The 8 corners, in the frame of the EE ``site`` [m], of the box around the box geoms of the gripper
    ``bodies`` (palm and finger pads, fingers open: closed fingers lie inside it), for ``RobotInfo.ee_points_m``:
    table strikes measured under wild commands were all tilted finger pads, with the EE site itself inside the
    box."""
    d = mujoco.MjData(model)
    d.qpos[: len(q_home_rad)] = q_home_rad
    mujoco.mj_forward(model, d)
    site_pos, site_rot = d.site_xpos[site], d.site_xmat[site].reshape(3, 3)
    signs = np.array(np.meshgrid(*[[-1.0, 1.0]] * 3)).reshape(3, -1).T
    corners = []
    for g in range(model.ngeom):
        if model.geom_bodyid[g] in bodies and model.geom_type[g] == mujoco.mjtGeom.mjGEOM_BOX:
            world = d.geom_xpos[g] + (signs * model.geom_size[g]) @ d.geom_xmat[g].reshape(3, 3).T
            corners.append((world - site_pos) @ site_rot)
    pts = np.vstack(corners)
    box = np.array(np.meshgrid(*zip(pts.min(axis=0), pts.max(axis=0)))).reshape(3, -1).T
    return tuple(tuple(round(float(x), 4) for x in p) for p in box)
