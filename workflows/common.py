"""Shared workflow plumbing: run directories, metric logging (config composition: ``workflows/config.py``)."""
from __future__ import annotations

import datetime as _dt
import json
import os
import time
from pathlib import Path
from typing import Sequence

from omegaconf import DictConfig, OmegaConf, open_dict

from armflow.workflows.config import ConfigError, compose_config  # noqa: F401 - re-exported for the workflows


def default_run_dir(command: str) -> Path:
    """``runs/<command>/<timestamp>``: where a run without ``out=`` writes."""
    return Path("runs") / command / _dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def prepare_run_dir(cfg: DictConfig, command: str, overrides: Sequence[str] = ()) -> Path:
    """Resolve ``cfg.out`` (default ``runs/<command>/<timestamp>``), create it and save the config there:
    ``config.yaml`` (resolved) and, as Hydra lays them out, ``.hydra/config.yaml`` and ``.hydra/overrides.yaml``."""
    with open_dict(cfg):
        if not cfg.get("out"):
            cfg.out = str(default_run_dir(command))
    out = Path(cfg.out)
    (out / ".hydra").mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    (out / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    (out / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(list(overrides))))
    return out


class MetricLogger:
    """JSONL + TensorBoard scalars under one run dir; every line is flushed (nothing lost on a crash)."""

    def __init__(self, out_dir: str | os.PathLike, filename: str = "metrics.jsonl", tensorboard: bool = True):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._file = open(self.out_dir / filename, "a", buffering=1)
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.out_dir / "tb"))
        self._t0 = time.monotonic()

    def log(self, step: int, metrics: dict[str, float]) -> None:
        row = {"step": int(step), "wall_time_s": round(time.monotonic() - self._t0, 3)}
        row.update({k: float(v) for k, v in metrics.items()})
        self._file.write(json.dumps(row) + "\n")
        if self._tb is not None:
            for key, value in metrics.items():
                self._tb.add_scalar(key, float(value), int(step))

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def write_json(path: str | os.PathLike, obj: dict) -> None:
    """Atomic JSON write (tmp + rename)."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=float))
    os.replace(tmp, path)


def train_steering_model(cfg, command: str, train) -> dict:
    """The shared body of ``armflow critic`` / ``armflow dynamics``: refuse a missing dataset or checkpoint naming
    the key, set the torch threads, run ``train(cfg, out)`` and write its summary to ``out/summary.json``."""
    import torch

    for key in ("dataset", "checkpoint"):
        if not cfg.get(key):
            raise SystemExit(f"armflow {command}: set {key}=... (configs/{command}.yaml: dataset = LeRobot dir(s), "
                             "checkpoint = the policy to steer)")
    torch.set_num_threads(int(cfg.num_threads))
    summary = train(cfg, Path(cfg.out))
    write_json(Path(cfg.out) / "summary.json", summary)
    return summary


def bench_line(results: dict) -> str:
    """The final line every benchmark prints."""
    return "BENCH_JSON: " + json.dumps(results, default=float)
