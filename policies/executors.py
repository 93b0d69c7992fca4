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
- ``rtc`` (Black et al. 2025): the same schedule, but A is sampled inpainting P's remaining actions
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


def soft_mask(horizon: int, d: int, s: int, overlap: float = 1.0) -> np.ndarray:
    """RTC's prefix weights W (H,): 1 for the d frozen actions (i < d), an exponential decay over the rest of the
    overlap with the previous chunk (d <= i < H - s), 0 beyond it (Black et al. 2025, eq. 5); the decay is scaled by
    ``overlap`` in [0, 1] (how hard the new chunk is held to the old plan after the frozen actions: with
    :func:`armflow.policies.realtime.rtc_hooks`' exact inpainting, 1 copies the old, staler plan nearly verbatim)."""
    if not 0 <= d <= s <= horizon - d:
        raise ValueError(f"soft_mask: need 0 <= d <= s <= H - d; got d={d}, s={s}, H={horizon}")
    if not 0.0 <= overlap <= 1.0:
        raise ValueError(f"soft_mask: overlap={overlap} must be in [0, 1]")
    i = np.arange(horizon, dtype=np.float64)
    c = (horizon - s - i) / (horizon - s - d + 1)
    w = np.where(i < d, 1.0, overlap * c * np.expm1(c) / (math.e - 1.0))
    return np.where(i < horizon - s, w, 0.0)


def shifted(chunk: np.ndarray, n: int) -> np.ndarray:
    """``chunk`` (H, D) advanced by n executed steps and padded at the end with its last real action (never
    zeros: a zero-padded chunk decodes to the dataset's mean action)."""
    h = len(chunk)
    return np.concatenate([chunk[min(n, h):], np.repeat(chunk[-1:], min(n, h), axis=0)])


class DelayEstimator:
    """Inference delay d [control steps] for the next chunk from measured latencies.

    Rules (the failures users hit with real-time chunking): the first measurement (cold: warm-up, lazy init) never
    enters the estimate once a warm one exists; the estimate is the maximum over the last ``window`` warm
    measurements (a short spike is covered, an old one forgotten); a measurement is clamped to the actions the robot
    actually consumed while it ran (a stall that the robot waited out must not make the next chunk skip actions);
    the result lies in [0, d_max]. Before any warm measurement the cold one stands in (``prior_steps`` before any
    at all): the second chunk also runs late, and the estimate 0 that excluding the cold one gave there left its
    executed actions unfrozen (at s = 8 a lift episode has ~2 switches: half of them); a cold overestimate only
    freezes more of the previous plan.
    """

    def __init__(self, ctrl_dt_s: float, d_max: int, window: int = 5, prior_steps: int = 0):
        if ctrl_dt_s <= 0 or d_max < 0 or window < 1:
            raise ValueError(f"DelayEstimator: need ctrl_dt_s > 0, d_max >= 0, window >= 1; got {ctrl_dt_s}, "
                             f"{d_max}, {window}")
        self.ctrl_dt_s, self.d_max, self.prior = float(ctrl_dt_s), int(d_max), int(prior_steps)
        self.recent: deque[int] = deque(maxlen=int(window))
        self.n_seen, self.cold = 0, None

    def record(self, latency_s: float, consumed_steps: int | None = None) -> None:
        """One inference's latency [s] and, where known, the actions the robot executed meanwhile."""
        self.n_seen += 1
        d = math.ceil(latency_s / self.ctrl_dt_s - 1e-9)
        d = d if consumed_steps is None else min(d, int(consumed_steps))
        if self.n_seen == 1:  # cold first inference: kept apart, never in the recent window
            self.cold = d
            return
        self.recent.append(d)

    @property
    def steps(self) -> int:
        d = max(self.recent) if self.recent else (self.prior if self.cold is None else self.cold)
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
        # per switch: the action the running plan would have executed at that step had no new chunk come (None at
        # an episode's first chunk): the switch's own discontinuity is |executed - planned| there
        self.planned: list[np.ndarray | None] = []

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

    def _switch(self, index: int, planned: np.ndarray | None) -> None:
        self.switches.append(index)
        self.planned.append(None if planned is None else np.array(planned, dtype=np.float64))

    def _block(self, chunk: np.ndarray, d: int) -> np.ndarray:
        """Delayed schedule: the previous chunk's next d actions, then the new chunk from index d."""
        if self.prev is None:  # the first chunk: the robot waited for it
            self._switch(len(self.actions), None)
            return chunk[: self.s].copy()
        self._switch(len(self.actions) + d, shifted(self.prev, self.s)[d])
        return np.concatenate([self.prev[self.s: self.s + d], chunk[d: self.s]])


