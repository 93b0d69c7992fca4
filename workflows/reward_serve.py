"""``armflow reward serve backend=openai url=... model=...``: a reward model in its own process over ZeroMQ."""
from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf


def backend_options(cfg: DictConfig) -> dict:
    """The backend's constructor keys: top-level ``url``/``model`` when set, then ``options``."""
    options = {k: cfg[k] for k in ("url", "model") if cfg.get(k) is not None}
    return {**options, **OmegaConf.to_container(cfg.options, resolve=True)}


def main(cfg: DictConfig) -> dict:
    from armflow.rewards.registry import make_reward_model
    from armflow.rewards.remote import check_endpoint, serve
    from armflow.workflows.common import write_json

    check_endpoint(str(cfg.endpoint), bool(cfg.allow_remote))  # before the backend starts anything
    model = make_reward_model(str(cfg.backend), **backend_options(cfg))
    if cfg.probe and hasattr(model, "probe"):  # e.g. does the VLM server return logprobs (openai backend)
        from armflow.rewards.http_json import RequestFailed

        try:
            print(f"[reward serve] probe: scoring={model.probe()}", flush=True)
        except RequestFailed as exc:  # the server may come up later: the first request probes again
            print(f"[reward serve] warning: probe failed ({exc.reason}); probing again on the first request",
                  flush=True)
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    start = time.monotonic()

    def ready() -> None:
        print(f"[reward serve] {model.backend} ({model.model_version}) on {cfg.endpoint}", flush=True)

    try:
        stats = serve(model, str(cfg.endpoint), stop, workers=int(cfg.workers), max_seconds=cfg.max_seconds,
                      on_ready=ready, allow_remote=bool(cfg.allow_remote))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        model.close()
    summary = {"backend": model.backend, "model_version": model.model_version, "endpoint": str(cfg.endpoint),
               **stats, "wall_time_s": time.monotonic() - start}
    write_json(Path(cfg.out) / "summary.json", summary)
    print(f"[reward serve] stopped: {stats['requests']} requests, {stats['queries']} queries, "
          f"{stats['invalid']} invalid", flush=True)
    return summary
