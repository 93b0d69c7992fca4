"""Servo timing helpers: sleep-then-spin to a deadline, a period-error histogram, SCHED_FIFO and
SCHED_DEADLINE, and garbage collection moved into the slack between ticks."""
from __future__ import annotations

import ctypes
import gc
import os
import platform
import time

import numpy as np

ERR_BIN_NS, ERR_BINS = 5_000, 4000  # period-error histogram: 5 us bins up to 20 ms (+ one overflow bin)
#: A tick that wakes more than period / REPHASE_FRACTION late starts a new phase: the next tick comes a full
#: period after it, not early on the old grid. A catch-up tick would make a second bad period out of every
#: late wake (measured: ~60 % of the servo's > 1 ms period errors were such short periods after a long one),
#: and it would command, within a fraction of a period, a step the safety layer limited for a whole period.
REPHASE_FRACTION = 4


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


#: sched_setattr(2) has no wrapper in Python's ``os``; its syscall number per architecture.
_SYS_SCHED_SETATTR = {"x86_64": 314, "aarch64": 274, "arm64": 274}
_SCHED_DEADLINE = 6
_SCHED_FLAG_RESET_ON_FORK, _SCHED_FLAG_RECLAIM = 0x01, 0x02
#: The tick thread's SCHED_DEADLINE budget as a fraction of its period. Measured tick CPU time at 500 Hz on
#: the 2-core dev box (fake arm, bench bridge): p50 ~0.45 ms, p99 ~1.3 ms, p99.9 ~2 ms of the 2 ms period,
#: spin included; a tick past its budget is only postponed to the next period (and RECLAIM lends it idle
#: time first), never dropped, so the budget need not cover the very worst tick.
DEADLINE_RUNTIME_FRACTION = 0.6


class _SchedAttr(ctypes.Structure):
    _fields_ = [("size", ctypes.c_uint32), ("sched_policy", ctypes.c_uint32), ("sched_flags", ctypes.c_uint64),
                ("sched_nice", ctypes.c_int32), ("sched_priority", ctypes.c_uint32),
                ("sched_runtime", ctypes.c_uint64), ("sched_deadline", ctypes.c_uint64),
                ("sched_period", ctypes.c_uint64)]


def set_deadline_scheduling(period_ns: int, runtime_ns: int | None = None) -> str:
    """Best effort SCHED_DEADLINE for the calling thread: ``runtime_ns`` of CPU every ``period_ns`` (default
    ``DEADLINE_RUNTIME_FRACTION`` of it), deadline = period. Returns what was applied, or "" if refused.

    Why not only SCHED_FIFO: a FIFO thread waits for every runnable task of its own or a higher priority,
    and on a shared host other processes may run SCHED_FIFO 99 (measured here: another job's CPU-bound
    process at FIFO 99 held the servo's FIFO 50 ticks off the CPU, servo period error p99 2-2.4 ms; a bare
    500 Hz loop: >1 ms errors in 18-38 % of periods at FIFO 50 vs 0.06-0.18 % under SCHED_DEADLINE). The
    deadline class runs before every FIFO task, with a bandwidth cap the kernel admits only if it fits.
    Threads this thread creates later start SCHED_OTHER (RESET_ON_FORK: a deadline thread may not clone)."""
    nr = _SYS_SCHED_SETATTR.get(platform.machine())
    if nr is None:
        return ""
    runtime = int(runtime_ns if runtime_ns is not None else period_ns * DEADLINE_RUNTIME_FRACTION)
    attr = _SchedAttr(ctypes.sizeof(_SchedAttr), _SCHED_DEADLINE, _SCHED_FLAG_RESET_ON_FORK | _SCHED_FLAG_RECLAIM,
                      0, 0, runtime, int(period_ns), int(period_ns))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(nr, 0, ctypes.byref(attr), 0) != 0:
        return ""  # EPERM (no CAP_SYS_NICE, or an affinity narrower than the CPUs), EBUSY (admission), ENOSYS
    return f"SCHED_DEADLINE {runtime / 1e3:.0f} us / {period_ns / 1e3:.0f} us"


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


class TickTrace:
    """Per-tick diagnostic (``ARMFLOW_SERVO_TRACE=<path>``): for each real-time tick the wake-up lateness
    vs its deadline, the tick's own work time, the slack GC's time, this thread's run-queue wait and CPU time
    over the tick (``/proc/thread-self/schedstat``: waiting on the run queue = another task held the core; the
    kernel accounts both at context switches, so they are exact over a tick that slept, 0 over one that did
    not) and what the tick did (flags), saved to ``path.<pid>.npy`` when the loop ends. Off by default: it
    reads a proc file twice per tick."""

    COLUMNS = ("deadline_ns", "wake_ns", "work_end_ns", "gc_end_ns", "runq_wait_ns", "cpu_ns", "flags")
    F_CMD, F_MOVED, F_PUB, F_GC = 1, 2, 4, 8

    def __init__(self, path: str, max_ticks: int = 200_000):
        self.path = path
        self.rows = np.zeros((max_ticks, len(self.COLUMNS)), np.int64)
        self.n = 0
        self.fd = os.open("/proc/thread-self/schedstat", os.O_RDONLY)

    def schedstat(self) -> tuple[int, int]:
        cpu, wait, _ = os.pread(self.fd, 128, 0).split()
        return int(cpu), int(wait)

    def begin(self) -> None:
        """Before the tick's sleep."""
        self.cpu0, self.wait0 = self.schedstat()

    def record(self, deadline_ns: int, wake_ns: int, work_end_ns: int, flags: int) -> None:
        """After the tick and its slack GC."""
        if self.n < len(self.rows):
            cpu, wait = self.schedstat()
            self.rows[self.n] = (deadline_ns, wake_ns, work_end_ns, time.monotonic_ns(), wait - self.wait0,
                                 cpu - self.cpu0, flags)
            self.n += 1

    def save(self) -> None:
        os.close(self.fd)
        np.save(f"{self.path}.{os.getpid()}.npy", self.rows[: self.n])  # one file per servo process
