"""Clocks for the fakes: the wall clock by default, a manual one in tests (``advance`` is explicit time travel)."""
from __future__ import annotations

import time


class WallClock:
    def now(self) -> float:
        return time.monotonic()


class ManualClock:
    def __init__(self, t0_s: float = 0.0):
        self.t_s = t0_s

    def now(self) -> float:
        return self.t_s

    def advance(self, dt_s: float) -> None:
        if dt_s < 0:
            raise ValueError(f"ManualClock.advance: dt_s must be >= 0, got {dt_s}")
        self.t_s += dt_s
