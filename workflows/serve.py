"""``armflow serve``: run the bridge server (robot side) until SIGINT/SIGTERM.

Examples::

    armflow serve robot=sim_panda task=lift mode=lockstep endpoint=ipc:///tmp/armflow-bridge
    armflow serve robot=fake_arm mode=realtime servo_rate_hz=500 endpoint=tcp://127.0.0.1:5555

Never imports torch: the same command runs on a robot's controller PC.
"""
from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from armflow.control.launch import serve_until_signal
from armflow.control.security import CurveConfig
from armflow.control.server import ServerConfig

TIMING_MODES = ("realtime", "lockstep")


def server_config(cfg: DictConfig) -> ServerConfig:
    """Translate the serve YAML into a ``ServerConfig`` (validating the mode and robot options)."""
    if cfg.mode not in TIMING_MODES:
        raise SystemExit(f"armflow serve: mode={cfg.mode!r}; valid: {', '.join(TIMING_MODES)}")
    options = dict(OmegaConf.to_container(cfg.robot_options, resolve=True))
    if cfg.get("task"):
        options["task"] = cfg.task
        if cfg.cameras:
            options["cameras"] = list(cfg.cameras)
    elif cfg.cameras:
        raise SystemExit("armflow serve: cameras=... needs task=... (the sim task renders them)")
    curve = None
    if cfg.curve.secret_key_file:
        curve = CurveConfig(str(cfg.curve.secret_key_file), cfg.curve.allowed_clients_dir)
    return ServerConfig(
        robot=cfg.robot, robot_options=options, limits=cfg.limits and str(cfg.limits), endpoint=cfg.endpoint,
        pub_endpoint=cfg.pub_endpoint, lockstep=cfg.mode == "lockstep", servo_rate_hz=cfg.servo_rate_hz,
        state_rate_hz=float(cfg.state_rate_hz), t_cmd_ms=cfg.t_cmd_ms, lease_timeout_ms=int(cfg.lease_timeout_ms),
        exec_latency_ms=float(cfg.exec_latency_ms), actuator_latency_ms=float(cfg.actuator_latency_ms), curve=curve,
        rt_priority=int(cfg.rt_priority))


def main(cfg: DictConfig) -> dict:
    from armflow.workflows.common import write_json

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    scfg = server_config(cfg)
    info: dict = {}

    def on_ready(server) -> None:
        info.update(endpoint=server.endpoint, pub_endpoint=server.pub_endpoint, robot=server.ready["info"],
                    limits=server.limits_name, limits_hash=server.limits.hash, timing=cfg.mode,
                    servo_rate_hz=server.ready["servo_rate_hz"], t_cmd_ms=server.t_cmd_ms)
        write_json(Path(cfg.out) / "serve.json", info)
        print(f"[serve] {cfg.robot} ({cfg.mode}) on {server.endpoint} (state {server.pub_endpoint}); "
              f"limits {server.limits_name} hash {server.limits.hash}; Ctrl-C to stop", flush=True)

    serve_until_signal(scfg, on_ready)
    print("[serve] stopped cleanly", flush=True)
    return info
