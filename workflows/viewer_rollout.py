"""``viewer=true`` on ``armflow evaluate`` and ``armflow deploy``: the rollout shown live in the ITPS viewer's window
(``armflow.workflows.itps_viewer``), a click / drag steering an ITPS policy from its next chunk.

evaluate: one env, in-process, stepped one action at a time (the window shows every step, paced at the task's
control rate), so ``n_envs`` is forced to 1; the sampler noise is seeded per episode as in any evaluation.
``viewer_goals=RUN/eval.json`` replays a run's goals at the same seeds and steps (``viewer=false``: headless).

deploy: the frame is the served camera's image in the bridge state (``armflow serve ... cameras=[topview]``:
the sim driver renders it each step), shown at the window's size; the camera geometry that maps a click to the
workspace comes from a local model of the served task (the robot ``sim_task_<task>``: a fixed camera's pose does
not depend on the state). A real robot would need a calibrated camera: refused.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from armflow.workflows.itps_viewer import GoalSession, GoalViewer, add_goal_record, goal_refusal, load_goals

VIDEO_PX = 256  # MP4 frames of the viewer's episodes


def wants_viewer(cfg) -> bool:
    return bool(cfg.get("viewer")) or bool(cfg.get("viewer_goals"))


def _window(base, cfg, policy, command: str) -> GoalViewer | None:
    if not cfg.get("viewer"):
        return None
    if not hasattr(base, "model"):
        raise SystemExit(f"armflow {command} viewer=true: task {cfg.get('task')!r} has no MuJoCo scene to show; "
                         "use a cube task (lift, pick_either, ...)")
    try:
        return GoalViewer(base.model, base._data, str(cfg.viewer_camera), int(cfg.viewer_size),
                          float(getattr(base, "rest_height_m", 0.0)), goal_refusal(policy))
    except ValueError as exc:
        raise SystemExit(f"armflow {command} viewer=true: {exc}") from None


def check_viewer_keys(cfg, command: str) -> None:
    size, wait = cfg.get("viewer_size"), cfg.get("viewer_wait_s")
    if not isinstance(size, int) or size < 64 or not isinstance(wait, (int, float)) or wait < 0:
        raise SystemExit(f"armflow {command}: viewer_size={size} must be an int >= 64 [px] and viewer_wait_s={wait} "
                         "a number >= 0 [s]")


def check_evaluate_cfg(cfg) -> None:
    """The viewer runs the sync executor in one env; what it cannot honour is refused naming the key."""
    check_viewer_keys(cfg, "evaluate")
    if str(cfg.get("executor") or "sync") != "sync" or float(cfg.get("delay_ms") or 0) > 0:
        raise SystemExit(f"armflow evaluate viewer=true / viewer_goals=: executor={cfg.get('executor')} delay_ms="
                         f"{cfg.get('delay_ms')} is not supported with the viewer (it steps the sync executor); drop "
                         "executor=/delay_ms=")
    if cfg.get("record"):
        raise SystemExit("armflow evaluate viewer=true / viewer_goals=: record= is not supported with the viewer; "
                         "record without it")
    if int(cfg.n_envs) > 1:
        print(f"[evaluate] viewer: one env in-process (n_envs={cfg.n_envs} ignored)", flush=True)


def evaluate_viewer(policy, cfg, overrides: dict, out: Path, source: str) -> tuple[dict, GoalSession]:
    """``armflow evaluate viewer=true``: (the result as ``evaluate_policy`` gives it, plus ``videos``; the session)."""
    import mujoco

    from armflow.sim import make_env
    from armflow.workflows.evaluate import check_compatible, episode_summary
    from armflow.workflows.media import write_mp4

    check_evaluate_cfg(cfg)
    env = make_env(cfg.task, **overrides)
    base, size, camera = env.unwrapped, int(cfg.viewer_size), str(cfg.viewer_camera)
    check_compatible(policy, env.observation_space, int(env.action_space.shape[0]), source, cfg.task)
    policy.eval()
    n_video = int(cfg.video_episodes)
    replay = load_goals(cfg.viewer_goals) if cfg.get("viewer_goals") else None
    session = GoalSession(policy, _window(base, cfg, policy, "evaluate"), replay)
    shown = (session.viewer is not None or n_video) and hasattr(base, "model")  # toy2d: no scene, no video
    renderer = mujoco.Renderer(base.model, size, size) if shown else None
    results, videos = [], []

    def frame():
        renderer.update_scene(base._data, camera=camera)
        return renderer.render()

    try:
        for i, seed in enumerate(int(cfg.seed) + k for k in range(int(cfg.episodes))):
            frames = [] if i < n_video else None
            results.append(run_viewer_episode(env, policy, session, seed, frame if renderer else None, frames,
                                              float(cfg.viewer_wait_s)))
            if frames:
                tag = "success" if results[-1]["success"] else "failure"
                videos.append(str(write_mp4(out / "videos" / f"seed{seed}_{tag}.mp4", frames, fps=1.0 / env.ctrl_dt)))
            if session.quit:
                break
    finally:
        session.close()
        if renderer is not None:
            renderer.close()
        env.close()
    return {**episode_summary(cfg.task, results), "n_envs": 1, "videos": videos, "policy_view_videos": []}, session


def run_viewer_episode(env, policy, session: GoalSession, seed: int, frame, frames: list | None,
                       wait_s: float) -> dict:
    """One episode stepped one action at a time: each step polls the goals, then shows the frame (paced at the
    control rate when there is a window); ``frames`` (a list) collects the video's frames."""
    from armflow.workflows.rollout import PolicyRunner

    runner = PolicyRunner(policy, 1)
    obs, _ = env.reset(seed=seed)
    runner.start({k: v[None] for k, v in obs.items()}, seeds=[seed])
    session.begin(seed)
    session.hold(frame, wait_s)
    dt = float(env.ctrl_dt) if session.viewer is not None else 0.0
    info, steps, ret, t_next = {"success": False}, 0, 0.0, time.monotonic()
    while not session.quit:
        session.poll(steps)
        obs, reward, terminated, truncated, info = env.step(runner.act()[0])
        runner.observe({k: v[None] for k, v in obs.items()})
        steps, ret, t_next = steps + 1, ret + float(reward), t_next + dt
        img = frame() if frame is not None else None
        if frames is not None:
            frames.append(_small(img))
        if session.show(img, int((t_next - time.monotonic()) * 1e3)) or terminated or truncated:
            break
    return {"seed": seed, "success": bool(info["success"]), "return": ret, "rl_return": ret, "length": steps,
            "mode": int(info.get("mode", -1)), **({"quit": True} if session.quit else {})}


