"""``armflow deploy``: run a trained policy on a robot through the bridge (policy side).

* lockstep server (sim): each chunk of ``n_action_steps`` actions is sent at once, stamped with the
  sim time of the observation it was conditioned on; the server executes exactly one env step per
  waypoint and publishes every state, which feeds the observation history. With the same seeds
  and the same sampler noise this rollout equals a direct in-sim rollout where the server's safety layer clamps
  nothing, and ``armflow evaluate limits=auto``'s rollout (the same layer in-process) always
  (tests/control/test_control_deploy_equiv.py); each episode reports the layer's ``clamps``.
* realtime server: asynchronous chunking. The robot executes the buffered chunk while the next one
  is computed; inference starts when the remaining buffered time <= p95(inference) + margin (the
  cold first inference excluded); stale waypoints are dropped by the server's scheduler.

Writes ``summary.json`` (``success_rate``, ``rtt_p50_us``, ``rtt_p99_us``, inference times, per
episode results) and, when the server publishes camera frames, MP4s.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from armflow.control.client import BridgeClient, BridgeError
from armflow.workflows.rollout import PolicyRunner

GRIPPER_DIM = 6  # the policy's 7-D action = ee delta (6) + gripper (-1 open .. +1 closed)


class ChunkAgent:
    """One robot's policy side (B = 1): the rollout core's ``PolicyRunner`` fed from bridge states, with the
    episode's sampler noise seeded by its seed as in ``armflow evaluate``."""

    def __init__(self, policy):
        self.policy, self.runner = policy, PolicyRunner(policy, 1)
        self.inference_ms: list[float] = []

    def obs_from(self, state) -> dict[str, np.ndarray]:
        missing = [k for k in self.policy.obs_spec if k not in state.extras]
        if missing:
            raise SystemExit(f"armflow deploy: the bridge state lacks {missing} needed by the policy "
                             f"(it has {sorted(k for k in state.extras if k.startswith('observation.'))}); "
                             "serve a matching task (task=..., cameras=...)")
        return {k: np.asarray(state.extras[k])[None] for k in self.policy.obs_spec}

    def reset(self, state, seed: int) -> None:
        from armflow.sim.obs_layout import combined_layout_problem

        problem = combined_layout_problem(self.policy.obs_spec, {k: np.shape(v) for k, v in state.extras.items()},
                                          "armflow deploy: the checkpoint", "the served robot")
        if problem:
            raise SystemExit(problem)
        self.runner.start(self.obs_from(state), seeds=[seed])

    def observe(self, state) -> None:
        self.runner.observe(self.obs_from(state))

    def next_chunk(self, hooks=None, inject_ms: float = 0.0, full: bool = False, windows=None) -> np.ndarray:
        """The next ``n_action_steps`` actions ``(T_a, D_a)`` (``full``: all T_p); records the inference time.
        ``hooks``: sampler hooks (RTC); ``inject_ms``: extra delay slept after inference (a slower model);
        ``windows``: obs windows taken when the chunk was asked for (inference in another thread)."""
        t0 = time.perf_counter()
        chunk = self.runner.predict(windows, hooks=hooks)[0]
        if inject_ms > 0:
            time.sleep(inject_ms / 1e3)
        self.inference_ms.append((time.perf_counter() - t0) * 1e3)
        return chunk[: None if full else self.policy.n_action_steps].astype(np.float64)


