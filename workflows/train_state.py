"""Resumable training state without pickle: tensors in safetensors, everything else in JSON.

Layout of a state dir: ``training_state.safetensors`` (optimizer moments, torch RNG, extra tensors)
+ ``training_state.json`` (step, param groups, numpy/python RNG, user scalars). Written tmp-then-rename
so a SIGKILL leaves the previous complete state in place.
"""
from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

TENSORS, META = "training_state.safetensors", "training_state.json"


def _flatten_optimizer(opt_state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, scalars = {}, {}
    for pid, per_param in opt_state["state"].items():
        for name, value in per_param.items():
            if torch.is_tensor(value):
                tensors[f"optim.{pid}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{name}"] = value
    return tensors, {"param_groups": opt_state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    for key, value in meta["scalars"].items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_training_state(
    directory: str | os.PathLike,
    step: int,
    optimizers: dict[str, torch.optim.Optimizer],
    schedulers: dict[str, Any] | None = None,
    extra_tensors: dict[str, torch.Tensor] | None = None,
    extra: dict | None = None,
) -> Path:
    """Save optimizer(s), LR scheduler(s), RNGs and counters atomically into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {"rng.torch": torch.get_rng_state()}
    meta: dict[str, Any] = {"step": int(step), "optimizers": {}, "schedulers": {}, "extra": extra or {}}
    for name, opt in optimizers.items():
        t, m = _flatten_optimizer(opt.state_dict())
        tensors.update({f"{name}/{k}": v for k, v in t.items()})
        meta["optimizers"][name] = m
    for name, sched in (schedulers or {}).items():
        meta["schedulers"][name] = sched.state_dict()
    for key, value in (extra_tensors or {}).items():
        tensors[f"extra/{key}"] = value.detach().cpu().contiguous()
    np_state = np.random.get_state()
    meta["rng"] = {
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }
    tmp_t, tmp_m = directory / (TENSORS + ".tmp"), directory / (META + ".tmp")
    save_file(tensors, str(tmp_t))
    tmp_m.write_text(json.dumps(meta, default=float))
    os.replace(tmp_t, directory / TENSORS)
    os.replace(tmp_m, directory / META)
    return directory


def load_training_state(
    directory: str | os.PathLike,
    optimizers: dict[str, torch.optim.Optimizer],
    schedulers: dict[str, Any] | None = None,
) -> tuple[int, dict, dict[str, torch.Tensor]]:
    """Restore what ``save_training_state`` wrote; returns (step, extra, extra_tensors)."""
    directory = Path(directory)
    try:
        tensors = load_file(str(directory / TENSORS))
        meta = json.loads((directory / META).read_text())
    except (OSError, ValueError) as exc:
        raise FileNotFoundError(f"cannot resume from {directory}: training state missing or corrupt ({exc})") from None
    for name, opt in optimizers.items():
        prefix = f"{name}/"
        own = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        opt.load_state_dict(_unflatten_optimizer(own, meta["optimizers"][name]))
    for name, sched in (schedulers or {}).items():
        sched.load_state_dict(meta["schedulers"][name])
    torch.set_rng_state(tensors["rng.torch"])
    kind, keys, *rest = meta["rng"]["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
    py = meta["rng"]["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    extra_tensors = {k[len("extra/"):]: v for k, v in tensors.items() if k.startswith("extra/")}
    return int(meta["step"]), meta["extra"], extra_tensors
