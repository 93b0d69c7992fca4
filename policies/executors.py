"""Chunk executors: how chunks predicted every s steps become the actions a robot runs while inference takes
d steps (pure numpy; the sampling side of RTC and RTI-DP is :mod:`.realtime`).

Timeline for H = 8, s = 4, d = 2 (``P`` the previous chunk, predicted at t - s; ``A`` the new one, predicted
from the obs at t and available at t + d)::

    t:      t-4 ... t-1 | t    t+1  | t+2  t+3 | t+4
    P:      P0  ... P3  | P4   P5   | P6   P7  |
    A:                  | (inferring)| A2   A3 | next block
    naive / rtc block:    P4   P5     A2   A3      <- one chunk switch, between P5 and A2

- ``sync`` (lockstep): the world waits for inference; the block is A[0:s] (d ignored).
- ``naive`` (asynchronous): P keeps running during the delay, then A from index d; A knows nothing of P, so
  the switch jumps wherever A and P disagree.
- ``rtc`` (Black et al. 2025): the same schedule, but A is sampled with guidance toward P's remaining actions
  (:meth:`RTCExecutor.prefix`): the first d (frozen) exactly, the overlap with a decaying soft mask.
- ``ensemble`` (ACT, Zhao et al. 2023): every step averages all available chunks covering it, weighted
  ``exp(-k i)`` with i = 0 the oldest; with d = 0 it equals ``ActionChunker(s, temporal_ensemble=k)``.

Requires d <= s <= H - d (RTC's condition): the block always holds all of P's delayed actions.
"""
from __future__ import annotations

import math
from collections import deque

import numpy as np

EXECUTORS = ("sync", "naive", "ensemble", "rtc")


def soft_mask(horizon: int, d: int, s: int) -> np.ndarray:
    """RTC's prefix weights W (H,): 1 for the d frozen actions (i < d), an exponential decay over the rest of the
    overlap with the previous chunk (d <= i < H - s), 0 beyond it (Black et al. 2025, eq. 5)."""
    if not 0 <= d <= s <= horizon - d:
        raise ValueError(f"soft_mask: need 0 <= d <= s <= H - d; got d={d}, s={s}, H={horizon}")
    i = np.arange(horizon, dtype=np.float64)
    c = (horizon - s - i) / (horizon - s - d + 1)
    w = np.where(i < d, 1.0, c * np.expm1(c) / (math.e - 1.0))
    return np.where(i < horizon - s, w, 0.0)


def shifted(chunk: np.ndarray, n: int) -> np.ndarray:
    """``chunk`` (H, D) advanced by n executed steps and padded at the end with its last real action (never
    zeros: a zero-padded chunk decodes to the dataset's mean action)."""
    h = len(chunk)
    return np.concatenate([chunk[min(n, h):], np.repeat(chunk[-1:], min(n, h), axis=0)])


class DelayEstimator:
    """Inference delay d [control steps] for the next chunk from measured latencies.

    Rules (the failures users hit with real-time chunking): the first measurement (cold: warm-up, lazy init) is
    never used; the estimate is the maximum over the last ``window`` measurements (a short spike is covered, an
    old one forgotten); a measurement is clamped to the actions the robot actually consumed while it ran (a
    stall that the robot waited out must not make the next chunk skip actions); the result lies in [0, d_max].
    """

    def __init__(self, ctrl_dt_s: float, d_max: int, window: int = 5, prior_steps: int = 0):
        if ctrl_dt_s <= 0 or d_max < 0 or window < 1:
            raise ValueError(f"DelayEstimator: need ctrl_dt_s > 0, d_max >= 0, window >= 1; got {ctrl_dt_s}, "
                             f"{d_max}, {window}")
        self.ctrl_dt_s, self.d_max, self.prior = float(ctrl_dt_s), int(d_max), int(prior_steps)
        self.recent: deque[int] = deque(maxlen=int(window))
        self.n_seen = 0

    def record(self, latency_s: float, consumed_steps: int | None = None) -> None:
        """One inference's latency [s] and, where known, the actions the robot executed meanwhile."""
        self.n_seen += 1
        if self.n_seen == 1:  # cold first inference: excluded
            return
        d = math.ceil(latency_s / self.ctrl_dt_s - 1e-9)
        self.recent.append(d if consumed_steps is None else min(d, int(consumed_steps)))

    @property
    def steps(self) -> int:
        d = max(self.recent) if self.recent else self.prior
        return int(min(max(d, 0), self.d_max))