def split_action(acts: np.ndarray, action_space: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Policy actions ``(T, 7)`` -> bridge ``(T, 6)`` ee_delta + gripper ``(T,)`` in [0, 1]."""
    if action_space == "ee_delta" and acts.shape[1] == GRIPPER_DIM + 1:
        return acts[:, :GRIPPER_DIM], np.clip((acts[:, GRIPPER_DIM] + 1.0) / 2.0, 0.0, 1.0)
    return acts, None


def _done(state) -> tuple[bool, bool]:
    ex = state.extras
    return bool(ex.get("terminated", False) or ex.get("truncated", False)), bool(ex.get("success", False))


def _add_frame(frames: list | None, state) -> None:
    """Append the served cameras of ``state`` side by side (one video frame per robot step)."""
    from armflow.workflows.media import camera_row

    row = camera_row(state.extras) if frames is not None else None
    if row is not None:
        frames.append(row)


def run_episode_lockstep(client: BridgeClient, agent: ChunkAgent, seed: int, action_space: str, max_steps: int,
                         frames: list | None = None, viewer=None) -> dict:
    state = client.reset(seed)
    episode = client.status["episode"]
    agent.reset(state, seed)
    if viewer is not None:  # viewer=true: the window (a goal given before the first chunk steers it)
        viewer.start(state, seed)
    client.arm(action_space)
    dt_ns = int(round(1e9 / client.welcome["servo_rate_hz"]))
    steps, ret, done, success = 0, 0.0, False, False

    def on_state(st) -> bool:
        nonlocal steps, ret, done, success
        steps += 1
        ret += float(st.extras.get("reward", 0.0))
        agent.observe(st)
        _add_frame(frames, st)
        done, success = _done(st)
        return done or steps >= max_steps or (viewer is not None and viewer.on_state(st, steps))

    while not done and steps < max_steps:
        state = send_and_follow(client, state, agent.next_chunk(), action_space, dt_ns, on_state, episode)
    client.disarm()
    return {"seed": seed, "success": success, "return": ret, "length": steps}


def send_and_follow(client: BridgeClient, state, acts: np.ndarray, action_space: str, dt_ns: int, on_state,
                    episode: int | None = None):
    """Lockstep: send the chunk ``acts`` (T, D_a), conditioned on ``state``, and read the T states it makes, in
    order, calling ``on_state(state)`` on each (a True return stops reading: the caller disarms, which drops the
    rest). Returns the last state read."""
    episode = client.status["episode"] if episode is None else episode
    step0 = int(client.status["step"])
    acts, grip = split_action(acts, action_space)
    client.send_chunk(acts, t0_ns=state.t_capture_ns, dt_ns=dt_ns, action_space=action_space, gripper=grip,
                      obs_seq=step0)
    for k in range(len(acts)):
        target = step0 + k + 1
        state = client.wait_state(lambda b: b["episode"] == episode and b["step"] >= target, timeout_s=30.0)
        if on_state(state):
            break
    return state


@dataclass
class RealtimeOptions:
    """Realtime deploy: the executor (naive | rtc), RTC's overlap weight, the action alignment and injected delay."""

    executor: str = "naive"
    rtc_overlap: float = 0.5  # inpainting weight of the overlap after the frozen actions (policies.executors.soft_mask)
    action_offset_steps: int = 0  # action 0 <-> the servo tick that read the obs (1: the tick after, before the fix)
    inject_delay_ms: float = 0.0  # extra inference delay slept on the policy side (a bigger model, a remote GPU)
    jitter_ms: float = 0.0  # + U[0, jitter_ms) per chunk, seeded by the episode seed
    # s: start the next inference s servo steps after the last one's obs (the schedule of `evaluate exec_horizon=`);
    # None: when the current chunk's n_action_steps run out within the estimated delay + margin
    exec_horizon: int | None = None

    def __post_init__(self) -> None:
        if self.executor not in ("naive", "rtc"):
            raise ValueError(f"deploy executor={self.executor!r} in realtime mode; expected naive or rtc "
                             "(sync is lockstep mode: serve mode=lockstep)")


def _rtc_hooks(agent: ChunkAgent, prev: np.ndarray, shift: int, d_hat: int, overlap: float):
    from armflow.policies.executors import shifted, soft_mask
    from armflow.policies.realtime import rtc_hooks

    h = agent.policy.horizon
    d = min(d_hat, h // 2)
    s = min(max(shift, d), h - d)  # RTC needs d <= s <= H - d
    return rtc_hooks(agent.policy, shifted(prev, shift)[None], soft_mask(h, d, s, overlap)[None])


def run_episode_realtime(client: BridgeClient, agent: ChunkAgent, seed: int, action_space: str, max_steps: int,
                         margin_ms: float, frames: list | None = None, stall_s: float = 10.0,
                         opts: RealtimeOptions | None = None, viewer=None) -> dict:
    from armflow.policies.executors import DelayEstimator

    opts = opts or RealtimeOptions()
    state = client.reset(seed) if client.info().is_sim else client.read_state()
    agent.reset(state, seed)
    if viewer is not None:
        viewer.start(state, seed)
    client.arm(action_space)
    dt_ns = int(round(1e9 / client.welcome["servo_rate_hz"]))
    last_step, steps, ret, done, success = client.status["step"], 0, 0.0, False, False
    buffer_end_ns, first, prev, prev_step, pending, stale_chunks = 0, True, None, 0, None, 0
    pool = ThreadPoolExecutor(1, thread_name_prefix="deploy-inference")
    estimator, rng = DelayEstimator(dt_ns / 1e9, agent.policy.horizon // 2), np.random.default_rng([seed, 7])
    last_progress = time.monotonic()
    while not done and steps < max_steps:
        if time.monotonic() - last_progress > stall_s:
            raise BridgeError(f"no robot step for {stall_s} s (status {client.status.get('status')}: "
                              f"{client.status.get('reason')})", "stalled")
        for body, st in client.new_states(timeout_s=0.0):
            if body["step"] > last_step:
                last_progress = time.monotonic()
                last_step, steps, state = body["step"], steps + 1, st
                ret += float(st.extras.get("reward", 0.0))
                agent.observe(st)
                _add_frame(frames, st)
                done, success = _done(st)
                done = (viewer is not None and viewer.on_state(st, steps)) or done
        lead_ns = estimator.steps * dt_ns + margin_ms * 1e6  # the recent-max delay, the cold inference excluded
        due = (last_step + opts.action_offset_steps >= prev_step + opts.exec_horizon if opts.exec_horizon
               else buffer_end_ns - client.server_now_ns() <= lead_ns)
        if pending is None and not done and (first or due):
            obs_step = last_step + opts.action_offset_steps  # the servo step of this chunk's action 0
            hooks = None if opts.executor == "naive" or prev is None else _rtc_hooks(
                agent, prev, max(obs_step - prev_step, 0), estimator.steps, opts.rtc_overlap)
            inject = opts.inject_delay_ms + rng.random() * opts.jitter_ms
            # inference runs in its own thread on the windows of now, so this loop keeps reading states and
            # heartbeating the watchdog however long the model (or the injected delay) takes
            pending = (pool.submit(agent.next_chunk, hooks, inject, True, agent.runner.history.get()), state, obs_step,
                       last_step)
        if pending is not None and pending[0].done():
            (future, asked, obs_step, asked_step), pending = pending, None
            chunk = future.result()
            t0 = asked.t_capture_ns + opts.action_offset_steps * dt_ns
            if first:  # the robot held still waiting for the first chunk: it starts now, nothing is stale
                t0 = max(t0, client.server_now_ns() + dt_ns)
            estimator.record((client.server_now_ns() - asked.t_capture_ns) / 1e9)
            acts, grip = split_action(chunk, action_space)
            try:
                client.send_chunk(acts, t0, dt_ns, action_space, gripper=grip, obs_seq=asked_step)
            except BridgeError as exc:  # came too late to run (a delay not yet estimated): ask again at once
                if exc.code != "stale":
                    raise
                stale_chunks += 1
                continue
            # the servo step of the chunk's action 0 (later than obs_step for the first chunk, which started late):
            # RTC's prefix and the exec_horizon schedule count the actions run since then
            start_step = obs_step + round((t0 - asked.t_capture_ns) / dt_ns) - opts.action_offset_steps
            buffer_end_ns, first, prev, prev_step = t0 + agent.policy.n_action_steps * dt_ns, False, chunk, start_step
        else:
            client.heartbeat()
            time.sleep(min(0.005, dt_ns / 4e9))
    pool.shutdown(wait=True)
    client.disarm()
    return {"seed": seed, "success": success, "return": ret, "length": steps, "delay_steps_est": estimator.steps,
            "stale_chunks": stale_chunks}


def deploy(client: BridgeClient, policy, episodes: int, seed: int, action_space: str = "ee_delta",
           max_steps: int = 1000, margin_ms: float = 30.0, video_episodes: int = 0,
           opts: RealtimeOptions | None = None, viewer=None) -> tuple[dict, list]:
    """Run ``episodes`` episodes; return (summary, per-episode frame lists for videos)."""
    if action_space not in client.welcome["action_dims"]:
        raise SystemExit(f"armflow deploy: robot does not accept {action_space}; "
                         f"it has {client.welcome['action_dims']}")
    per, videos = [], []
    for i in range(episodes):
        agent = ChunkAgent(policy)
        frames = [] if i < video_episodes else None
        clamps0 = dict(client.status.get("clamps", {}))
        if client.lockstep:
            res = run_episode_lockstep(client, agent, seed + i, action_space, max_steps, frames, viewer)
        else:
            res = run_episode_realtime(client, agent, seed + i, action_space, max_steps, margin_ms, frames, opts=opts,
                                       viewer=viewer)
        res["inference_ms_p50"] = float(np.median(agent.inference_ms))
        # the safety layer's clamps in this episode (an episode the layer changed can differ from evaluate's,
        # unless evaluate ran under the same limits: ``limits=``)
        res["clamps"] = {k: n - clamps0.get(k, 0) for k, n in client.status.get("clamps", {}).items()
                         if n != clamps0.get(k, 0)}
        per.append(res)
        if frames:
            videos.append((res, frames))
        print(f"[deploy] episode {i} seed {seed + i}: success={res['success']} length={res['length']}", flush=True)
        if viewer is not None and viewer.session.quit:  # q in the window ends the run
            break
    rtt_us = np.asarray(client.rtt_ns, float) / 1e3
    summary = {"episodes": len(per), "success_rate": float(np.mean([r["success"] for r in per])),
               "mean_return": float(np.mean([r["return"] for r in per])),
               "mean_length": float(np.mean([r["length"] for r in per])),
               "rtt_p50_us": float(np.percentile(rtt_us, 50)), "rtt_p99_us": float(np.percentile(rtt_us, 99)),
               "timing": client.welcome["timing"], "limits_hash": client.welcome["limits_hash"],
               "clamps": dict(client.status.get("clamps", {})), "per_episode": per}
    return summary, videos


def realtime_options(cfg: DictConfig) -> RealtimeOptions:
    rt = cfg.get("realtime") or {}
    return RealtimeOptions(executor=str(cfg.get("executor") or "naive"), rtc_overlap=float(rt.get("rtc_overlap", 0.5)),
                           action_offset_steps=int(rt.get("action_offset_steps", 0)),
                           inject_delay_ms=float(cfg.get("inject_delay_ms") or 0.0),
                           jitter_ms=float(cfg.get("jitter_ms") or 0.0),
                           exec_horizon=int(rt["exec_horizon"]) if rt.get("exec_horizon") else None)


def main(cfg: DictConfig) -> dict:
    from armflow.policies import load_policy
    from armflow.workflows.common import write_json
    from armflow.workflows.media import write_mp4
    from armflow.workflows.steering import apply_steering, steering_summary
    from armflow.workflows.viewer_rollout import BridgeViewer, wants_viewer

    if not cfg.get("checkpoint"):
        raise SystemExit("armflow deploy: set checkpoint=DIR (a policy dir with config.json + model.safetensors)")
    torch.set_num_threads(int(cfg.num_threads))
    out = Path(cfg.out)
    policy, steering = apply_steering(load_policy(cfg.checkpoint), cfg.get("steering"))
    policy.eval()
    client = BridgeClient(cfg.endpoint, allow_real=bool(cfg.allow_real), t_cmd_ms=cfg.t_cmd_ms)
    try:
        client.connect()
    except BridgeError as exc:
        raise SystemExit(f"armflow deploy: cannot connect to {cfg.endpoint}: {exc} (is `armflow serve` running?)")
    viewer = None
    try:
        viewer = BridgeViewer(policy, client, cfg) if wants_viewer(cfg) else None
        summary, videos = deploy(client, policy, int(cfg.episodes), int(cfg.seed), cfg.action_space,
                                 int(cfg.max_steps), float(cfg.inference_margin_ms), int(cfg.video_episodes),
                                 realtime_options(cfg), viewer)
    finally:
        client.close()
        if viewer is not None:
            viewer.close()
    fps = float(client.welcome["servo_rate_hz"])
    summary["videos"] = []
    for res, frames in videos:
        tag = "success" if res["success"] else "failure"
        summary["videos"].append(str(write_mp4(out / "videos" / f"seed{res['seed']}_{tag}.mp4", frames, fps=fps)))
    summary["checkpoint"], summary["endpoint"] = str(cfg.checkpoint), cfg.endpoint
    if steering is not None:
        summary["steering"] = steering_summary(policy, steering)
    if viewer is not None:  # the goals given (viewer.goals) and, steered, the chunks they were applied to
        viewer.finish(summary, policy)
    write_json(out / "summary.json", summary)
    print(f"[deploy] success {summary['success_rate']:.2f} over {summary['episodes']} episodes; "
          f"rtt p50 {summary['rtt_p50_us']:.0f} us p99 {summary['rtt_p99_us']:.0f} us")
    return summary
