"""ITPS alignment math (Wang et al. 2024), pure functions on end-effector paths implied by ee-delta action chunks.

Frames and units: world frame, metres. An arm task's action is ``[dx, dy, dz, rx, ry, rz, g]`` in [-1, 1] with the
position part scaled by ``max_dpos_m`` per control step (``armflow.sim.arm``), so a chunk a (N, T_p, D_a) from the
grip site p_0 (N, 3) implies the path

    p_t = p_0 + step_m * sum_{s <= t} a_s[0:3],   t = 1 .. T_p                                       (1)

with ``step_m`` the realised motion per unit action: ``max_dpos_m`` times the fraction the servos realise (the sim
Panda re-anchors its target every step, so about half: the commanded path overshoots the real one twice). Alignment
distance to a goal (G, M, 3), G in {1, N}, and p_0 included in the path:

- a point (M = 1): the closest approach ``D = min_{t >= 0} |p_t - g|`` (a chunk that reaches the point and then lifts
  away from it is aligned; from an arm already there every chunk is);                                         (2)
- a sketched path (M > 1): DTW between the path and the sketch, the mean Euclidean cost over the optimal warping.  (3)

The gradient is closed form (no autograd): dD/dp_t is the unit vector from the goal at the point(s) aligned with
p_t, and by (1) dD/da_s[0:3] = step_m * sum_{t >= s} dD/dp_t (a reverse cumulative sum).              (4)
"""
from __future__ import annotations

import numpy as np
import torch

EPS_M = 1e-6  # distances below this give a zero gradient direction


def ee_path(p0_m: torch.Tensor, actions: torch.Tensor, step_m: float) -> torch.Tensor:
    """(1): grip site p0 (N, 3) [m], chunk (N, T_p, D_a) in robot units -> path (N, T_p, 3) [m] after each action."""
    return p0_m[:, None, :] + step_m * torch.cumsum(actions[..., :3], dim=1)


