"""`WindowDataset`: (observation history, action chunk) training windows for policies.

For global frame `i` at step `t` of its episode (length `L`):

    observation steps  t-T_o+1 ... t            (ends at the current frame)
    action steps                  t ... t+T_p-1 (starts at the current frame)

Windows never cross an episode boundary; steps outside `[0, L)` repeat the edge
frame (`pad_window`) and `action_is_pad` marks padded actions.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from armflow.data.padding import pad_window
from armflow.data.reader import LeRobotDataset


class WindowDataset(Dataset):
    """Torch dataset of windows over a `LeRobotDataset`.

    keys: observation keys, low-dimensional and camera (default: `observation.state` and
      every video feature). image_keys: overrides which cameras are used (`[]`: none).
    Camera frames are decoded lazily per episode and kept in an LRU cache of at most
    `cache_mb` [MiB] of uint8 pixels.
    Item: `{key: (T_o, D) float32, cam: (T_o, 3, H, W) float32 in [0, 1],
    "action": (T_p, D_a) float32, "action_is_pad": (T_p,) bool}`.
    """

    def __init__(self, dataset: LeRobotDataset, n_obs_steps: int, horizon: int,
                 keys: Sequence[str] | None = None, image_keys: Sequence[str] | None = None,
                 action_key: str = "action", cache_mb: float = 2048.0):
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
        self._cache: OrderedDict[tuple[int, str], np.ndarray] = OrderedDict()
        self._cache_bytes, self._cache_limit = 0, int(cache_mb * (1 << 20))

    def __len__(self) -> int:
        return int(self._ranges[-1, 1]) if len(self._ranges) else 0

    def _frames(self, episode: int, key: str) -> np.ndarray:
        """Decoded uint8 `(L, H, W, 3)` frames, through the LRU cache."""
        hit = self._cache.get((episode, key))
        if hit is not None:
            self._cache.move_to_end((episode, key))
            return hit
        frames = self.dataset.episode_frames(episode, key)
        self._cache[(episode, key)] = frames
        self._cache_bytes += frames.nbytes
        while self._cache_bytes > self._cache_limit and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._cache_bytes -= old.nbytes
        return frames

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
            window, _ = pad_window(self._frames(episode, key), obs_start, self.n_obs_steps)
            item[key] = torch.from_numpy(window).permute(0, 3, 1, 2).float().div_(255.0)
        actions, is_pad = pad_window(self._columns[self.action_key][lo:hi], t, self.horizon)
        item["action"] = torch.from_numpy(np.asarray(actions, dtype=np.float32).reshape(self.horizon, -1))
        item["action_is_pad"] = torch.from_numpy(is_pad)
        return item
