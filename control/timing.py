"""Servo timing helpers: sleep-then-spin to a deadline, a period-error histogram, SCHED_FIFO."""
from __future__ import annotations

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
