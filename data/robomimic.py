"""robomimic HDF5 <-> LeRobot v3.0, in the layout robomimic's `SequenceDataset` reads with default arguments.

robomimic layout (what export writes, what import reads):

    data                      attrs: total (frames), env_args (JSON: env_name, type, env_kwargs[, env_version])
    data/demo_<i>             attrs: num_samples (T)[, task]
        obs/<key>, next_obs/<key>    (T, ...) low-dim float, images `<cam>_image` uint8 (T, H, W, 3)
        actions (T, D_a), rewards (T,) float64, dones (T,) int64, states (T, D) when known
    mask/train, mask/valid    demo names as bytes (robomimic's split script's filter keys)

Feature mapping: `observation.state` is split into named obs keys (`STATE_LAYOUTS`, robosuite's names;
quaternions written x y z w as robosuite reports them; armflow holds w x y z), by `key[i]` feature names,
or kept whole as `obs/state`; `observation.images.<cam>` <-> `obs/<cam>_image`;
`observation.environment_state` <-> `states`; another `observation.<x>` <-> `obs/<x>`; any other frame
feature (`next.success`, ...) <-> a dataset of that name in the demo group. `next_obs[t]` is `obs[t + 1]`,
the last frame repeated (a LeRobot episode ends at its last observation). `data.attrs["armflow"]` (JSON:
fps, robot_type, features, state layout) lets import rebuild the dataset exactly; robomimic ignores it.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np
from tqdm import tqdm

from armflow.data.errors import DatasetError
from armflow.data.layout import DEFAULT_FEATURES, atomic_write_json
from armflow.data.lerobot import LeRobotWriter
from armflow.data.reader import LeRobotDataset

ENV_ARGS_PATH = "meta/robomimic_env_args.json"
META_ATTR = "armflow"
ROBOSUITE_TYPE, GYM_TYPE = 1, 2  # robomimic's EnvType values (robomimic/envs/env_base.py)
_NAME_RE = re.compile(r"^(.*)\[(\d+)\]$")
_FIXED = {"action": "actions", "next.reward": "rewards", "next.done": "dones",
          "observation.environment_state": "states"}


@dataclass(frozen=True)
class ObsSegment:
    """One named robomimic obs key inside `observation.state`: `size` columns, in layout order."""

    key: str
    size: int
    quats: tuple[int, ...] = ()  # offsets of w x y z quaternions inside the segment (x y z w in the file)


_EEF = (ObsSegment("robot0_eef_pos", 3), ObsSegment("robot0_eef_quat", 4, (0,)))
_NATIVE = (*_EEF, ObsSegment("robot0_gripper_opening", 1))  # finger separation [m]: not robosuite's 2 joints
_ROBOSUITE = (*_EEF, ObsSegment("robot0_gripper_qpos", 2))
# armflow task -> layout of observation.state followed by observation.environment_state (the split layout's two
# vectors, or the combined layout's one; README "Interfaces": native and robosuite state layouts);
# `object` is robosuite's object-state: per cube pos (3), quat (4), offset (3); Can/Square: to-eef pos, quat,
# pos, quat.
STATE_LAYOUTS: dict[str, tuple[ObsSegment, ...]] = {
    "lift": (*_NATIVE, ObsSegment("object", 10, (3,))),
    "lift_hard": (*_NATIVE, ObsSegment("object", 10, (3,))),
    "pick_either": (*_NATIVE, ObsSegment("object", 20, (3, 13))),
    "robosuite/Lift": (*_ROBOSUITE, ObsSegment("object", 10, (3,))),
    "robosuite/Can": (*_ROBOSUITE, ObsSegment("object", 14, (3, 10))),
    "robosuite/Square": (*_ROBOSUITE, ObsSegment("object", 14, (3, 10))),
}


def _robosuite_tasks() -> dict[str, str]:
    """armflow task -> robosuite env name (the adapter's table)."""
    from armflow.sim.robosuite_env import _TASKS

    return {task: env_name for task, (env_name, _) in _TASKS.items()}


def _get(h5: h5py.File, path: str, hdf5_path: Path):
    if path not in h5:
        raise DatasetError(hdf5_path, f"missing {path!r} inside the HDF5 file")
    return h5[path]


def _demo_names(data: h5py.Group) -> list[str]:
    names = [n for n in data.keys() if re.fullmatch(r"demo_\d+", n)]
    return sorted(names, key=lambda n: int(n.split("_")[1]))


def _swap_quats(values: np.ndarray, quats: Sequence[int], to_xyzw: bool) -> np.ndarray:
    """Reorder each quaternion at column offset q: w x y z -> x y z w (or back)."""
    out = values.copy()
    for q in quats:
        order = [1, 2, 3, 0] if to_xyzw else [3, 0, 1, 2]
        out[:, q:q + 4] = values[:, [q + i for i in order]]
    return out


def _h5_path(feature: str) -> str:
    """Path of a non-state frame feature inside a demo group (module docstring's mapping)."""
    if feature in _FIXED:
        return _FIXED[feature]
    if feature.startswith("observation.images."):
        return f"obs/{feature.rsplit('.', 1)[-1]}_image"
    if feature.startswith("observation."):
        return f"obs/{feature[len('observation.'):]}"
    return feature


# ------------------------------------------------------------------------------------------------- export
def _first_task(ds: LeRobotDataset) -> str:
    return ds.episode_task(0) if ds.num_episodes else ""


def _env_state_dim(ds: LeRobotDataset) -> int:
    feat = ds.features.get("observation.environment_state")
    return int(np.prod(feat["shape"])) if feat else 0


def export_layout(ds: LeRobotDataset) -> tuple[ObsSegment, ...]:
    """How `observation.state` (followed by `observation.environment_state` when the task's layout spans both,
    as the split layout does) splits into obs keys: the task's layout, else its `key[i]` names, else whole."""
    feat = ds.features.get("observation.state")
    if feat is None:
        return ()
    dim = int(np.prod(feat["shape"]))
    layout = STATE_LAYOUTS.get(_first_task(ds), ())
    if layout and sum(s.size for s in layout) in (dim, dim + _env_state_dim(ds)):
        return layout
    matches = [_NAME_RE.match(str(n)) for n in feat.get("names") or []]
    if len(matches) == dim and all(matches):
        runs = [(k, len(list(g))) for k, g in itertools.groupby(m.group(1) for m in matches)]
        if len({k for k, _ in runs}) == len(runs):  # each key one contiguous run
            return tuple(ObsSegment(k, n) for k, n in runs)
    return (ObsSegment("state", dim),)


def default_env_args(ds: LeRobotDataset) -> dict:
    """env_args robomimic can make: robosuite tasks as robosuite envs (type 1), other tasks as armflow's
    gymnasium id (type 2, e.g. `armflow/lift-v0`), cameras as the env's camera settings."""
    task = _first_task(ds) or "unknown"
    cams = {k.rsplit(".", 1)[-1]: ds.features[k]["shape"] for k in ds.video_keys}
    robosuite = _robosuite_tasks()
    if task in robosuite:
        kwargs: dict = {"robots": ["Panda"], "control_freq": ds.fps, "reward_shaping": True,
                        "has_renderer": False, "has_offscreen_renderer": bool(cams),
                        "use_object_obs": True, "use_camera_obs": bool(cams), "ignore_done": True}
        if cams:  # robosuite renders every camera at one size
            height, width, _ = next(iter(cams.values()))
            kwargs.update(camera_names=list(cams), camera_heights=int(height), camera_widths=int(width))
        env_args = {"env_name": robosuite[task], "type": ROBOSUITE_TYPE, "env_kwargs": kwargs}
        try:  # the recording's controller, as robomimic's own files carry it (robosuite's default otherwise)
            from armflow.sim.robosuite_env import _import_robosuite

            suite = _import_robosuite()
            kwargs["controller_configs"] = suite.load_composite_controller_config(robot="Panda")
            env_args["env_version"] = suite.__version__
        except ImportError:
            pass
        return env_args
    from armflow.sim.registry import ENVS

    if task in ENVS:
        from armflow.sim.gym_registration import gym_id

        return {"env_name": gym_id(task), "type": GYM_TYPE,
                "env_kwargs": {"cameras": list(cams)} if cams else {}}
    return {"env_name": task, "type": GYM_TYPE, "env_kwargs": {}}


def split_demos(n_demos: int, valid_ratio: float, seed: int) -> tuple[list[str], list[str]]:
    """(train, valid) demo names: a seeded `valid_ratio` share for validation (at least one of >= 2 demos)."""
    if not 0.0 <= valid_ratio < 1.0:
        raise ValueError(f"valid_ratio must be in [0, 1), got {valid_ratio}")
    n_valid = 0 if n_demos < 2 or valid_ratio == 0 else max(1, int(valid_ratio * n_demos))
    valid = set(np.random.default_rng(seed).permutation(n_demos)[:n_valid].tolist())
    names = [f"demo_{i}" for i in range(n_demos)]
    return [n for i, n in enumerate(names) if i not in valid], [n for i, n in enumerate(names) if i in valid]


def _write_obs(grp: h5py.Group, key: str, values: np.ndarray) -> None:
    """obs/<key> and next_obs/<key> (obs shifted by one, the last frame repeated)."""
    grp.create_dataset(f"obs/{key}", data=values)
    grp.create_dataset(f"next_obs/{key}", data=np.concatenate([values[1:], values[-1:]]))


def _export_episode(ds: LeRobotDataset, i: int, grp: h5py.Group, layout: Sequence[ObsSegment]) -> int:
    ep = ds.episode(i)
    n = len(ep["index"])
    grp.attrs["num_samples"] = n
    grp.attrs["task"] = ds.episode_task(i)
    if layout:
        state, col = ep["observation.state"].reshape(n, -1), 0
        if sum(s.size for s in layout) > state.shape[1]:  # the split layout: the object keys come from env state
            state = np.concatenate([state, ep["observation.environment_state"].reshape(n, -1)], axis=1)
        for seg in layout:
            _write_obs(grp, seg.key, _swap_quats(state[:, col:col + seg.size], seg.quats, to_xyzw=True))
            col += seg.size
    for key in ds.video_keys:
        _write_obs(grp, _h5_path(key)[4:], ds.episode_frames(i, key))
    for key, feat in ds.features.items():
        if key in ds.video_keys or key == "observation.state" or key not in ep or key in DEFAULT_FEATURES:
            continue
        values, path = ep[key].reshape(n, *feat["shape"]), _h5_path(key)
        if path.startswith("obs/"):
            _write_obs(grp, path[4:], values)
        elif path in ("rewards", "dones"):
            grp.create_dataset(path, data=values.reshape(n).astype(np.float64 if path == "rewards" else np.int64))
        else:
            grp.create_dataset(path, data=values)
    if "next.done" not in ep:
        grp.create_dataset("dones", data=(np.arange(n) == n - 1).astype(np.int64))
    if "next.reward" not in ep:
        grp.create_dataset("rewards", data=np.zeros(n))
    return n


def export_robomimic(dataset: LeRobotDataset | str | Path, hdf5_path: str | Path, env_args: dict | None = None,
                     valid_ratio: float = 0.1, seed: int = 0, progress: bool = False) -> Path:
    """Write `dataset` as a robomimic HDF5 file (atomically: a temp file renamed); returns the path.

    env_args default: the imported file's (meta/robomimic_env_args.json), else `default_env_args`.
    valid_ratio/seed: the `mask/valid` share and the seed that draws it (`mask/train` is the rest).
    """
    ds = dataset if isinstance(dataset, LeRobotDataset) else LeRobotDataset(dataset)
    hdf5_path = Path(hdf5_path)
    if env_args is None:
        side = ds.root / ENV_ARGS_PATH
        env_args = json.loads(side.read_text()) if side.is_file() else default_env_args(ds)
    train, valid = split_demos(ds.num_episodes, valid_ratio, seed)
    layout = export_layout(ds)
    features = {k: {f: v for f, v in feat.items() if f != "info"} for k, feat in ds.features.items()
                if k not in DEFAULT_FEATURES}
    meta = {"fps": ds.fps, "robot_type": ds.robot_type, "features": features,
            "state_layout": [[s.key, s.size, list(s.quats)] for s in layout]}
    tmp = hdf5_path.with_name(hdf5_path.name + ".tmp")
    with h5py.File(tmp, "w") as h5:
        data = h5.create_group("data")
        total = 0
        for i in tqdm(range(ds.num_episodes), desc=f"export {hdf5_path.name}", unit="ep", disable=not progress):
            total += _export_episode(ds, i, data.create_group(f"demo_{i}"), layout)
        data.attrs["total"] = total
        data.attrs["env_args"] = json.dumps(env_args)
        data.attrs[META_ATTR] = json.dumps(meta)
        h5.create_dataset("mask/train", data=np.array(train, dtype="S"))
        h5.create_dataset("mask/valid", data=np.array(valid, dtype="S"))
    os.replace(tmp, hdf5_path)
    return hdf5_path


# ------------------------------------------------------------------------------------------------- import
def _task_of_env(env_args: dict) -> str | None:
    """The armflow task whose env `env_args` names (robosuite env name or armflow gymnasium id)."""
    name = env_args.get("env_name")
    if env_args.get("type") == ROBOSUITE_TYPE:
        return next((t for t, e in _robosuite_tasks().items() if e == name), None)
    from armflow.sim.gym_registration import gym_id
    from armflow.sim.registry import ENVS

    return next((t for t in ENVS if gym_id(t) == name), None)


def _import_layout(obs0: h5py.Group, meta: dict, env_task: str | None,
                   obs_keys: Sequence[str] | None) -> tuple[ObsSegment, ...]:
    """The obs keys that make `observation.state`: named, recorded by export, the env's layout, or all 2-D."""
    def sizes(keys):
        return tuple(ObsSegment(k, int(obs0[k].shape[1]) if k in obs0 else 0) for k in keys)

    if obs_keys is not None:
        return sizes(obs_keys)
    if "state_layout" in meta:
        return tuple(ObsSegment(k, int(n), tuple(q)) for k, n, q in meta["state_layout"])
    layout = STATE_LAYOUTS.get(env_task or "", ())
    if layout and all(s.key in obs0 and obs0[s.key].shape[1:] == (s.size,) for s in layout):
        return layout
    return sizes(sorted(k for k in obs0 if obs0[k].ndim == 2))


def _import_features(h5, demo: str, layout, image_keys, hdf5_path: Path) -> dict[str, dict]:
    """Features of a file armflow did not write: state from `layout`, images, actions, rewards, dones, states."""
    names = [f"{s.key}[{i}]" for s in layout for i in range(s.size)]
    feats = {"observation.state": {"dtype": "float32", "shape": (len(names),), "names": names}} if layout else {}
    for k in image_keys:
        shape = _get(h5, f"data/{demo}/obs/{k}", hdf5_path).shape[1:]
        cam = k[: -len("_image")] if k.endswith("_image") else k
        feats[f"observation.images.{cam}"] = {"dtype": "video", "shape": tuple(shape),
                                              "names": ["height", "width", "channels"]}
    actions = _get(h5, f"data/{demo}/actions", hdf5_path)
    feats["action"] = {"dtype": "float32", "shape": (actions.shape[1],), "names": None}
    feats["next.reward"] = {"dtype": "float32", "shape": (1,), "names": None}
    feats["next.done"] = {"dtype": "bool", "shape": (1,), "names": None}
    if f"data/{demo}/states" in h5:
        states = h5[f"data/{demo}/states"]
        feats["observation.environment_state"] = {"dtype": "float32", "shape": (states.shape[1],), "names": None}
    return feats


def _feature_path(key: str, image_keys: dict[str, str]) -> str:
    return f"obs/{image_keys[key]}" if key in image_keys else _h5_path(key)


def import_robomimic(hdf5_path: str | Path, root: str | Path, obs_keys: Sequence[str] | None = None,
                     image_keys: Sequence[str] | None = None, fps: int | None = None, task: str | None = None,
                     video_codec: str = "auto", progress: bool = False) -> LeRobotDataset:
    """Convert a robomimic HDF5 file into a new LeRobot v3.0 dataset at `root`.

    A file armflow exported comes back as it was (features, state layout, tasks, fps). Otherwise
    obs_keys: low-dim obs concatenated (in this order) into `observation.state` (default: the layout of the
      env `env_args` names when the file has its keys, quaternions turned w x y z, else every 2-D obs, sorted);
    image_keys: uint8 `(N, H, W, 3)` obs stored as videos (default: every 4-D obs);
    fps: default the file's (armflow) or 20; task: episode task (default: the demo's; the env's armflow
    task when the state has that env's layout; env_args env_name; "robomimic"). `next_obs` and `mask/` are not imported (obs holds them).
    """
    hdf5_path = Path(hdf5_path)
    if not hdf5_path.is_file():
        raise DatasetError(hdf5_path, "missing robomimic HDF5 file")
    with h5py.File(hdf5_path, "r") as h5:
        data = _get(h5, "data", hdf5_path)
        demos = _demo_names(data)
        if not demos:
            raise DatasetError(hdf5_path, "no 'data/demo_N' groups inside the HDF5 file")
        env_args = json.loads(data.attrs.get("env_args", "{}"))
        meta = json.loads(data.attrs.get(META_ATTR, "{}"))
        env_task = _task_of_env(env_args)
        obs0 = _get(h5, f"data/{demos[0]}/obs", hdf5_path)
        layout = _import_layout(obs0, meta, env_task, obs_keys)
        cams = list(image_keys) if image_keys is not None else sorted(k for k in obs0 if obs0[k].ndim == 4)
        if "features" in meta and obs_keys is None and image_keys is None:
            feats = {k: dict(f, shape=tuple(f["shape"])) for k, f in meta["features"].items()}
            video = {k: _h5_path(k)[4:] for k, f in feats.items() if f["dtype"] == "video"}
        else:
            feats = _import_features(h5, demos[0], layout, cams, hdf5_path)
            video = dict(zip([k for k in feats if feats[k]["dtype"] == "video"], cams))  # feature -> obs key
        paths = [f"obs/{s.key}" for s in layout] + [_feature_path(k, video) for k in feats
                                                     if k not in ("observation.state", "next.reward", "next.done")]
        for demo in demos:  # fail before writing anything
            for rel in paths:
                _get(h5, f"data/{demo}/{rel}", hdf5_path)
        fps = fps or int(meta.get("fps", 20))
        matches_env = env_task is not None and layout == STATE_LAYOUTS.get(env_task)  # obs as the env gives them
        default_task = task or (env_task if matches_env else None) or env_args.get("env_name") or "robomimic"
        with LeRobotWriter(root, fps, feats, robot_type=meta.get("robot_type"), video_codec=video_codec) as writer:
            atomic_write_json(Path(root) / ENV_ARGS_PATH, env_args)
            for demo in tqdm(demos, desc=f"import {hdf5_path.name}", unit="ep", disable=not progress):
                _write_demo(h5[f"data/{demo}"], layout, feats, video, writer)
                writer.save_episode(task or str(h5[f"data/{demo}"].attrs.get("task", default_task)))
    return LeRobotDataset(root)


def _write_demo(grp: h5py.Group, layout, feats: dict, video: dict[str, str], writer: LeRobotWriter) -> None:
    n = len(grp["actions"])
    columns: dict[str, np.ndarray] = {}
    if "observation.state" in feats:
        parts = [_swap_quats(np.asarray(grp[f"obs/{s.key}"], np.float32).reshape(n, -1), s.quats, to_xyzw=False)
                 for s in layout]
        state = np.concatenate(parts, axis=1) if parts else np.zeros((n, 0), np.float32)
        # a layout that spans environment_state too (the split layout): that part is imported from `states`
        columns["observation.state"] = state[:, : int(np.prod(feats["observation.state"]["shape"]))]
    for key, feat in feats.items():
        path = _feature_path(key, video)
        if key == "observation.state" or (path not in grp and key in ("next.reward", "next.done")):
            continue
        values = grp[path][()]
        columns[key] = values if key in video else values.reshape(n, *feat["shape"]).astype(feat["dtype"])
    columns.setdefault("next.reward", np.zeros((n, 1), np.float32))
    columns.setdefault("next.done", (np.arange(n) == n - 1).reshape(n, 1))
    for t in range(n):
        writer.add_frame({k: v[t] for k, v in columns.items() if k in feats})
