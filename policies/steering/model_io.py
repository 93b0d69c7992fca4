"""Saving and loading a steering model (critic, dynamics model): ``config.json`` (format, version, the config
dataclass, the normaliser's offsets and scales, extras) + ``model.safetensors``; errors name the file."""
from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Mapping

import torch

from armflow.configs import build_config

CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"


def save_model(model: torch.nn.Module, directory: str | os.PathLike, fmt: tuple[str, int], cfg,
               norm_keys, extra: Mapping | None = None) -> Path:
    """``model``'s weights, and ``cfg`` with ``model.normalizer``'s stats of ``norm_keys`` under ``fmt`` (name, v)."""
    from safetensors.torch import save_file

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(out / WEIGHTS_FILE))
    stats = {k: {"offset": model.normalizer._buffer(k, "offset").tolist(),
                 "scale": model.normalizer._buffer(k, "scale").tolist()} for k in norm_keys}
    meta = {"format": fmt[0], "format_version": fmt[1], "config": asdict(cfg), "normalizer": stats,
            **dict(extra or {})}
    (out / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
    return out


def load_model(directory: str | os.PathLike, fmt: tuple[str, int], cls, cfg_cls, what: str):
    """Rebuild ``cls(cfg_cls(...))`` saved by ``save_model`` in eval mode; ``what`` names it in errors (e.g. "a
    critic from `armflow critic`")."""
    from safetensors.torch import load_file

    directory = Path(directory)
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{directory}: no {CONFIG_FILE} (is this {what}?)")
    meta = json.loads(path.read_text())
    if meta.get("format") != fmt[0] or meta.get("format_version") != fmt[1]:
        raise ValueError(f"{path}: format {meta.get('format')!r} v{meta.get('format_version')}; expected "
                         f"{fmt[0]!r} v{fmt[1]} ({what})")
    model = cls(build_config(cfg_cls, meta["config"], str(path)))
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"{directory}: no {WEIGHTS_FILE}")
    try:
        model.load_state_dict(load_file(str(weights)), strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{weights} does not match {path}: {str(exc).splitlines()[0]}") from None
    return model.eval()
