"""The ITPS viewer of ``armflow evaluate viewer=true`` and ``armflow deploy viewer=true``: an OpenCV window on the
rollout where a left click sets a point goal and a drag sketches a path for an ITPS-steered policy
(``steering.type=itps``, ``armflow.policies.steering.itps``); the policy uses it from its next chunk.

Pixel -> workspace: the camera's pose (``MjData.cam_xpos``, ``cam_xmat``: MuJoCo cameras look along their -z with
+y up) and vertical field of view (``MjModel.cam_fovy``) give the ray through the pixel centre; the goal is where
it meets the horizontal plane ``z = plane_z_m`` (a resting cube's centre height), so a click on a cube gives that
cube's position up to its half height's parallax. A point outside the workspace box, or a click on a run that is
not ITPS-steered, is refused in the window's status line (and printed), never sent.

Every accepted goal is saved with the episode seed and the step it was applied at (``viewer.goals`` in eval.json /
summary.json) and the steering diagnostics gain ``goals_applied`` (the goal each run of chunks was sampled with);
``viewer_goals=RUN/eval.json`` sets a run's goals again at the same seeds and steps (with or without the window),
which reproduces it. At each episode start the goal is reset to ``steering.goal`` (none: the policy as trained).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

WINDOW = "armflow itps"
DRAG_MIN_PX = 8  # a press-release that moved less than this is a click (a point), else a sketch (a path)


def camera_ray(model, data, camera: str, u: float, v: float, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """(origin (3,), unit direction (3,)) in the world frame of the ray through pixel (u, v) [px, top-left origin]
    of a ``width`` x ``height`` render of ``camera``."""
    cid = camera_id(model, camera)
    f = 0.5 * height / np.tan(np.deg2rad(model.cam_fovy[cid]) / 2)  # focal length [px]
    d_cam = np.array([(u + 0.5 - width / 2) / f, -(v + 0.5 - height / 2) / f, -1.0])
    d = data.cam_xmat[cid].reshape(3, 3) @ d_cam
    return data.cam_xpos[cid].copy(), d / np.linalg.norm(d)


def camera_id(model, camera: str, fixed: bool = False) -> int:
    """The camera's id; ``fixed``: refuse a camera that moves with a body (its pose would need the robot's state)."""
    import mujoco

    cid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
    if cid < 0:
        names = [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_CAMERA, i) for i in range(model.ncam)]
        raise ValueError(f"viewer_camera={camera!r}: the model has no such camera (it has {names})")
    if fixed and model.cam_bodyid[cid] != 0:
        raise ValueError(f"viewer_camera={camera!r} moves with the robot; the viewer needs a fixed camera (topview, "
                         "agentview)")
    return cid


def pixel_to_plane(model, data, camera: str, u: float, v: float, width: int, height: int,
                   plane_z_m: float) -> np.ndarray | None:
    """The world point [m] where the ray through pixel (u, v) meets ``z = plane_z_m`` (None: it does not, ahead)."""
    origin, d = camera_ray(model, data, camera, u, v, width, height)
    if abs(d[2]) < 1e-9 or (plane_z_m - origin[2]) / d[2] <= 0:
        return None
    return origin + d * (plane_z_m - origin[2]) / d[2]


def world_to_pixel(model, data, camera: str, p: np.ndarray, width: int, height: int) -> tuple[int, int]:
    """The inverse of :func:`camera_ray`: pixel of world point ``p`` (for drawing the goal)."""
    cid = camera_id(model, camera)
    f = 0.5 * height / np.tan(np.deg2rad(model.cam_fovy[cid]) / 2)
    q = data.cam_xmat[cid].reshape(3, 3).T @ (np.asarray(p) - data.cam_xpos[cid])
    return int(round(width / 2 - 0.5 + f * q[0] / -q[2])), int(round(height / 2 - 0.5 - f * q[1] / -q[2]))


def goal_refusal(policy) -> str | None:
    """Why ``policy`` takes no goal (None: it does, an ITPS-steered policy)."""
    kind = (getattr(policy, "steering", None) or {}).get("type")
    if kind == "itps":
        return None
    return ("goals need steering.type=itps (this run is unsteered)" if kind is None
            else f"steering.type={kind} takes no goal; goals need steering.type=itps")


class GoalViewer:
    """The window: ``show(frame)`` draws it and pumps mouse events; ``take_goal()`` returns a new goal (a point (3,)
    or a path (M, 3) [m]) once per accepted click or drag, else None. ``refuse``: why every goal is refused."""

    def __init__(self, model, data, camera: str, size_px: int, plane_z_m: float, refuse: str | None = None):
        import cv2

        camera_id(model, camera, fixed=True)
        self.cv2, self.model, self.data, self.camera, self.size = cv2, model, data, camera, size_px
        self.plane_z_m, self.refuse = plane_z_m, refuse
        self.status = "click: point goal, drag: path, q: quit" if refuse is None else f"view only: {refuse}"
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
            if self.refuse is not None:
                raise ValueError(self.refuse)
        except ValueError as exc:
            self.status, self.clicks[-1]["refused"] = f"refused: {exc}", str(exc)
            print(f"[viewer] {self.status}", flush=True)
            return
        self._new = goal
        self.status = f"goal {'path' if drag else np.round(goal, 3).tolist()}"
        self.clicks[-1]["goal_m"] = goal.tolist()

    @property
    def pending(self) -> bool:
        """A goal was given and not yet taken."""
        return self._new is not None

    def take_goal(self) -> np.ndarray | None:
        goal, self._new = self._new, None
        return goal

    def show(self, frame_rgb: np.ndarray, wait_ms: int = 1) -> int:
        """Draw ``frame_rgb`` (resized to the window), the current goal and the status; the key pressed or -1."""
        cv2 = self.cv2
        img = np.ascontiguousarray(frame_rgb[..., ::-1])
        if img.shape[:2] != (self.size, self.size):  # a served camera image: its geometry scales with the window
            img = cv2.resize(img, (self.size, self.size), interpolation=cv2.INTER_LINEAR)
        if self.goal is not None:
            pts = [world_to_pixel(self.model, self.data, self.camera, p, self.size, self.size)
                   for p in self.goal.reshape(-1, 3)]
            for a, b in zip(pts, pts[1:]):
                cv2.line(img, a, b, (0, 200, 255), 2)
            cv2.circle(img, pts[-1], 6, (0, 0, 255), 2)
        for i in range(0, min(len(self.status), 180), 60):  # wrapped: a refusal names the box it left
            cv2.putText(img, self.status[i:i + 60], (6, 16 + 16 * (i // 60)), cv2.FONT_HERSHEY_SIMPLEX, 0.42,
                        (255, 255, 255), 1)
        cv2.imshow(WINDOW, img)
        return cv2.waitKey(max(1, int(wait_ms))) & 0xFF

    def close(self) -> None:
        self.cv2.destroyWindow(WINDOW)
        self.cv2.waitKey(1)


def load_goals(path) -> dict[tuple[int, int], np.ndarray]:
    """``viewer_goals=PATH``: a viewer run's eval.json / summary.json (its ``viewer.goals``) or a JSON list of
    ``{seed, step, goal_m}`` -> {(seed, step): goal}."""
    from armflow.policies.steering import check_goal

    try:
        data = json.loads(Path(path).read_text())
        rows = data["viewer"]["goals"] if isinstance(data, dict) else data
        return {(int(r["seed"]), int(r["step"])): check_goal(r["goal_m"]) for r in rows}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SystemExit(f"viewer_goals={path}: expected a viewer run's eval.json / summary.json (viewer.goals) or "
                         f"a JSON list of {{seed, step, goal_m}}: {exc}") from None


class GoalSession:
    """One run's goals: the window (None: headless replay), the replayed goals, the record of every goal applied.
    ``begin(seed)`` at each episode start, ``poll(step)`` before each step's action, ``show(frame)`` per frame."""

    def __init__(self, policy, viewer: GoalViewer | None, replay: dict | None = None):
        self.policy, self.viewer, self.replay = policy, viewer, dict(replay or {})
        self.goals: list[dict] = []
        self.seed, self.quit = -1, False

    def begin(self, seed: int) -> None:
        self.seed = int(seed)
        if goal_refusal(self.policy) is None:  # the episode starts with the configured goal (or none)
            spec_goal = self.policy.spec.goal
            self.policy.goal_m = None  # ITPSPolicy: no goal = the base policy's chunk
            if spec_goal:
                self.policy.set_goal(spec_goal)
        if self.viewer is not None:
            self.viewer.goal = None
            print(f"[viewer] episode seed {self.seed}", flush=True)

    def poll(self, step: int) -> None:
        """Apply the goal the user gave (or the replay holds) for this step; the next chunk is sampled with it."""
        goal = self.replay.pop((self.seed, int(step)), None)
        live = self.viewer.take_goal() if self.viewer is not None else None
        goal = live if live is not None else goal
        if goal is None:
            return
        refusal = goal_refusal(self.policy)
        if refusal is not None:
            raise SystemExit(f"viewer_goals: {refusal}")
        self.policy.set_goal(goal)
        if self.viewer is not None:
            self.viewer.goal = goal
        self.goals.append({"seed": self.seed, "step": int(step), "goal_m": np.asarray(goal).tolist(),
                           "kind": "path" if np.ndim(goal) == 2 else "point"})
        print(f"[viewer] seed {self.seed} step {step}: goal {np.round(goal, 3).tolist()}", flush=True)

    def show(self, frame: np.ndarray | None, wait_ms: int = 1) -> bool:
        """Draw a frame; True when the user pressed q (end the run)."""
        if self.viewer is not None and frame is not None:
            self.quit = self.quit or self.viewer.show(frame, wait_ms) == ord("q")
        return self.quit

    def hold(self, frame_fn, wait_s: float, tick=None) -> None:
        """Before an episode's first step: keep showing ``frame_fn()`` until the first goal or ``wait_s`` [s];
        ``tick()`` runs every frame (deploy: the bridge heartbeat)."""
        deadline = time.monotonic() + float(wait_s)
        while self.viewer is not None and not self.viewer.pending and time.monotonic() < deadline:
            if self.show(frame_fn(), 20):
                break
            if tick is not None:
                tick()

    def record(self, camera: str) -> dict:
        clicks = self.viewer.clicks if self.viewer is not None else []
        return {"camera": camera, "goals": self.goals, "clicks": clicks,
                "refused": [c for c in clicks if "refused" in c], "quit": self.quit}

    def close(self) -> None:
        if self.viewer is not None:
            self.viewer.close()


def goal_timeline(diagnostics: list[dict]) -> list[dict]:
    """The goal each run of consecutive chunk calls was sampled with: ``[{first_chunk, chunks, goal_m}]`` (calls
    without a goal left out): the steering diagnostics' proof that a clicked goal was applied."""
    runs: list[dict] = []
    for i, d in enumerate(diagnostics):
        g = d.get("goal_m")
        if g is None:
            continue
        if runs and runs[-1]["goal_m"] == g and runs[-1]["first_chunk"] + runs[-1]["chunks"] == i:
            runs[-1]["chunks"] += 1
        else:
            runs.append({"first_chunk": i, "chunks": 1, "goal_m": g})
    return runs


def add_goal_record(result: dict, session: GoalSession, policy, camera: str) -> None:
    """The run's summary gains ``viewer`` (the goals, clicks, refusals) and the steering diagnostics
    ``goals_applied``."""
    result["viewer"] = session.record(camera)
    if result.get("steering"):
        result["steering"]["diagnostics"]["goals_applied"] = goal_timeline(getattr(policy, "diagnostics", []))
