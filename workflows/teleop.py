"""``armflow teleop``: teleoperate a robot through the ZeroMQ bridge with a keyboard or SpaceMouse, recording
a LeRobot v3 dataset like ``armflow collect`` does.

The robot side is ``armflow serve`` (e.g. ``robot=sim_panda robot_options.task=lift lockstep=true`` for
the sim task, whose ``ee_delta`` action is the env's 7-D action). Each device action becomes one
``ee_delta`` command (gripper mapped from -1..1 to 0..1); in lockstep the next state is the one of the
next server step; the dataset rows are the task observation from ``state.extras`` plus the action and
the episode flags.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from armflow.hardware.teleop_session import DriverTarget, record_episodes


def bridge_target(client) -> DriverTarget:
    """A ``DriverTarget`` over a connected ``BridgeClient``: sim reset + ARM per episode, lockstep-aware stepping."""
    is_sim = bool(client.info().is_sim)

    def reset(seed):
        state = client.reset(int(seed or 0)) if is_sim else client.read_state()
        client.arm("ee_delta")
        return state

    def next_state():
        if client.lockstep:
            step = int(client.status.get("step", 0))
            episode = client.status.get("episode")
            return client.wait_state(lambda b: b["step"] > step or b["episode"] != episode, timeout_s=10.0)
        return client.latest_state()

    return DriverTarget(client, next_state=next_state, reset=reset)


def observation_features(state) -> dict[str, dict]:
    """LeRobot features of the task observation carried in ``state.extras`` + action and RL columns."""
    features: dict[str, dict] = {}
    for key, value in state.extras.items():
        if not key.startswith("observation."):
            continue
        arr = np.asarray(value)
        if key.startswith("observation.images."):
            features[key] = {"dtype": "video", "shape": tuple(arr.shape), "names": ["height", "width", "channels"]}
        else:
            features[key] = {"dtype": "float32", "shape": tuple(arr.shape), "names": None}
    if not features:
        raise RuntimeError("the bridge state carries no observation.* extras; serve a sim task (robot_options.task=...)")
    features["action"] = {"dtype": "float32", "shape": (7,), "names": None}
    for key, dtype in (("next.reward", "float32"), ("next.done", "bool"), ("next.truncated", "bool"),
                       ("next.success", "bool")):
        features[key] = {"dtype": dtype, "shape": (1,), "names": None}
    return features


def teleop_through_bridge(endpoint: str, device, root: str | Path, task: str, episodes: int, seed: int = 0,
                          max_steps: int | None = None, realtime: bool = True, allow_real: bool = False) -> dict:
    """Connect to the bridge at ``endpoint``, teleoperate ``episodes`` episodes with ``device``, record to ``root``."""
    from armflow.control.client import BridgeClient
    from armflow.data import LeRobotWriter

    client = BridgeClient(endpoint, role="controller", allow_real=allow_real)
    client.connect()
    try:
        if "ee_delta" not in client.info().modes:
            raise RuntimeError(f"robot {client.info().name} does not accept ee_delta; teleop needs it")
        target = bridge_target(client)
        first = client.reset(seed) if client.info().is_sim else client.read_state()
        with LeRobotWriter(root, fps=int(round(target.fps)), features=observation_features(first),
                           robot_type=client.info().name) as writer:
            summary = record_episodes(target, device, writer, task, episodes, seed, max_steps, realtime)
        client.disarm()
    finally:
        client.close()
        if hasattr(device, "close"):
            device.close()
    return summary


def main(cfg: DictConfig) -> dict:
    from armflow.hardware.teleop import DEVICES, make_device
    from armflow.workflows.common import write_json

    if cfg.device not in DEVICES:
        raise SystemExit(f"armflow teleop: unknown device {cfg.device!r}; valid: {', '.join(DEVICES)}")
    out = Path(cfg.out)
    root = Path(cfg.record) if cfg.get("record") else out / "dataset"
    summary = teleop_through_bridge(cfg.endpoint, make_device(cfg.device), root, cfg.task, int(cfg.episodes),
                                    int(cfg.seed), cfg.get("max_steps"), bool(cfg.realtime), bool(cfg.allow_real))
    summary["dataset"] = str(root)
    write_json(out / "summary.json", summary)
    print(f"teleop: saved {summary['episodes_saved']} episode(s) to {root}")
    return summary
