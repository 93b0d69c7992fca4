"""`WindowDataset`: (observation history, action chunk) training windows for policies.

For global frame `i` at step `t` of its episode (length `L`):

    observation steps  t-T_o+1 ... t            (ends at the current frame)
    action steps                  t ... t+T_p-1 (starts at the current frame)

Windows never cross an episode boundary; steps outside `[0, L)` repeat the edge
frame (`pad_window`) and `action_is_pad` marks padded actions.

Camera frames are decoded once, when the dataset is built, into one uint8 array per camera
`(num_frames, 3, H, W)` (channels first, the policies' layout), so an item is an index into memory and
never a video decode. Build it before a `DataLoader` starts its workers: forked workers share those
pages copy-on-write instead of each decoding the videos again.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from armflow.data.padding import pad_window
from armflow.data.reader import LeRobotDataset

MIB = 1 << 20


class FramesBudgetError(ValueError):
    """The decoded camera frames of a dataset do not fit the memory budget (`cache_mb`)."""


def decoded_mib(dataset: LeRobotDataset, image_keys: Sequence[str]) -> float:
    """MiB of uint8 pixels that decoding every frame of `image_keys` takes."""
    return sum(dataset.num_frames * int(np.prod(dataset.features[k]["shape"])) for k in image_keys) / MIB


def decode_all(dataset: LeRobotDataset, key: str) -> np.ndarray:
    """Every frame of camera `key`, episode by episode: uint8 `(num_frames, 3, H, W)`."""
    height, width, channels = dataset.features[key]["shape"]
    out = np.empty((dataset.num_frames, channels, height, width), dtype=np.uint8)
    for episode, (lo, hi) in enumerate(dataset.episode_ranges):
        out[lo:hi] = dataset.episode_frames(episode, key).transpose(0, 3, 1, 2)
    out.flags.writeable = False
    return out


class WindowDataset(Dataset):
    """Torch dataset of windows over a `LeRobotDataset`.

    keys: observation keys, low-dimensional and camera (default: `observation.state` and
      every video feature). image_keys: overrides which cameras are used (`[]`: none).
    cache_mb: memory budget [MiB] for the decoded frames of all cameras; a dataset that needs more raises
      `FramesBudgetError` (naming the dataset, the MiB needed and the budget) before anything is decoded.
    uint8_images: items carry images as uint8 `(T_o, 3, H, W)` (4x less memory to batch and move than
      float; the policies convert after cropping) instead of float32 in [0, 1].
    Item: `{key: (T_o, D) float32, cam: (T_o, 3, H, W) float32 in [0, 1] (or uint8),
    "action": (T_p, D_a) float32, "action_is_pad": (T_p,) bool}`.
    """

    def __init__(self, dataset: LeRobotDataset, n_obs_steps: int, horizon: int,
                 keys: Sequence[str] | None = None, image_keys: Sequence[str] | None = None,
                 action_key: str = "action", cache_mb: float = 4096.0, uint8_images: bool = False):
        if n_obs_steps < 1 or horizon < 1:
            raise ValueError(f"n_obs_steps and horizon must be >= 1, got {n_obs_steps}, {horizon}")
        if dataset.num_frames == 0:
            raise ValueError(f"WindowDataset: {dataset.root} has no frames")
        self.dataset = dataset
        self.n_obs_steps, self.horizon = int(n_obs_steps), int(horizon)
        if keys is None:
            keys = [k for k in ("observation.state",) if k in dataset.features] + dataset.video_keys
        self.keys = [k for k in keys if k not in dataset.video_keys]
        cameras_in_keys = [k for k in keys if k in dataset.video_keys]
        self.image_keys = list(cameras_in_keys if image_keys is None else image_keys)
        self.action_key = action_key
        self.uint8_images = bool(uint8_images)
        for key in self.keys:
            if key not in dataset.features:
                raise KeyError(f"observation key {key!r} not in the dataset; features: {sorted(dataset.features)}")
        for key in self.image_keys:
            if key not in dataset.video_keys:
                raise KeyError(f"image key {key!r} is not a video feature; video features: {dataset.video_keys}")
        self._columns = {k: dataset.column(k) for k in [*self.keys, action_key]}
        self._ranges = dataset.episode_ranges
        lengths = self._ranges[:, 1] - self._ranges[:, 0]
        self._episode_of = np.repeat(np.arange(len(lengths)), lengths)
        needed = decoded_mib(dataset, self.image_keys)
        if needed > cache_mb:
            raise FramesBudgetError(
                f"{dataset.root}: decoding {dataset.num_frames} frames of {self.image_keys} needs {needed:.0f} MiB, "
                f"over the frame cache budget cache_mb={cache_mb:g} MiB; raise cache_mb (armflow train cache_mb=N) "
                "if the machine has the memory, or train on fewer cameras (obs_keys), fewer episodes or smaller images")
        self.frames_mib = needed
        self._frames = {k: decode_all(dataset, k) for k in self.image_keys}

    def __len__(self) -> int:
        return int(self._ranges[-1, 1]) if len(self._ranges) else 0

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"window {index} out of range [0, {len(self)})")
        episode = int(self._episode_of[index])
        lo, hi = self._ranges[episode]
        t = index - int(lo)
        obs_start = t - self.n_obs_steps + 1
        item: dict[str, torch.Tensor] = {}
        for key in self.keys:
            window, _ = pad_window(self._columns[key][lo:hi], obs_start, self.n_obs_steps)
            item[key] = torch.from_numpy(np.asarray(window, dtype=np.float32).reshape(self.n_obs_steps, -1))
        for key in self.image_keys:
            window, _ = pad_window(self._frames[key][lo:hi], obs_start, self.n_obs_steps)  # a copy: fancy index
            pixels = torch.from_numpy(window)
            item[key] = pixels if self.uint8_images else pixels.float().div_(255.0)
        actions, is_pad = pad_window(self._columns[self.action_key][lo:hi], t, self.horizon)
        item["action"] = torch.from_numpy(np.asarray(actions, dtype=np.float32).reshape(self.horizon, -1))
        item["action_is_pad"] = torch.from_numpy(is_pad)
        return item
