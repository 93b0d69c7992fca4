"""Preallocated ring replay buffer of chunk transitions; its state round-trips through plain tensors."""
from __future__ import annotations

import numpy as np
import torch


class ReplayBuffer:
    """Rows of named arrays; obs dicts are stored under ``obs/<key>`` and ``next_obs/<key>``.

    Storage is allocated on the first ``add`` from the rows' shapes and dtypes (capacity rows each).
    """

    def __init__(self, capacity: int):
        self.capacity, self.size, self.ptr = int(capacity), 0, 0
        self.data: dict[str, np.ndarray] = {}

    @staticmethod
    def _flatten(rows: dict) -> dict[str, np.ndarray]:
        out = {}
        for k, v in rows.items():
            if isinstance(v, dict):
                out.update({f"{k}/{kk}": np.asarray(vv) for kk, vv in v.items()})
            else:
                out[k] = np.asarray(v)
        return out

    def add(self, rows: dict) -> None:
        """Add a batch of rows: every value (B, ...) (obs values dicts of (B, ...))."""
        flat = self._flatten(rows)
        n = len(next(iter(flat.values())))
        if not self.data:
            self.data = {k: np.zeros((self.capacity, *v.shape[1:]), dtype=v.dtype) for k, v in flat.items()}
        idx = (self.ptr + np.arange(n)) % self.capacity
        for k, v in flat.items():
            self.data[k][idx] = v
        self.ptr = int((self.ptr + n) % self.capacity)
        self.size = int(min(self.size + n, self.capacity))

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict:
        """Uniform rows as tensors; ``obs/<k>`` keys regrouped into dicts."""
        idx = rng.integers(0, self.size, size=batch_size)
        out: dict = {}
        for k, v in self.data.items():
            t = torch.as_tensor(v[idx])
            if "/" in k:
                group, key = k.split("/", 1)
                out.setdefault(group, {})[key] = t
            else:
                out[k] = t
        return out

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {f"buffer.{k}": torch.from_numpy(np.ascontiguousarray(v[: self.size])) for k, v in self.data.items()}

    def meta(self) -> dict:
        return {"size": self.size, "ptr": self.ptr, "capacity": self.capacity}

    def load(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        rows = {k[len("buffer."):]: t.numpy() for k, t in tensors.items() if k.startswith("buffer.")}
        self.capacity, self.size, self.ptr = int(meta["capacity"]), 0, 0
        self.data = {}
        if rows and int(meta["size"]) > 0:
            self.data = {k: np.zeros((self.capacity, *v.shape[1:]), dtype=v.dtype) for k, v in rows.items()}
            for k, v in rows.items():
                self.data[k][: len(v)] = v
        self.size, self.ptr = int(meta["size"]), int(meta["ptr"])
