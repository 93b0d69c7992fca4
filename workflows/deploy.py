"""``armflow deploy``: run a trained policy on a robot through the bridge (policy side).

* lockstep server (sim): each chunk of ``n_action_steps`` actions is sent at once, stamped with the
  sim time of the observation it was conditioned on; the server executes exactly one env step per
  waypoint and publishes every state, which feeds the observation history. With the same seeds
  and the same sampler noise this rollout equals a direct in-sim rollout (see the e2e test).
* realtime server: asynchronous chunking. The robot executes the buffered chunk while the next one
  is computed; inference starts when the remaining buffered time <= p95(inference) + margin (the
  cold first inference excluded); stale waypoints are dropped by the server's scheduler.

Writes ``summary.json`` (``success_rate``, ``rtt_p50_us``, ``rtt_p99_us``, inference times, per
episode results) and, when the server publishes camera frames, MP4s.
"""
from __future__ import annotations

import time
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

    def next_chunk(self) -> np.ndarray:
        """The next ``n_action_steps`` actions ``(T_a, D_a)``; records the inference time."""
        t0 = time.perf_counter()
        chunk = self.runner.predict()[0]
        self.inference_ms.append((time.perf_counter() - t0) * 1e3)
        return chunk[: self.policy.n_action_steps].astype(np.float64)


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
                         frames: list | None = None) -> dict:
    state = client.reset(seed)
    episode = client.status["episode"]
    agent.reset(state, seed)
    client.arm(action_space)
    dt_ns = int(round(1e9 / client.welcome["servo_rate_hz"]))
    steps, ret, done, success = 0, 0.0, False, False
    while not done and steps < max_steps:
        acts, grip = split_action(agent.next_chunk(), action_space)
        client.send_chunk(acts, t0_ns=state.t_capture_ns, dt_ns=dt_ns, action_space=action_space, gripper=grip,
                          obs_seq=steps)
        for _ in range(len(acts)):
            target = steps + 1
            state = client.wait_state(lambda b: b["episode"] == episode and b["step"] >= target, timeout_s=30.0)
            steps += 1
            ret += float(state.extras.get("reward", 0.0))
            agent.observe(state)
            _add_frame(frames, state)
            done, success = _done(state)
            if done or steps >= max_steps:
                break
    client.disarm()
    return {"seed": seed, "success": success, "return": ret, "length": steps}


def run_episode_realtime(client: BridgeClient, agent: ChunkAgent, seed: int, action_space: str, max_steps: int,
                         margin_ms: float, frames: list | None = None, stall_s: float = 10.0) -> dict:
    state = client.reset(seed) if client.info().is_sim else client.read_state()
    agent.reset(state, seed)
    client.arm(action_space)
    dt_ns = int(round(1e9 / client.welcome["servo_rate_hz"]))
    last_step, steps, ret, done, success = client.status["step"], 0, 0.0, False, False
    buffer_end_ns, first = 0, True
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
        warm = agent.inference_ms[1:]  # the cold first inference is excluded from the estimate
        lead_ns = (np.percentile(warm, 95) if warm else 0.0) * 1e6 + margin_ms * 1e6
        if not done and (first or buffer_end_ns - client.server_now_ns() <= lead_ns):
            acts, grip = split_action(agent.next_chunk(), action_space)
            t0 = state.t_capture_ns + dt_ns  # action 0 belongs to the step after the observation
            client.send_chunk(acts, t0, dt_ns, action_space, gripper=grip, obs_seq=last_step)
            buffer_end_ns, first = t0 + len(acts) * dt_ns, False
        else:
            client.heartbeat()
            time.sleep(min(0.005, dt_ns / 4e9))
    client.disarm()
    return {"seed": seed, "success": success, "return": ret, "length": steps}


def deploy(client: BridgeClient, policy, episodes: int, seed: int, action_space: str = "ee_delta",
           max_steps: int = 1000, margin_ms: float = 30.0, video_episodes: int = 0) -> tuple[dict, list]:
    """Run ``episodes`` episodes; return (summary, per-episode frame lists for videos)."""
    if action_space not in client.welcome["action_dims"]:
        raise SystemExit(f"armflow deploy: robot does not accept {action_space}; "
                         f"it has {client.welcome['action_dims']}")
    per, videos = [], []
    for i in range(episodes):
        agent = ChunkAgent(policy)
        frames = [] if i < video_episodes else None
        if client.lockstep:
            res = run_episode_lockstep(client, agent, seed + i, action_space, max_steps, frames)
        else:
            res = run_episode_realtime(client, agent, seed + i, action_space, max_steps, margin_ms, frames)
        res["inference_ms_p50"] = float(np.median(agent.inference_ms))
        per.append(res)
        if frames:
            videos.append((res, frames))
        print(f"[deploy] episode {i} seed {seed + i}: success={res['success']} length={res['length']}", flush=True)
    rtt_us = np.asarray(client.rtt_ns, float) / 1e3
    summary = {"episodes": len(per), "success_rate": float(np.mean([r["success"] for r in per])),
               "mean_return": float(np.mean([r["return"] for r in per])),
               "mean_length": float(np.mean([r["length"] for r in per])),
               "rtt_p50_us": float(np.percentile(rtt_us, 50)), "rtt_p99_us": float(np.percentile(rtt_us, 99)),
               "timing": client.welcome["timing"], "limits_hash": client.welcome["limits_hash"],
               "clamps": dict(client.status.get("clamps", {})), "per_episode": per}
    return summary, videos


def main(cfg: DictConfig) -> dict:
    from armflow.policies import load_policy
    from armflow.workflows.common import write_json
    from armflow.workflows.media import write_mp4
    from armflow.workflows.steering import apply_steering, steering_summary

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
    try:
        summary, videos = deploy(client, policy, int(cfg.episodes), int(cfg.seed), cfg.action_space,
                                 int(cfg.max_steps), float(cfg.inference_margin_ms), int(cfg.video_episodes))
    finally:
        client.close()
    fps = float(client.welcome["servo_rate_hz"])
    summary["videos"] = []
    for res, frames in videos:
        tag = "success" if res["success"] else "failure"
        summary["videos"].append(str(write_mp4(out / "videos" / f"seed{res['seed']}_{tag}.mp4", frames, fps=fps)))
    summary["checkpoint"], summary["endpoint"] = str(cfg.checkpoint), cfg.endpoint
    if steering is not None:
        summary["steering"] = steering_summary(policy, steering)
    write_json(out / "summary.json", summary)
    print(f"[deploy] success {summary['success_rate']:.2f} over {summary['episodes']} episodes; "
          f"rtt p50 {summary['rtt_p50_us']:.0f} us p99 {summary['rtt_p99_us']:.0f} us")
    return summary