def _small(img: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.resize(img, (VIDEO_PX, VIDEO_PX), interpolation=cv2.INTER_AREA)


class BridgeViewer:
    """``armflow deploy viewer=true``: ``start(state, seed)`` after each reset (holds for the first goal,
    heartbeating the bridge), ``on_state(state, steps) -> quit`` on every state the robot publishes."""

    def __init__(self, policy, client, cfg):
        from armflow.sim import make_env

        check_viewer_keys(cfg, "deploy")
        name = str(client.welcome["robot"]["name"])
        if cfg.get("viewer") and not name.startswith("sim_task_"):
            raise SystemExit(f"armflow deploy viewer=true: the robot {name!r} is not a served sim task (armflow serve "
                             "robot=sim_panda task=...): the click -> workspace map needs the scene's camera model")
        self.client, self.camera, self.env = client, str(cfg.viewer_camera), None
        self.key = f"observation.images.{self.camera}"
        window = None
        if cfg.get("viewer"):
            self.env = make_env(name[len("sim_task_"):])
            self.env.reset(seed=0)  # computes the fixed cameras' poses
            window = _window(self.env.unwrapped, cfg, policy, "deploy")
        self.session = GoalSession(policy, window, load_goals(cfg.viewer_goals) if cfg.get("viewer_goals") else None)
        self.wait_s = float(cfg.viewer_wait_s)
        self.dt = 1.0 / float(client.welcome["servo_rate_hz"]) if client.lockstep else 0.0
        self._t_next = 0.0

    def frame(self, state) -> np.ndarray | None:
        if self.session.viewer is None:
            return None
        if self.key not in state.extras:
            raise SystemExit(f"armflow deploy viewer=true: the bridge state has no {self.key!r} (it has "
                             f"{sorted(k for k in state.extras if k.startswith('observation.'))}); serve the camera: "
                             f"armflow serve robot=sim_panda task=... cameras=[{self.camera}]")
        return np.asarray(state.extras[self.key])

    def start(self, state, seed: int) -> None:
        self.session.begin(seed)
        self.session.hold(lambda: self.frame(state), self.wait_s, tick=self.client.heartbeat)
        self.session.poll(0)
        self._t_next = time.monotonic()

    def on_state(self, state, steps: int) -> bool:
        self._t_next += self.dt  # lockstep: shown at the servo rate (the sim steps as fast as it can)
        quit_ = self.session.show(self.frame(state), int((self._t_next - time.monotonic()) * 1e3))
        self.session.poll(steps)
        return quit_

    def finish(self, summary: dict, policy) -> None:
        add_goal_record(summary, self.session, policy, self.camera)

    def close(self) -> None:
        self.session.close()
        if self.env is not None:
            self.env.close()