class ChunkExecutor:
    """One env's executor: ``prefix()`` (what the next chunk should continue, for RTC/RTI-DP), then ``commit(chunk,
    d)`` -> the block of s actions run while the chunk after it is inferred. Records where chunks switch."""

    name = "base"

    def __init__(self, horizon: int, exec_horizon: int):
        if not 1 <= exec_horizon <= horizon:
            raise ValueError(f"{self.name} executor: exec_horizon s={exec_horizon} must be in [1, H={horizon}]")
        self.horizon, self.s = int(horizon), int(exec_horizon)
        self.reset()

    def reset(self) -> None:
        self.prev: np.ndarray | None = None  # the chunk whose actions run at the start of the next block
        self.actions: list[np.ndarray] = []  # every action handed out, (D,) each
        self.switches: list[int] = []  # indices into actions where a new chunk's first action runs

    def prefix(self) -> np.ndarray | None:
        """The previous chunk advanced by the s steps it has run, padded with its last action (None at the start)."""
        return None if self.prev is None else shifted(self.prev, self.s)

    def _check(self, d: int) -> None:
        if not 0 <= d <= self.s <= self.horizon - d:
            raise ValueError(f"{self.name} executor: delay d={d} steps needs d <= s={self.s} <= H - d "
                             f"(H={self.horizon}); raise exec_horizon or lower the delay")

    def commit(self, chunk: np.ndarray, d: int) -> np.ndarray:
        chunk = np.asarray(chunk)
        self._check(d)
        block = self._block(chunk, d)
        self.actions.extend(block)
        self.prev = chunk
        return block

    def _block(self, chunk: np.ndarray, d: int) -> np.ndarray:
        """Delayed schedule: the previous chunk's next d actions, then the new chunk from index d."""
        if self.prev is None:  # the first chunk: the robot waited for it
            self.switches.append(len(self.actions))
            return chunk[: self.s].copy()
        self.switches.append(len(self.actions) + d)
        return np.concatenate([self.prev[self.s: self.s + d], chunk[d: self.s]])


class SyncExecutor(ChunkExecutor):
    """Lockstep: the world waits for every chunk; today's receding horizon."""

    name = "sync"

    def _check(self, d: int) -> None:
        pass  # no overlap, any delay

    def _block(self, chunk, d):
        self.switches.append(len(self.actions))
        return chunk[: self.s].copy()


class NaiveExecutor(ChunkExecutor):
    name = "naive"


class RTCExecutor(ChunkExecutor):
    """Naive's schedule; the new chunk is sampled with :func:`armflow.policies.realtime.rtc_hooks` toward
    ``prefix()`` weighted by ``soft_mask(H, d_hat, s)``."""

    name = "rtc"

    def weights(self, d_hat: int) -> np.ndarray:
        return soft_mask(self.horizon, min(d_hat, self.s, self.horizon - self.s), self.s)


class EnsembleExecutor(ChunkExecutor):
    """ACT's temporal ensembling over the chunks available at each step (weights exp(-k i), i = 0 the oldest)."""

    name = "ensemble"

    def __init__(self, horizon: int, exec_horizon: int, k: float = 0.01):
        self.k = float(k)
        super().__init__(horizon, exec_horizon)

    def reset(self) -> None:
        super().reset()
        self.t, self.live = 0, []  # live: (start step, available step, chunk), oldest first

    def _block(self, chunk, d):
        start = self.t
        self.switches.append(len(self.actions) + (d if self.live else 0))
        self.live = [c for c in self.live if c[0] + self.horizon > start] + [(start, start + (d if self.live else 0),
                                                                             chunk)]
        block = []
        for t in range(start, start + self.s):
            preds = np.stack([c[t - s0] for s0, avail, c in self.live if avail <= t and t - s0 < self.horizon])
            w = np.exp(-self.k * np.arange(len(preds)))
            block.append((w[:, None] * preds).sum(0) / w.sum())
        self.t += self.s
        return np.stack(block)


def make_executor(name: str, horizon: int, exec_horizon: int, ensemble_k: float = 0.01) -> ChunkExecutor:
    classes = {"sync": SyncExecutor, "naive": NaiveExecutor, "rtc": RTCExecutor}
    if name == "ensemble":
        return EnsembleExecutor(horizon, exec_horizon, ensemble_k)
    if name not in classes:
        raise ValueError(f"executor={name!r}; expected one of {', '.join(EXECUTORS)}")
    return classes[name](horizon, exec_horizon)


def switch_discontinuity(actions: np.ndarray, switches, dims=None) -> dict[str, float]:
    """Max and mean of |a_t - a_{t-1}| (inf-norm over ``dims``, default all) at chunk switches and within chunks,
    over a stream of executed actions (T, D); a switch at index i is the step from a_{i-1} to a_i."""
    a = np.asarray(actions, dtype=np.float64)
    a = a if dims is None else a[:, dims]
    if len(a) < 2:
        return {"switch_max": 0.0, "within_max": 0.0, "switch_mean": 0.0, "within_mean": 0.0}
    jumps = np.abs(np.diff(a, axis=0)).max(axis=1)  # jumps[i - 1]: a_{i-1} -> a_i
    at = np.zeros(len(jumps), bool)
    idx = np.asarray([i - 1 for i in switches if 1 <= i < len(a)], dtype=int)
    at[idx] = True
    stat = lambda f, m: float(f(jumps[m])) if m.any() else 0.0  # noqa: E731
    return {"switch_max": stat(np.max, at), "within_max": stat(np.max, ~at), "switch_mean": stat(np.mean, at),
            "within_mean": stat(np.mean, ~at)}
