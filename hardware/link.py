"""A lossy, delayed command link for sim drivers: injectable latency [s], jitter [s] and dropped commands.

Commands enter with the current (sim or wall) time and come out once ``t >= t_in + latency + U(0, jitter)``.
Delivery keeps arrival order: a command never overtakes an earlier one (like a TCP stream).
Seeded, so lockstep runs are reproducible.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LinkConfig:
    latency_s: float = 0.0
    jitter_s: float = 0.0
    drop_prob: float = 0.0
    seed: int = 0

    def __post_init__(self):
        if self.latency_s < 0 or self.jitter_s < 0:
            raise ValueError(f"latency_s and jitter_s must be >= 0, got {self.latency_s}, {self.jitter_s}")
        if not 0.0 <= self.drop_prob < 1.0:
            raise ValueError(f"drop_prob must be in [0, 1), got {self.drop_prob}")


class CommandLink:
    def __init__(self, cfg: LinkConfig):
        self.cfg = cfg
        self._rng = np.random.default_rng(cfg.seed)
        self._queue: deque = deque()
        self._last_due_s = -np.inf
        self.n_sent = 0
        self.n_dropped = 0

    def send(self, t_s: float, item) -> bool:
        """Queue ``item`` sent at time ``t_s``; return False when the link dropped it."""
        self.n_sent += 1
        if self.cfg.drop_prob > 0 and self._rng.random() < self.cfg.drop_prob:
            self.n_dropped += 1
            return False
        delay = self.cfg.latency_s + (self._rng.uniform(0.0, self.cfg.jitter_s) if self.cfg.jitter_s else 0.0)
        due = max(t_s + delay, self._last_due_s)
        self._last_due_s = due
        self._queue.append((due, item))
        return True

    def receive(self, t_s: float) -> list:
        """Every item due at or before ``t_s``, oldest first."""
        out = []
        while self._queue and self._queue[0][0] <= t_s + 1e-12:
            out.append(self._queue.popleft()[1])
        return out

    def clear(self) -> None:
        """Forget every queued command (hold, reset); delivery order restarts."""
        self._queue.clear()
        self._last_due_s = -np.inf
