"""Servo timing helpers: sleep-then-spin to a deadline, a period-error histogram, SCHED_FIFO, and garbage
collection moved into the slack between ticks."""
from __future__ import annotations

import gc
import os
import time

import numpy as np

ERR_BIN_NS, ERR_BINS = 5_000, 4000  # period-error histogram: 5 us bins up to 20 ms (+ one overflow bin)


def record_period_error(hist: np.ndarray, err_ns: int) -> None:
    hist[min(abs(err_ns) // ERR_BIN_NS, ERR_BINS)] += 1


def period_err_percentiles_us(hist: np.ndarray) -> tuple[float, float]:
    """p50 and p99 of |period error| [us] from the histogram (upper bin edges)."""
    total = hist.sum()
    if total == 0:
        return 0.0, 0.0
    cdf = np.cumsum(hist) / total
    return tuple(float((np.searchsorted(cdf, q) + 1) * ERR_BIN_NS / 1e3) for q in (0.5, 0.99))


def sleep_until(t_ns: int, spin_ns: int) -> None:
    remaining = t_ns - time.monotonic_ns()
    if remaining > spin_ns:
        time.sleep((remaining - spin_ns) / 1e9)
    while time.monotonic_ns() < t_ns:
        pass


def set_realtime_priority(priority: int) -> str:
    """Best effort SCHED_FIFO for the servo process; returns what was applied (for the log)."""
    if priority <= 0:
        return "normal"
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
        return f"SCHED_FIFO {priority}"
    except (OSError, AttributeError) as exc:
        return f"normal (SCHED_FIFO refused: {exc})"


class SlackGC:
    """The cyclic garbage collector, run by the servo loop between ticks instead of whenever an allocation
    crosses a threshold (which lands a collection inside a tick). ``start`` freezes everything built at
    start-up (imports, driver, limits: never garbage) so that no collection scans it, and turns automatic
    collection off; ``after_tick`` runs the collection the interpreter would have run by now, in the same
    generation schedule (a young one per ``threshold`` net allocations, an older one every 10th, the
    oldest every 100th), all of them small once start-up objects are frozen; ``stop`` restores it."""

    def __init__(self) -> None:
        self.threshold = gc.get_threshold()[0] or 700
        self.n = 0

    def start(self) -> None:
        gc.collect()
        gc.freeze()
        gc.disable()

    def after_tick(self) -> None:
        if gc.get_count()[0] < self.threshold:
            return
        self.n += 1
        gc.collect(2 if self.n % 100 == 0 else 1 if self.n % 10 == 0 else 0)

    def stop(self) -> None:
        gc.enable()
