"""Executing action chunks and stacking observations (pure numpy; no torch).

Timeline for T_o = 2, T_p = 8, T_a = 4 (``o`` observed, ``p`` predicted, ``x`` executed)::

    t:        -1  0  1  2  3  4  5  6
    obs:       o  o
    chunk:        p  p  p  p  p  p  p  p
    executed:     x  x  x  x              <- then a new chunk is predicted at t = 4

``ActionChunker`` (receding horizon): after ``push(chunk)``, ``pop()`` returns chunk[0..T_a-1], then
``needs_chunk()`` is True again. With ``temporal_ensemble=k`` every chunk still alive that covers the
current step votes, weighted ``exp(-k * i)`` with i = 0 the OLDEST chunk (ACT, Zhao et al. 2023):
k > 0 favours older predictions (smoother), k = 0 is a plain average.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np


def _as_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    return np.asarray(x)


class ActionChunker:
    """Turns chunks (T_p, D_a) into per-tick actions (D_a,)."""

    def __init__(self, n_action_steps: int, temporal_ensemble: float | None = None):
        if n_action_steps < 1:
            raise ValueError(f"n_action_steps={n_action_steps} must be >= 1")
        self.n_action_steps = int(n_action_steps)
        self.temporal_ensemble = None if temporal_ensemble is None else float(temporal_ensemble)
        self.reset()

    def reset(self) -> None:
        self._t = 0  # ticks popped since reset
        self._chunks: list[tuple[int, np.ndarray]] = []  # (start tick, chunk), oldest first

    def needs_chunk(self) -> bool:
        if not self._chunks:
            return True
        start, chunk = self._chunks[-1]
        age = self._t - start
        return age >= min(self.n_action_steps, len(chunk))

    def push(self, chunk) -> None:
        chunk = _as_numpy(chunk)
        if chunk.ndim != 2:
            raise ValueError(f"chunk has shape {chunk.shape}; expected (T_p, D_a)")
        if self.temporal_ensemble is None:
            self._chunks = [(self._t, chunk)]
        else:
            self._chunks = [(s, c) for s, c in self._chunks if self._t - s < len(c)] + [(self._t, chunk)]

    def pop(self) -> np.ndarray:
        if self.needs_chunk():
            raise RuntimeError("ActionChunker.pop(): no action left; push a new chunk first (needs_chunk() is True)")
        if self.temporal_ensemble is None:
            start, chunk = self._chunks[-1]
            action = chunk[self._t - start]
        else:
            alive = [(s, c) for s, c in self._chunks if self._t - s < len(c)]
            preds = np.stack([c[self._t - s] for s, c in alive])  # oldest first
            w = np.exp(-self.temporal_ensemble * np.arange(len(alive)))
            action = (w[:, None] * preds).sum(0) / w.sum()
            self._chunks = alive
        self._t += 1
        return np.array(action, copy=True)


class BatchedActionChunker:
    """N independent chunkers (vectorised envs): ``needs_chunk() -> (N,) bool``, ``push(chunks (N, T_p, D_a),
    mask=None)`` (only envs where mask is True take their chunk), ``pop() -> (N, D_a)``, ``reset(mask=None)``."""

    def __init__(self, n_envs: int, n_action_steps: int, temporal_ensemble: float | None = None):
        self.chunkers = [ActionChunker(n_action_steps, temporal_ensemble) for _ in range(n_envs)]

    def reset(self, mask=None) -> None:
        for i, ch in enumerate(self.chunkers):
            if mask is None or mask[i]:
                ch.reset()

    def needs_chunk(self) -> np.ndarray:
        return np.array([ch.needs_chunk() for ch in self.chunkers])

    def push(self, chunks, mask=None) -> None:
        chunks = _as_numpy(chunks)
        for i, ch in enumerate(self.chunkers):
            if mask is None or mask[i]:
                ch.push(chunks[i])

    def pop(self) -> np.ndarray:
        return np.stack([ch.pop() for ch in self.chunkers])


class ObsHistory:
    """Last T_o observations of one env; at episode start the first obs is repeated T_o times.
    (The one-env view of ``BatchedObsHistory``.)"""

    def __init__(self, n_obs_steps: int):
        self._batched = BatchedObsHistory(n_obs_steps)
        self.n_obs_steps = self._batched.n_obs_steps

    def reset(self, obs: Mapping) -> None:
        self._batched.reset({k: _as_numpy(v)[None] for k, v in obs.items()})

    def push(self, obs: Mapping) -> None:
        self._batched.push({k: _as_numpy(v)[None] for k, v in obs.items()})

    def get(self) -> dict[str, np.ndarray]:
        """``{key: (T_o, ...)}``, oldest first, the newest obs last."""
        if self._batched._buf is None:
            raise RuntimeError("ObsHistory.get() before reset(obs)")
        return {k: v[0] for k, v in self._batched.get().items()}


class BatchedObsHistory:
    """Obs windows of N envs: ``{key: (N, T_o, ...)}``. ``push(obs, reset_mask)`` restarts the windows of envs
    whose obs is a new episode's first (vector-env autoreset), repeating that obs T_o times."""

    def __init__(self, n_obs_steps: int):
        if n_obs_steps < 1:
            raise ValueError(f"n_obs_steps={n_obs_steps} must be >= 1")
        self.n_obs_steps = int(n_obs_steps)
        self._buf: dict[str, np.ndarray] | None = None

    def reset(self, obs: Mapping, mask=None) -> None:
        """Restart the windows of the envs in ``mask`` (default all) with their obs ``(N, ...)`` repeated T_o times."""
        fresh = {k: np.repeat(_as_numpy(v)[:, None], self.n_obs_steps, axis=1) for k, v in obs.items()}
        if mask is None or self._buf is None:
            self._buf = fresh
            return
        m = np.asarray(mask, dtype=bool)
        for k, v in fresh.items():
            buf = self._buf[k].copy()  # new arrays: windows handed out by get() are never changed later
            buf[m] = v[m]
            self._buf[k] = buf

    def extend(self, steps: Mapping, n_new) -> None:
        """Append each env's last ``n_new[i]`` obs of ``steps {key: (N, T_o, ...)}`` (right-aligned, as a vector env's
        ``step_chunk`` returns a chunk's last T_o obs); ``n_new[i] = 0`` keeps env i's window."""
        n = np.minimum(np.asarray(n_new), self.n_obs_steps)
        for k, v in steps.items():
            buf = np.array(_as_numpy(v))  # n >= T_o: the new steps are the whole window (a copy: never the caller's)
            for i in np.flatnonzero(n < self.n_obs_steps):
                buf[i] = np.concatenate([self._buf[k][i], buf[i, self.n_obs_steps - n[i]:]])[-self.n_obs_steps:]
            self._buf[k] = buf

    def push(self, obs: Mapping, reset_mask=None) -> None:
        if self._buf is None:
            self.reset(obs)
            return
        for k, v in obs.items():
            v = _as_numpy(v)
            buf = np.concatenate([self._buf[k][:, 1:], v[:, None]], axis=1)
            if reset_mask is not None:
                m = np.asarray(reset_mask, dtype=bool)
                buf[m] = np.repeat(v[m][:, None], self.n_obs_steps, axis=1)
            self._buf[k] = buf

    def get(self, copy: bool = True) -> dict[str, np.ndarray]:
        """``{key: (N, T_o, ...)}``. Every write builds new arrays, so ``copy=False`` windows stay valid (unchanged)
        after later pushes; only a caller that writes into them needs the copy."""
        if self._buf is None:
            raise RuntimeError("BatchedObsHistory.get() before reset(obs)")
        return {k: v.copy() for k, v in self._buf.items()} if copy else dict(self._buf)
