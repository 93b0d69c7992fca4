"""``armflow improve``: reset-free online improvement of a deployed policy through the bridge.

Modules: ``graph`` (skills, switching presets, stuck detection), ``detector`` (the learned success detector and
its audit), ``learner`` (a skill's DSRL noise actor learning asynchronously, WSRL warm start, intervention buffer),
``loop`` (the control loop over one continuous robot stream), ``recorder`` (the stream as a LeRobot v3 dataset),
``run`` (budget, evaluation, resumable state, summary), ``demo`` (the measured demonstration's assets),
``report``.
"""
from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig


def main(cfg: DictConfig) -> dict:
    from armflow.control.client import BridgeError
    from armflow.workflows.improve.demo import prepare_assets
    from armflow.workflows.improve.run import ImproveClient, run_improve
    from armflow.workflows.quickstart import start_server, stop_server

    out = Path(cfg.out)
    cfg = prepare_assets(cfg)
    server, endpoint = None, cfg.endpoint
    if not endpoint:  # the simulated arm in its own process, a persistent scene: the task never truncates
        endpoint = f"ipc:///tmp/armflow-improve-{os.getpid()}"
        server = start_server(cfg.task, endpoint, out / "serve", env={
            "cameras": list(cfg.cameras), "image_size": int(cfg.image_size), **dict(cfg.env or {})}, persistent=True)
    intervention = None
    if cfg.intervention != "none":
        from armflow.hardware.intervention import make_intervention

        intervention = make_intervention(str(cfg.intervention))
    # a lockstep sim on a loaded 2-core box can take over the default 0.5 s to ACK (the watchdog's T_cmd is 5 s)
    client = ImproveClient(endpoint, reply_timeout_s=float(cfg.reply_timeout_s))
    try:
        try:
            client.connect()
        except BridgeError as exc:
            raise SystemExit(f"armflow improve: cannot connect to {endpoint}: {exc} (is `armflow serve` running?)")
        client.start_heartbeat()
        summary = run_improve(cfg, client, intervention)
    finally:
        client.close()
        if intervention is not None:
            intervention.close()
        if server is not None:
            stop_server(server)
    sr = summary["success_rate"]
    print(f"[improve] forward success {sr['start']:.2f} -> {sr['final']:.2f}; scene resets after the first "
          f"{summary['scene_resets']}; needs-human {summary['needs_human']}; report: {summary['report']}")
    return summary