class SyncExecutor(ChunkExecutor):
    """Lockstep: the world waits for every chunk; today's receding horizon."""

    name = "sync"

    def _check(self, d: int) -> None:
        pass  # no overlap, any delay

    def _block(self, chunk, d):
        self._switch(len(self.actions), None if self.prev is None else shifted(self.prev, self.s)[0])
        return chunk[: self.s].copy()


class NaiveExecutor(ChunkExecutor):
    name = "naive"


class RTCExecutor(ChunkExecutor):
    """Naive's schedule; the new chunk is sampled with :func:`armflow.policies.realtime.rtc_hooks` toward
    ``prefix()`` weighted by :meth:`weights` (the soft mask at the estimated delay)."""

    name = "rtc"

    def __init__(self, horizon: int, exec_horizon: int, overlap: float = 0.5):
        self.overlap = float(overlap)
        super().__init__(horizon, exec_horizon)

    def weights(self, d_hat: int) -> np.ndarray:
        return soft_mask(self.horizon, min(d_hat, self.s, self.horizon - self.s), self.s, self.overlap)


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
        start, delay = self.t, (d if self.live else 0)
        self.live = [c for c in self.live if c[0] + self.horizon > start]
        old = list(self.live)
        self.live.append((start, start + delay, chunk))
        self._switch(len(self.actions) + delay, self._average(old, start + delay) if old else None)
        block = np.stack([self._average(self.live, t) for t in range(start, start + self.s)])
        self.t += self.s
        return block

    def _average(self, live: list, t: int) -> np.ndarray:
        """The weighted mean at step t of the chunks in ``live`` available by then and covering t (if none covers t,
        the newest padded with its last action, as :func:`shifted` does)."""
        preds = [c[t - s0] for s0, avail, c in live if avail <= t and t - s0 < self.horizon]
        if not preds:
            return np.array(live[-1][2][-1])
        w = np.exp(-self.k * np.arange(len(preds)))
        return (w[:, None] * np.stack(preds)).sum(0) / w.sum()


def make_executor(name: str, horizon: int, exec_horizon: int, ensemble_k: float = 0.01,
                  rtc_overlap: float = 0.5) -> ChunkExecutor:
    if name == "ensemble":
        return EnsembleExecutor(horizon, exec_horizon, ensemble_k)
    if name == "rtc":
        return RTCExecutor(horizon, exec_horizon, rtc_overlap)
    classes = {"sync": SyncExecutor, "naive": NaiveExecutor}
    if name not in classes:
        raise ValueError(f"executor={name!r}; expected one of {', '.join(EXECUTORS)}")
    return classes[name](horizon, exec_horizon)


def switch_discontinuity(actions: np.ndarray, switches, dims=None, planned=None) -> dict[str, float]:
    """Max and mean of |a_t - a_{t-1}| (inf-norm over ``dims``, default all) at chunk switches and within chunks,
    over a stream of executed actions (T, D); a switch at index i is the step from a_{i-1} to a_i.

    ``planned`` (one per switch, None for none): the action the running plan had for step i. ``gap_max`` /
    ``gap_mean`` are |a_i - planned_i|, the part of the switch's jump that the switch itself makes: a_i - a_{i-1} =
    (planned_i - a_{i-1}) + (a_i - planned_i), where the first term is the motion the old plan made anyway. The raw
    switch jump cannot drop below the task's own motion (a lift's descend -> grasp -> raise steps are as large as
    any switch jump), so the gap is what tells a smooth switch from a jumpy one."""
    a = np.asarray(actions, dtype=np.float64)
    a = a if dims is None else a[:, dims]
    out = {"switch_max": 0.0, "within_max": 0.0, "switch_mean": 0.0, "within_mean": 0.0, "gap_max": 0.0,
           "gap_mean": 0.0}
    if len(a) < 2:
        return out
    jumps = np.abs(np.diff(a, axis=0)).max(axis=1)  # jumps[i - 1]: a_{i-1} -> a_i
    at = np.zeros(len(jumps), bool)
    idx = np.asarray([i - 1 for i in switches if 1 <= i < len(a)], dtype=int)
    at[idx] = True
    stat = lambda f, x, m: float(f(x[m])) if m.any() else 0.0  # noqa: E731
    out.update(switch_max=stat(np.max, jumps, at), within_max=stat(np.max, jumps, ~at),
               switch_mean=stat(np.mean, jumps, at), within_mean=stat(np.mean, jumps, ~at))
    gaps = [np.abs(a[i] - (p if dims is None else np.asarray(p)[dims])).max()
            for i, p in zip(switches, planned or [None] * len(switches)) if p is not None and 1 <= i < len(a)]
    if gaps:
        out.update(gap_max=float(np.max(gaps)), gap_mean=float(np.mean(gaps)))
    return out
