"""robomimic HDF5 <-> LeRobot v3.0.

robomimic layout: `data/demo_N/{obs/<key>, actions, rewards, dones, states}`, attrs
`data.env_args` (JSON with the env `type`: 1 robosuite, 2 gym, 3 ig_momart) and
`demo_N.num_samples`. On import, `observation.state` is the concatenation of the chosen
low-dim obs keys (feature `names` record `key[i]` so export can split it back),
image obs `<cam>_image` become videos `observation.images.<cam>`, `states` become
`observation.environment_state`, and env_args are kept in `meta/robomimic_env_args.json`.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np

from armflow.data.errors import DatasetError
from armflow.data.layout import atomic_write_json
from armflow.data.lerobot import LeRobotWriter
from armflow.data.reader import LeRobotDataset

ENV_ARGS_PATH = "meta/robomimic_env_args.json"
_NAME_RE = re.compile(r"^(.*)\[(\d+)\]$")


def _get(h5: h5py.File, path: str, hdf5_path: Path):
    if path not in h5:
        raise DatasetError(hdf5_path, f"missing {path!r} inside the HDF5 file")
    return h5[path]


def _demo_names(data: h5py.Group) -> list[str]:
    names = [n for n in data.keys() if re.fullmatch(r"demo_\d+", n)]
    return sorted(names, key=lambda n: int(n.split("_")[1]))


def _camera_name(obs_key: str) -> str:
    return obs_key[: -len("_image")] if obs_key.endswith("_image") else obs_key


def _features(h5, demo: str, obs_keys, image_keys, hdf5_path: Path) -> dict[str, dict]:
    names = [f"{k}[{i}]" for k in obs_keys for i in range(_get(h5, f"data/{demo}/obs/{k}", hdf5_path).shape[1])]
    feats = {"observation.state": {"dtype": "float32", "shape": (len(names),), "names": names}}
    for k in image_keys:
        shape = _get(h5, f"data/{demo}/obs/{k}", hdf5_path).shape[1:]
        feats[f"observation.images.{_camera_name(k)}"] = {"dtype": "video", "shape": tuple(shape),
                                                          "names": ["height", "width", "channels"]}
    actions = _get(h5, f"data/{demo}/actions", hdf5_path)
    feats["action"] = {"dtype": "float32", "shape": (actions.shape[1],), "names": None}
    feats["next.reward"] = {"dtype": "float32", "shape": (1,), "names": None}
    feats["next.done"] = {"dtype": "bool", "shape": (1,), "names": None}
    if f"data/{demo}/states" in h5:
        states = h5[f"data/{demo}/states"]
        feats["observation.environment_state"] = {"dtype": "float32", "shape": (states.shape[1],), "names": None}
    return feats


def import_robomimic(hdf5_path: str | Path, root: str | Path, obs_keys: Sequence[str] | None = None,
                     image_keys: Sequence[str] | None = None, fps: int = 20, task: str | None = None,
                     video_codec: str = "auto") -> LeRobotDataset:
    """Convert a robomimic HDF5 file into a new LeRobot v3.0 dataset at `root`.

    obs_keys: low-dim obs concatenated (in this order) into `observation.state`
      (default: every 2-D obs). image_keys: uint8 `(N, H, W, 3)` obs stored as videos
      (default: every 4-D obs). task: episode task string (default: env_args env_name).
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
        obs0 = _get(h5, f"data/{demos[0]}/obs", hdf5_path)
        obs_keys = list(obs_keys) if obs_keys is not None else sorted(k for k in obs0 if obs0[k].ndim == 2)
        image_keys = list(image_keys) if image_keys is not None else sorted(k for k in obs0 if obs0[k].ndim == 4)
        feats = _features(h5, demos[0], obs_keys, image_keys, hdf5_path)
        for demo in demos:  # fail before writing anything
            for rel in ["actions", *(f"obs/{k}" for k in [*obs_keys, *image_keys])] + \
                    (["states"] if "observation.environment_state" in feats else []):
                _get(h5, f"data/{demo}/{rel}", hdf5_path)
        task = task or env_args.get("env_name") or "robomimic"
        with LeRobotWriter(root, fps, feats, robot_type=None, video_codec=video_codec) as writer:
            atomic_write_json(Path(root) / ENV_ARGS_PATH, env_args)
            for demo in demos:
                _write_demo(h5, demo, obs_keys, image_keys, feats, writer, hdf5_path)
                writer.save_episode(task)
    return LeRobotDataset(root)


