"""Shared workflow plumbing: config composition, run directories, metric logging."""
from __future__ import annotations

import datetime as _dt
import json
import os
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict


def compose_config(config_name: str, overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """Compose ``configs/<config_name>.yaml`` with Hydra overrides; unknown keys fail loudly."""
    from hydra import compose, initialize_config_module
    from hydra.errors import ConfigCompositionException

    try:
        with initialize_config_module(config_module="armflow.configs", version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=list(overrides))
    except ConfigCompositionException as exc:
        cause = exc.__cause__ or exc
        raise SystemExit(f"armflow {config_name}: bad override: {cause}") from None
    return cfg


def prepare_run_dir(cfg: DictConfig, command: str) -> Path:
    """Resolve ``cfg.out`` (default ``runs/<command>/<timestamp>``), create it, save the resolved config."""
    with open_dict(cfg):
        if not cfg.get("out"):
            stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            cfg.out = str(Path("runs") / command / stamp)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
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


def bench_line(results: dict) -> str:
    """The final line every benchmark prints."""
    return "BENCH_JSON: " + json.dumps(results, default=float)
