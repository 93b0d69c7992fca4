"""Resumable training state without pickle: tensors in safetensors, everything else in JSON.

Layout of a state dir: ``training_state.safetensors`` (optimizer moments, torch RNG, extra tensors)
+ ``training_state.json`` (step, param groups, numpy/python RNG, user scalars). Written tmp-then-rename
so a SIGKILL leaves the previous complete state in place. Whole checkpoint dirs (weights + state)
are swapped by ``commit_state_dir`` and found again by ``newest_state_dir`` (train and finetune).
"""
from __future__ import annotations

import json
import os
import random
import shutil
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


# ---------------------------------------------------------------- swapping whole state dirs
COMPLETE = "COMPLETE.json"  # written last into a finished state dir: {"step", "files": {rel: bytes}}


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _siblings(cur: Path) -> tuple[Path, Path]:
    return cur.with_name(cur.name + ".tmp"), cur.with_name(cur.name + ".old")


def commit_state_dir(tmp: Path, cur: Path, step: int) -> None:
    """Mark `tmp` complete, then swap it in for `cur` (the previous one sits in `<cur>.old` meanwhile).

    The marker lists every file with its size, so a dir is known complete (or a half-deleted
    `.old` known incomplete) wherever a kill lands; `newest_state_dir` picks the newest complete
    one among `cur`, `.tmp` and `.old`, so no rename window loses the checkpoint.
    """
    files = {p.relative_to(tmp).as_posix(): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
    for rel in files:
        _fsync_file(tmp / rel)
    marker = tmp / COMPLETE
    marker.write_text(json.dumps({"step": int(step), "files": files}))
    _fsync_file(marker)
    _, old = _siblings(cur)
    shutil.rmtree(old, ignore_errors=True)
    if cur.exists():
        os.replace(cur, old)
    os.replace(tmp, cur)
    shutil.rmtree(old, ignore_errors=True)


def _complete_step(path: Path, legacy_ok: bool) -> int | None:
    """Step of a complete state dir, None if incomplete. `legacy_ok`: a dir without the marker
    (written before it existed) counts as complete when it only got there by a rename."""
    try:
        marker = json.loads((path / COMPLETE).read_text())
    except FileNotFoundError:
        if not legacy_ok:
            return None
        try:
            return int(json.loads((path / META).read_text())["step"])
        except (OSError, ValueError, KeyError):
            return None
    except (OSError, ValueError):
        return None
    for rel, size in marker["files"].items():
        if not (path / rel).is_file() or (path / rel).stat().st_size != size:
            return None
    return int(marker["step"])


def newest_state_dir(cur: Path) -> Path | None:
    """Roll an interrupted `commit_state_dir` forward or back; returns `cur` or None if no state.

    Candidates are `cur`, `<cur>.tmp` (complete only with its marker) and `<cur>.old`
    (without a marker only when `cur` is missing: a half-deleted `.old` exists only next to
    `cur`); the newest complete one is renamed to `cur`, ties going to `cur`.
    """
    tmp, old = _siblings(cur)
    found = [(step, path) for path, step in ((cur, _complete_step(cur, True)), (tmp, _complete_step(tmp, False)),
                                             (old, _complete_step(old, not cur.exists()))) if step is not None]
    if not found:
        return None
    step, best = max(found, key=lambda f: f[0])  # max keeps the first of equals: cur before tmp/old
    if best == tmp:
        shutil.rmtree(old, ignore_errors=True)
        if cur.exists():
            os.replace(cur, old)
        os.replace(tmp, cur)
    elif best == old:
        shutil.rmtree(cur, ignore_errors=True)
        os.replace(old, cur)
    if best != cur:
        print(f"[resume] {cur}: using the newest complete state, step {step}, left in {best.name} by an "
              f"interrupted save")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    return cur


def truncate_metrics(path: Path, step: int) -> None:
    """Drop metrics rows logged after `step` (they are logged again after a resume from `step`).

    A kill mid-line leaves a partial last line: it is dropped too. Rewritten tmp-then-rename.
    """
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and row.get("step", step + 1) <= step:
            keep.append(line + "\n")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(keep))
    os.replace(tmp, path)