def point_distance(path_m: torch.Tensor, point_m: torch.Tensor, radius_m: float = 0.0
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(2): path (N, T, 3), point (G, 3) -> (closest approach beyond ``radius_m``, max(D - r, 0) (N,) [m],
    its gradient dD/dpath (N, T, 3); zero inside the radius)."""
    diff = path_m - point_m[:, None, :]
    d = diff.norm(dim=-1)  # (N, T)
    t_star = d.argmin(dim=1)
    rows = torch.arange(len(path_m))
    d_star = d[rows, t_star]
    grad = torch.zeros_like(path_m)
    grad[rows, t_star] = diff[rows, t_star] / d_star[:, None].clamp_min(EPS_M) * (d_star > radius_m)[:, None]
    return (d_star - radius_m).clamp_min(0.0), grad


def _dtw_alignment(cost: np.ndarray) -> list[tuple[int, int]]:
    """Optimal DTW warping (i, j) pairs of one cost matrix (T, M), start (0, 0) to end (T-1, M-1)."""
    t_n, m_n = cost.shape
    acc = np.full((t_n + 1, m_n + 1), np.inf)
    acc[0, 0] = 0.0
    for i in range(1, t_n + 1):
        for j in range(1, m_n + 1):
            acc[i, j] = cost[i - 1, j - 1] + min(acc[i - 1, j], acc[i, j - 1], acc[i - 1, j - 1])
    i, j, pairs = t_n, m_n, []
    while i > 0 and j > 0:
        pairs.append((i - 1, j - 1))
        step = int(np.argmin([acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1]]))
        i, j = (i - 1, j - 1) if step == 0 else (i - 1, j) if step == 1 else (i, j - 1)
    return pairs[::-1]


def sketch_distance(path_m: torch.Tensor, sketch_m: torch.Tensor, radius_m: float = 0.0
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(3): path (N, T, 3), sketch (G, M, 3) -> (mean DTW cost D (N,) [m], dD/dpath (N, T, 3)) with the warping
    held fixed (it is piecewise constant in the path)."""
    n = len(path_m)
    sketch_m = sketch_m.expand(n, -1, -1)
    diff = path_m[:, :, None, :] - sketch_m[:, None, :, :]  # (N, T, M, 3)
    cost = diff.norm(dim=-1)
    dist, grad = torch.zeros(n, dtype=path_m.dtype), torch.zeros_like(path_m)
    for r, c in enumerate(cost.detach().cpu().numpy()):
        pairs = _dtw_alignment(c)
        i_idx, j_idx = torch.tensor([p[0] for p in pairs]), torch.tensor([p[1] for p in pairs])
        c = cost[r, i_idx, j_idx]
        dist[r] = (c - radius_m).clamp_min(0.0).mean()
        unit = diff[r, i_idx, j_idx] / c[:, None].clamp_min(EPS_M) * (c > radius_m)[:, None]
        grad[r].index_add_(0, i_idx, unit / len(pairs))
    return dist, grad


def alignment(path_m: torch.Tensor, goal_m: torch.Tensor, p0_m: torch.Tensor | None = None, radius_m: float = 0.0
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Path (N, T, 3), goal (G, M, 3) (M = 1: a point) -> (D (N,) [m], dD/dpath (N, T, 3)). With the grip site
    ``p0_m`` (N, 3) the path starts there (p_0 of eq. 1): an arm already at the point (or past it, lifting away)
    has D = |p_0 - g| whatever the chunk does, so the gradient is zero and every candidate ties: steering says
    where to go, not what to do there. ``radius_m``: distances up to it count as 0 (the goal is a ball, as precise as
    a click; inside it the policy places the gripper itself)."""
    if p0_m is not None:
        d, grad = alignment(torch.cat([p0_m[:, None, :], path_m], dim=1), goal_m, None, radius_m)
        return d, grad[:, 1:]
    if goal_m.shape[1] == 1:
        return point_distance(path_m, goal_m[:, 0], radius_m)
    return sketch_distance(path_m, goal_m, radius_m)


def action_grad(dpath: torch.Tensor, step_m: float, action_dim: int) -> torch.Tensor:
    """(4): dD/dpath (N, T, 3) -> dD/da (N, T, D_a) (zero on the rotation and gripper dims)."""
    grad = torch.zeros(*dpath.shape[:2], action_dim, dtype=dpath.dtype)
    grad[..., :3] = step_m * torch.flip(torch.cumsum(torch.flip(dpath, [1]), 1), [1])
    return grad


def goal_chunk(p0_m: torch.Tensor, goal_m: torch.Tensor, horizon: int, n_reach: int, step_m: float,
               action_dim: int) -> torch.Tensor:
    """Biased initialisation's chunk (N, T_p, D_a) in robot units: the position deltas that follow the polyline
    p0 -> goal points at a constant pace, reaching a point goal after ``n_reach`` steps (a sketch over the whole
    horizon) and holding; deltas clipped to [-1, 1]; rotation and gripper dims 0 (the caller replaces them)."""
    n = len(p0_m)
    goal_m = goal_m.expand(n, -1, -1)
    steps = n_reach if goal_m.shape[1] == 1 else horizon
    poly = torch.cat([p0_m[:, None], goal_m], dim=1)  # (N, M + 1, 3)
    seg = (poly[:, 1:] - poly[:, :-1]).norm(dim=-1)
    arc = torch.cat([torch.zeros(n, 1, dtype=poly.dtype), seg.cumsum(1)], 1)  # (N, M + 1)
    chunk = torch.zeros(n, horizon, action_dim, dtype=p0_m.dtype)
    targets = torch.empty(n, horizon, 3, dtype=p0_m.dtype)
    for r in range(n):
        s = arc[r, -1] * torch.clamp(torch.arange(1, horizon + 1, dtype=poly.dtype) / steps, max=1.0)
        for c in range(3):
            targets[r, :, c] = torch.from_numpy(np.interp(s.numpy(), arc[r].numpy(), poly[r, :, c].numpy()))
    deltas = torch.diff(torch.cat([p0_m[:, None], targets], 1), dim=1) / step_m
    chunk[..., :3] = deltas.clamp(-1.0, 1.0)
    return chunk
