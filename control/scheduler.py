"""Timestamped action-chunk scheduling and servo-rate interpolation (pure; the clock is passed in).

A chunk's waypoint i is due at ``t_i = t0 + i*dt - actuator_latency`` (server monotonic ns, or
sim ns in lockstep). On insert, waypoints with ``t_i < now + exec_latency`` are stale and
dropped; the kept ones replace every buffered waypoint from the first kept time on (the
default merge rule). Each tick:

* position modes (joint_pos, ee_pose) interpolate linearly (slerp for the quaternion) along
  ``[anchor, wp_0, wp_1, ...]`` where the anchor is the last commanded setpoint, so a late
  chunk never causes a jump; when the buffer runs dry they hold the last waypoint;
* rate modes (joint_vel, ee_delta) hold waypoint i during ``[t_i, t_i + dt)``; when the
  buffer runs dry they ramp linearly to zero (never extrapolate);
* lockstep mode ignores wall time: each tick executes exactly the next waypoint, and a tick
  with an empty buffer does nothing (the simulation does not advance).

Speed caps are applied afterwards by ``SafetyLayer``; the scheduler reports which chunk index
executed when, and whether it is ``starved``.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from armflow.control.safety import quat_normalize, quat_slerp

POSITION_MODES = ("joint_pos", "ee_pose")
RATE_MODES = ("joint_vel", "ee_delta")
#: Admission horizon: a chunk's first waypoint may be due at most this far ahead of server now [ns]
#: (a later one is a clock error and would sit in the buffer), and at most this far behind it.
MAX_LEAD_NS = 5_000_000_000
MAX_PAST_NS = 2_000_000_000


def admit(t0_ns: int, dt_ns: int, n: int, now_ns: int, exec_latency_ns: int = 0,
          actuator_latency_ns: int = 0) -> tuple[str, str]:
    """``(code, reason)`` why a chunk of ``n`` waypoints at ``t0 + i*dt`` cannot run from ``now_ns``, or
    ``("", "")`` if at least one waypoint will. Decided at receipt, so an ACK means "will run"."""
    if t0_ns > now_ns + MAX_LEAD_NS:
        return "too_far", (f"t0_ns is {(t0_ns - now_ns) / 1e9:.3f} s ahead of server now; the horizon is "
                           f"{MAX_LEAD_NS / 1e9:.0f} s (send times in server time: see clock sync)")
    if t0_ns < now_ns - MAX_PAST_NS:
        return "stale", (f"t0_ns is {(now_ns - t0_ns) / 1e9:.3f} s behind server now (tolerance "
                         f"{MAX_PAST_NS / 1e9:.0f} s)")
    t_last = t0_ns + (n - 1) * dt_ns - actuator_latency_ns
    if t_last < now_ns + exec_latency_ns:
        return "stale", f"all {n} waypoints are due before server now + exec latency: nothing would run"
    return "", ""


@dataclass
class Waypoint:
    t_ns: int
    action: np.ndarray  # (D,)
    gripper: float | None
    chunk_id: int
    index: int
    dt_ns: int = 0  # the chunk's step; a rate-mode waypoint is held this long


@dataclass
class InsertResult:
    n_kept: int
    n_stale: int
    n_replaced: int
    first_kept_index: int | None
    superseded: list = field(default_factory=list)  # chunk ids replaced before any of their waypoints ran


@dataclass
class TickResult:
    setpoint: np.ndarray  # (D,) before the safety layer
    gripper: float | None
    executed: list = field(default_factory=list)  # [(chunk_id, index, t_ns)] first reached this tick
    starved: bool = False


def _lerp(mode: str, a: np.ndarray, b: np.ndarray, s: float) -> np.ndarray:
    if mode == "ee_pose":
        return np.concatenate([a[:3] + s * (b[:3] - a[:3]), quat_slerp(a[3:7], quat_normalize(b[3:7]), s)])
    return a + s * (b - a)


class ChunkScheduler:
    """Buffer of future waypoints for one command mode.

    Args:
        mode: one of POSITION_MODES + RATE_MODES.
        dim: setpoint dimension D (rate modes output zeros (D,) before the first waypoint).
        exec_latency_ns: waypoints due sooner than this after ``now`` are stale [ns].
        actuator_latency_ns: calibrated delay from command to motion; waypoints are sent this early [ns].
        ramp_ns: rate modes ramp from the last rate to zero over this time when starved [ns].
        lockstep: execute one waypoint per tick regardless of time (simulation).
    """

    def __init__(self, mode: str, dim: int, exec_latency_ns: int = 0, actuator_latency_ns: int = 0,
                 ramp_ns: int = 200_000_000, lockstep: bool = False):
        if mode not in POSITION_MODES + RATE_MODES:
            raise ValueError(f"unknown mode {mode!r}; valid: {POSITION_MODES + RATE_MODES}")
        self.mode, self.dim, self.lockstep = mode, dim, lockstep
        self.exec_latency_ns, self.actuator_latency_ns, self.ramp_ns = exec_latency_ns, actuator_latency_ns, ramp_ns
        self.buffer: deque[Waypoint] = deque()
        self.anchor: tuple[int, np.ndarray] | None = None  # (t_ns, setpoint) interpolation start
        self.last_gripper: float | None = None
        self.current: Waypoint | None = None  # rate modes: the waypoint being held
        self.starved_since_ns: int | None = None
        self.last_run_chunk: int | None = None  # chunk id of the newest waypoint reached

    def clear(self) -> list[int]:
        """Drop every buffered waypoint; return the ids of the chunks that lost waypoints (the caller
        tells the controller: an ACKed chunk must run or be reported)."""
        dropped = sorted({wp.chunk_id for wp in self.buffer})
        self.buffer.clear()
        self.anchor, self.current, self.starved_since_ns = None, None, None
        return dropped

    def _reached(self, wps: list[Waypoint]) -> list[tuple[int, int, int]]:
        if wps:
            self.last_run_chunk = wps[-1].chunk_id
        return [(w.chunk_id, w.index, w.t_ns) for w in wps]

    @property
    def remaining(self) -> int:
        return len(self.buffer)

    def first_kept_index(self, t0_ns: int, dt_ns: int, n: int, now_ns: int) -> int | None:
        """Index of the first waypoint ``insert`` would keep (None: all stale)."""
        times = t0_ns + dt_ns * np.arange(n, dtype=np.int64) - self.actuator_latency_ns
        keep = times >= now_ns + self.exec_latency_ns
        return int(np.argmax(keep)) if keep.any() else None

    def insert(self, chunk_id: int, t0_ns: int, dt_ns: int, actions: np.ndarray, gripper: np.ndarray | None,
               now_ns: int, last_setpoint: np.ndarray | None) -> InsertResult:
        """Schedule ``actions (H, D)``; ``last_setpoint`` is the last commanded setpoint (anchor).

        Chunk ids must increase with every insert (the server enforces it), so the buffer is ordered by
        chunk id as well as by time."""
        if dt_ns <= 0 or not -2**63 <= t0_ns - self.actuator_latency_ns <= t0_ns + (len(actions) - 1) * dt_ns < 2**63:
            raise ValueError(f"chunk {chunk_id}: t0_ns={t0_ns}, dt_ns={dt_ns}, H={len(actions)} leave int64 ns")
        times = t0_ns + dt_ns * np.arange(len(actions), dtype=np.int64) - self.actuator_latency_ns
        keep = times >= now_ns + self.exec_latency_ns
        if not keep.any():
            return InsertResult(0, len(actions), 0, None)
        first = int(np.argmax(keep))
        t_first = int(times[first])
        n_before = len(self.buffer)
        removed = set()
        while self.buffer and self.buffer[-1].t_ns >= t_first:
            removed.add(self.buffer.pop().chunk_id)
        n_replaced = n_before - len(self.buffer)
        tail = self.buffer[-1].chunk_id if self.buffer else None
        superseded = sorted(c for c in removed if c != tail and c != self.last_run_chunk)
        for i in range(first, len(actions)):
            g = None if gripper is None else float(gripper[i])
            self.buffer.append(Waypoint(int(times[i]), np.array(actions[i], float), g, chunk_id, i, dt_ns))
        if not n_before - n_replaced and self.mode in POSITION_MODES and last_setpoint is not None \
                and not self.lockstep:
            self.anchor = (now_ns, np.array(last_setpoint, float))  # start interpolating from where we are
        self.starved_since_ns = None
        return InsertResult(len(actions) - first, first, n_replaced, first, superseded)

    def tick(self, now_ns: int, last_setpoint: np.ndarray | None) -> TickResult | None:
        """The setpoint for time ``now_ns``; ``None`` in lockstep when nothing is buffered."""
        if self.lockstep:
            if not self.buffer:
                return None
            wp = self.buffer.popleft()
            self.last_gripper = wp.gripper if wp.gripper is not None else self.last_gripper
            return TickResult(wp.action.copy(), self.last_gripper, self._reached([wp]))
        if self.mode in POSITION_MODES:
            return self._tick_position(now_ns, last_setpoint)
        if self.mode == "ee_delta":
            return self._tick_delta(now_ns)
        return self._tick_rate(now_ns)

    def _tick_delta(self, now_ns: int) -> TickResult:
        """``ee_delta`` waypoints are per-control-step increments, so each is applied exactly once, in
        order: a tick takes the oldest waypoint due within half its period (ticks and waypoints need not
        be in phase), never repeats one (a repeated "move down" pushes the gripper into the table) and
        never merges several; a tick with none due applies a zero increment. Stale waypoints were
        already dropped by ``insert``."""
        if self.buffer and self.buffer[0].t_ns - self.buffer[0].dt_ns // 2 <= now_ns:
            wp = self.buffer.popleft()
            if wp.gripper is not None:
                self.last_gripper = wp.gripper
            return TickResult(wp.action.copy(), self.last_gripper, self._reached([wp]))
        return TickResult(np.zeros(self.dim), self.last_gripper, [], starved=not self.buffer)

    def _pop_due(self, now_ns: int) -> list[Waypoint]:
        due = []
        while self.buffer and self.buffer[0].t_ns <= now_ns:
            due.append(self.buffer.popleft())
        for wp in due:
            if wp.gripper is not None:
                self.last_gripper = wp.gripper
        return due

    def _tick_position(self, now_ns: int, last_setpoint: np.ndarray | None) -> TickResult:
        due = self._pop_due(now_ns)
        executed = self._reached(due)
        if due:
            self.anchor = (due[-1].t_ns, due[-1].action)
        if self.anchor is None:
            hold = np.array(last_setpoint, float)
            self.anchor = (now_ns, hold)
        if not self.buffer:  # starved or finished: hold the last waypoint reached
            return TickResult(self.anchor[1].copy(), self.last_gripper, executed, starved=True)
        t_a, q_a = self.anchor
        nxt = self.buffer[0]
        s = 1.0 if nxt.t_ns <= t_a else float(np.clip((now_ns - t_a) / (nxt.t_ns - t_a), 0.0, 1.0))
        return TickResult(_lerp(self.mode, q_a, nxt.action, s), self.last_gripper, executed)

    def _tick_rate(self, now_ns: int) -> TickResult:
        due = self._pop_due(now_ns)
        executed = self._reached(due)
        if due:
            self.current = due[-1]
        cur = self.current
        if cur is None:
            return TickResult(np.zeros(self.dim), self.last_gripper, executed, starved=not self.buffer)
        dt_hold = (self.buffer[0].t_ns - cur.t_ns) if self.buffer else cur.dt_ns
        if now_ns < cur.t_ns + dt_hold or self.buffer:
            return TickResult(cur.action.copy(), self.last_gripper, executed)
        # buffer dry and the last waypoint's interval is over: ramp to zero
        if self.starved_since_ns is None:
            self.starved_since_ns = cur.t_ns + dt_hold
        scale = max(0.0, 1.0 - (now_ns - self.starved_since_ns) / max(self.ramp_ns, 1))
        return TickResult(cur.action * scale, self.last_gripper, executed, starved=True)

    def first_pending(self) -> Waypoint | None:
        return self.buffer[0] if self.buffer else None
