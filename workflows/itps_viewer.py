"""The ITPS viewer: an OpenCV window on the rendered scene where a left click sets a point goal and a drag sketches a
path for an ITPS-steered policy (``armflow.policies.steering.itps``); the policy picks it up at its next chunk.

Pixel -> workspace: the camera's pose (``MjData.cam_xpos``, ``cam_xmat``: MuJoCo cameras look along their -z with
+y up) and vertical field of view (``MjModel.cam_fovy``) give the ray through the pixel centre; the goal is where
it meets the horizontal plane ``z = plane_z_m`` (default: a resting cube's centre height), so a click on a cube
gives that cube's position up to its half height's parallax. Points outside the workspace box are refused in the
window's status line, not sent.

    python -m armflow.workflows.itps_viewer CHECKPOINT [--task pick_either] [--camera topview] [--episodes 1]
        [--strategy ss] [--seed 100000] [--log LOG.json]

``--log`` writes every chunk's received goal (``diagnostics[i]["goal_m"]``) and the clicks (the Xvfb test reads it).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

WINDOW = "armflow itps"
DRAG_MIN_PX = 8  # a press-release that moved less than this is a click (a point), else a sketch (a path)


def camera_ray(model, data, camera: str, u: float, v: float, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """(origin (3,), unit direction (3,)) in the world frame of the ray through pixel (u, v) [px, top-left origin]
    of a ``width`` x ``height`` render of ``camera``."""
    import mujoco

    cid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
    if cid < 0:
        raise ValueError(f"itps viewer: the model has no camera {camera!r}")
    f = 0.5 * height / np.tan(np.deg2rad(model.cam_fovy[cid]) / 2)  # focal length [px]
    d_cam = np.array([(u + 0.5 - width / 2) / f, -(v + 0.5 - height / 2) / f, -1.0])
    d = data.cam_xmat[cid].reshape(3, 3) @ d_cam
    return data.cam_xpos[cid].copy(), d / np.linalg.norm(d)


def pixel_to_plane(model, data, camera: str, u: float, v: float, width: int, height: int,
                   plane_z_m: float) -> np.ndarray | None:
    """The world point [m] where the ray through pixel (u, v) meets ``z = plane_z_m`` (None: it does not, ahead)."""
    origin, d = camera_ray(model, data, camera, u, v, width, height)
    if abs(d[2]) < 1e-9 or (plane_z_m - origin[2]) / d[2] <= 0:
        return None
    return origin + d * (plane_z_m - origin[2]) / d[2]


def world_to_pixel(model, data, camera: str, p: np.ndarray, width: int, height: int) -> tuple[int, int]:
    """The inverse of :func:`camera_ray`: pixel of world point ``p`` (for drawing the goal)."""
    import mujoco

    cid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
    f = 0.5 * height / np.tan(np.deg2rad(model.cam_fovy[cid]) / 2)
    q = data.cam_xmat[cid].reshape(3, 3).T @ (np.asarray(p) - data.cam_xpos[cid])
    return int(round(width / 2 - 0.5 + f * q[0] / -q[2])), int(round(height / 2 - 0.5 - f * q[1] / -q[2]))


class GoalViewer:
    """The window: ``show(frame)`` draws it and pumps mouse events; ``take_goal()`` returns a new goal (a point (3,)
    or a path (M, 3) [m]) once per click or drag, else None."""

    def __init__(self, model, data, camera: str, size_px: int, plane_z_m: float):
        import cv2

        self.cv2, self.model, self.data, self.camera, self.size = cv2, model, data, camera, size_px
        self.plane_z_m, self.status = plane_z_m, "click: point goal, drag: path"
        self._stroke: list[tuple[int, int]] | None = None
        self._new: np.ndarray | None = None
        self.goal: np.ndarray | None = None
        self.clicks: list[dict] = []
        cv2.namedWindow(WINDOW, cv2.WINDOW_AUTOSIZE | cv2.WINDOW_GUI_NORMAL)
        cv2.setMouseCallback(WINDOW, self._on_mouse)

    def _on_mouse(self, event, x, y, flags, _param) -> None:
        cv2 = self.cv2
        if event == cv2.EVENT_LBUTTONDOWN:
            self._stroke = [(x, y)]
        elif event == cv2.EVENT_MOUSEMOVE and self._stroke is not None and flags & cv2.EVENT_FLAG_LBUTTON:
            self._stroke.append((x, y))
        elif event == cv2.EVENT_LBUTTONUP and self._stroke is not None:
            self._stroke.append((x, y))
            self._finish(self._stroke)
            self._stroke = None

    def _finish(self, stroke: list[tuple[int, int]]) -> None:
        from armflow.policies.steering import check_goal

        px = np.asarray(stroke, float)
        drag = np.linalg.norm(px - px[0], axis=1).max() >= DRAG_MIN_PX
        px = px[np.linspace(0, len(px) - 1, min(len(px), 16)).round().astype(int)] if drag else px[-1:]
        pts = [pixel_to_plane(self.model, self.data, self.camera, u, v, self.size, self.size, self.plane_z_m)
               for u, v in px]
        self.clicks.append({"pixels": px.tolist(), "drag": bool(drag)})
        try:
            if any(p is None for p in pts):
                raise ValueError("the ray misses the table plane")
            goal = check_goal(np.asarray(pts) if drag else pts[0])
        except ValueError as exc:
            self.status = f"refused: {exc}"[:90]
            return
        self._new = goal
        self.status = f"goal {'path' if drag else np.round(goal, 3).tolist()}"
        self.clicks[-1]["goal_m"] = goal.tolist()

    def take_goal(self) -> np.ndarray | None:
        goal, self._new = self._new, None
        if goal is not None:
            self.goal = goal
        return goal

    def show(self, frame_rgb: np.ndarray, wait_ms: int = 1) -> int:
        cv2 = self.cv2
        img = np.ascontiguousarray(frame_rgb[..., ::-1])
        if self.goal is not None:
            pts = [world_to_pixel(self.model, self.data, self.camera, p, self.size, self.size)
                   for p in self.goal.reshape(-1, 3)]
            for a, b in zip(pts, pts[1:]):
                cv2.line(img, a, b, (0, 200, 255), 2)
            cv2.circle(img, pts[-1], 6, (0, 0, 255), 2)
        cv2.putText(img, self.status, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
        cv2.imshow(WINDOW, img)
        return cv2.waitKey(wait_ms) & 0xFF

    def close(self) -> None:
        self.cv2.destroyWindow(WINDOW)


def interactive_episodes(policy, task: str, seeds: list[int], camera: str = "topview", size_px: int = 480,
                         step_delay_s: float = 0.05, wait_first_goal_s: float = 0.0) -> dict:
    """Roll ``seeds`` in one in-process env with the window: each step renders ``camera`` and polls the mouse; a new
    goal goes to ``policy.set_goal`` and the steered policy uses it from its next chunk. ``q`` ends the run.
    ``wait_first_goal_s``: hold the arm (no steps) until the first goal or this long. Returns per-episode results
    and the clicks."""
    import mujoco

    from armflow.sim import make_env
    from armflow.workflows.rollout import PolicyRunner

    env = make_env(task)
    base = env.unwrapped
    renderer = mujoco.Renderer(base.model, size_px, size_px)
    viewer = GoalViewer(base.model, base._data, camera, size_px, float(getattr(base, "rest_height_m", 0.0)))
    runner, episodes, quit_ = PolicyRunner(policy, 1), [], False

    def frame():
        renderer.update_scene(base._data, camera=camera)
        return renderer.render()

    try:
        for seed in seeds:
            obs, _ = env.reset(seed=seed)
            runner.start({k: v[None] for k, v in obs.items()}, seeds=[seed])
            deadline = time.monotonic() + wait_first_goal_s
            while viewer.goal is None and time.monotonic() < deadline:
                viewer.show(frame(), 20)
                if (g := viewer.take_goal()) is not None:
                    policy.set_goal(g)
            info, steps = {"success": False}, 0
            while not quit_:
                if (g := viewer.take_goal()) is not None:
                    policy.set_goal(g)
                obs, _, terminated, truncated, info = env.step(runner.act()[0])
                runner.observe({k: v[None] for k, v in obs.items()})
                steps += 1
                quit_ = viewer.show(frame(), max(1, int(step_delay_s * 1e3))) == ord("q")
                if terminated or truncated:
                    break
            episodes.append({"seed": seed, "success": bool(info["success"]), "length": steps,
                             "mode": int(info.get("mode", -1))})
            if quit_:
                break
    finally:
        viewer.close()
        renderer.close()
        env.close()
    return {"episodes": episodes, "clicks": viewer.clicks}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--task", default="pick_either")
    p.add_argument("--camera", default="topview")
    p.add_argument("--episodes", type=int, default=1)
    p.add_argument("--seed", type=int, default=100000)
    p.add_argument("--strategy", default="ss")
    p.add_argument("--size", type=int, default=480)
    p.add_argument("--wait-first-goal-s", type=float, default=0.0)
    p.add_argument("--log", default=None)
    args = p.parse_args(argv)
    from armflow.policies import load_policy
    from armflow.policies.steering import steer

    policy = steer(load_policy(args.checkpoint, steered=False), {"type": "itps", "strategy": args.strategy})
    result = interactive_episodes(policy, args.task, [args.seed + i for i in range(args.episodes)], args.camera,
                                  args.size, wait_first_goal_s=args.wait_first_goal_s)
    result["goals_received"] = [d.get("goal_m") for d in policy.diagnostics]
    if args.log:
        Path(args.log).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