def _write_demo(h5, demo: str, obs_keys, image_keys, feats, writer: LeRobotWriter, hdf5_path: Path) -> None:
    base = f"data/{demo}"
    actions = np.asarray(_get(h5, f"{base}/actions", hdf5_path), dtype=np.float32)
    n = len(actions)
    state = np.concatenate([np.asarray(_get(h5, f"{base}/obs/{k}", hdf5_path), np.float32).reshape(n, -1)
                            for k in obs_keys], axis=1) if obs_keys else np.zeros((n, 0), np.float32)
    images = {f"observation.images.{_camera_name(k)}": _get(h5, f"{base}/obs/{k}", hdf5_path)[()]
              for k in image_keys}
    rewards = np.asarray(h5[f"{base}/rewards"], np.float32) if f"{base}/rewards" in h5 else np.zeros(n, np.float32)
    dones = np.asarray(h5[f"{base}/dones"]).astype(bool) if f"{base}/dones" in h5 else np.arange(n) == n - 1
    states = None
    if "observation.environment_state" in feats:
        states = np.asarray(_get(h5, f"{base}/states", hdf5_path), np.float32)
    for t in range(n):
        frame = {"observation.state": state[t], "action": actions[t], "next.reward": rewards[t],
                 "next.done": dones[t], **{k: v[t] for k, v in images.items()}}
        if states is not None:
            frame["observation.environment_state"] = states[t]
        writer.add_frame(frame)


def _split_state(state: np.ndarray, names) -> dict[str, np.ndarray]:
    """`observation.state (T, D)` -> {obs_key: (T, d)} using `key[i]` feature names."""
    matches = [_NAME_RE.match(n) for n in names] if names else []
    if not matches or not all(matches):
        return {"state": state}
    out: dict[str, list[int]] = {}
    for col, m in enumerate(matches):
        out.setdefault(m.group(1), []).append(col)
    return {k: state[:, cols] for k, cols in out.items()}


def export_robomimic(dataset: LeRobotDataset | str | Path, hdf5_path: str | Path,
                     env_args: dict | None = None) -> Path:
    """Write `dataset` as a robomimic HDF5 file (atomically); returns the path.

    env_args default: the imported file's (meta/robomimic_env_args.json) or
    `{"env_name": <first task>, "type": 1, "env_kwargs": {}}`.
    """
    ds = dataset if isinstance(dataset, LeRobotDataset) else LeRobotDataset(dataset)
    hdf5_path = Path(hdf5_path)
    if env_args is None:
        side = ds.root / ENV_ARGS_PATH
        env_args = json.loads(side.read_text()) if side.is_file() else \
            {"env_name": ds.tasks[0] if ds.tasks else "unknown", "type": 1, "env_kwargs": {}}
    tmp = hdf5_path.with_name(hdf5_path.name + ".tmp")
    names = ds.features.get("observation.state", {}).get("names")
    with h5py.File(tmp, "w") as h5:
        data = h5.create_group("data")
        total = 0
        for i in range(ds.num_episodes):
            ep = ds.episode(i)
            n = len(ep["index"])
            grp = data.create_group(f"demo_{i}")
            grp.attrs["num_samples"] = n
            obs = grp.create_group("obs")
            if "observation.state" in ep:
                for key, values in _split_state(ep["observation.state"].reshape(n, -1), names).items():
                    obs.create_dataset(key, data=values)
            for key in ds.video_keys:
                obs.create_dataset(f"{key.rsplit('.', 1)[-1]}_image", data=ds.episode_frames(i, key))
            grp.create_dataset("actions", data=ep["action"].reshape(n, -1))
            reward = ep.get("next.reward", np.zeros(n, np.float32)).reshape(n)
            grp.create_dataset("rewards", data=reward.astype(np.float64))
            done = ep["next.done"].reshape(n) if "next.done" in ep else np.arange(n) == n - 1
            grp.create_dataset("dones", data=done.astype(np.int64))
            if "observation.environment_state" in ep:
                grp.create_dataset("states", data=ep["observation.environment_state"].reshape(n, -1))
            total += n
        data.attrs["total"] = total
        data.attrs["env_args"] = json.dumps(env_args)
    os.replace(tmp, hdf5_path)
    return hdf5_path
