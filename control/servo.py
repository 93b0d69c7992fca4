"""The servo loop: its own process, owns the driver, never touches a socket.

Each tick (real-time mode, every ``1/servo_rate_hz`` on the monotonic clock):
 1. e-stop counter in shared memory (jumps the pipe queue);
 2. drain the command pipe from the I/O process (bounded, non-blocking);
 3. watchdog: T_cmd silence of the lease holder -> HOLD;
 4. read the driver state; contact force over the limit -> HOLD;
 5. if ARMED/RUNNING: scheduler -> safety layer -> ``driver.command``;
 6. hand state/events to the I/O process at the state rate.
With ``rt_priority`` the tick thread runs SCHED_DEADLINE (ahead of every SCHED_FIFO task on the host), the
process SCHED_FIFO. ``ARMFLOW_SERVO_TRACE=<path>`` saves a per-tick timing trace (``timing.TickTrace``).
Lockstep mode (simulation): the tick runs only when a waypoint is buffered and advances the
simulation by exactly one control step, so a policy's rollout through the bridge is the
same as a direct in-sim evaluation with the same seed.
"""
from __future__ import annotations

import os
import queue
import select
import signal
import threading
import time
from dataclasses import asdict, dataclass

import numpy as np

from armflow.control import channel, protocol as P
from armflow.control.limits import SafetyLimits, limits_from_dict
from armflow.control.safety import SafetyLayer
from armflow.control.scheduler import ChunkScheduler
from armflow.control.servo_commands import ServoCommands
from armflow.control.watchdog import LATCHED, Watchdog
from armflow.control.drivers import action_dims, make_driver, scalar_extras, state_arrays
from armflow.control.timing import (ERR_BINS, REPHASE_FRACTION, SlackGC, TickTrace, period_err_percentiles_us,
                                   record_period_error, set_deadline_scheduling, set_realtime_priority, sleep_until)
from armflow.hardware.driver import RobotState

#: States queued for the I/O process beyond this are dropped (newest-only stream; events never are).
OUTBOX_STATES = 256
#: Chunk ids per ``chunk_dropped`` event; STATE's ``executed`` list is capped the same way.
MAX_IDS_PER_EVENT = 256

@dataclass
class ServoConfig:
    robot: str
    robot_options: dict
    limits: dict  # SafetyLimits.to_dict()
    lockstep: bool = False
    servo_rate_hz: float | None = None  # None: the driver's native rate
    state_rate_hz: float = 100.0
    t_cmd_ms: int = 300
    exec_latency_ms: float = 0.0
    actuator_latency_ms: float = 0.0
    spin_us: int = 300  # busy-wait this long before each real-time tick (sleep granularity)
    # > 0: the servo process SCHED_FIFO at this priority and its tick thread SCHED_DEADLINE (one period, see
    # timing.set_deadline_scheduling) where the kernel admits it (needs CAP_SYS_NICE)
    rt_priority: int = 0


def safety_for(driver, limits: SafetyLimits) -> SafetyLayer:
    """The safety layer for ``driver`` under ``limits``, with the driver's own IK / integration told the motion
    limits (``set_motion_limits``); shared with ``control.sim_limits`` (evaluation under the bridge's limits)."""
    safety = SafetyLayer(limits, driver.info(), fk=getattr(driver, "forward_pose", None))
    driver.set_motion_limits(safety.motion_limits())
    return safety


class ServoLoop(ServoCommands):
    """State for one servo process; ``run`` is its main loop (see module docstring)."""

    def __init__(self, cfg: ServoConfig, conn, shared: channel.SharedWords):
        self.cfg, self.conn, self.shared = cfg, conn, shared
        self.limits: SafetyLimits = limits_from_dict(cfg.limits)
        self.driver = make_driver(cfg.robot, dict(cfg.robot_options))
        self.driver.connect()
        self.info = self.driver.info()
        self.dims = action_dims(self.info.dof)
        self.rate_hz = float(cfg.servo_rate_hz or self.info.native_rate_hz)
        self.period_ns = int(1e9 / self.rate_hz)
        self.safety = safety_for(self.driver, self.limits)
        self.watchdog = Watchdog(int(cfg.t_cmd_ms * 1e6))
        self.scheduler: ChunkScheduler | None = None
        self.mode: str | None = None
        self.last_setpoint: np.ndarray | None = None
        self.resume_check = False
        self.estop_seen = shared.estop_count.value
        self.step = self.episode = 0
        self.executed_last = (-1, -1, 0)
        self.executed_since_pub: list = []  # [(chunk_id, index, t_ns)] reached since the last state
        self.last_scheduled: dict = {}
        self.starved = False
        self.err_hist = np.zeros(ERR_BINS + 1, np.int64)  # |period error| histogram (timing.ERR_BIN_NS bins)
        self.running = True
        self.spin_ns = cfg.spin_us * 1000
        self.outbox: queue.Queue = queue.Queue()  # states are dropped past OUTBOX_STATES; events/replies never
        self.n_dropped = 0
        self.tick_flags = 0  # what the current tick did (TickTrace.F_*), for the per-tick trace
        # the pipe tested with a plain poll(2) every tick (``Connection.poll`` builds a selector per call)
        self.pipe = select.poll()
        self.pipe.register(conn.fileno(), select.POLLIN)
        self.writer = threading.Thread(target=self._writer, name="servo-writer", daemon=True)
        self.writer.start()
        self.state: RobotState = self.driver.read_state()

    # -- messages ---------------------------------------------------------------------------
    def send(self, obj: dict, droppable: bool = False) -> None:
        """Queue a message for the I/O process; never blocks the tick. A state (``droppable``) is dropped
        and counted while the I/O process lags; replies and events never are: the controller is owed them."""
        if droppable and self.outbox.qsize() >= OUTBOX_STATES:
            self.n_dropped += 1
            return
        self.outbox.put_nowait(channel.pack(obj))

    def _writer(self) -> None:
        # a blocked pipe (I/O process stalled) stalls only this thread, never the servo tick
        while True:
            data = self.outbox.get()
            if data is None:
                return
            try:
                self.conn.send_bytes(data)
            except OSError:
                self.running = False
                return

    def event(self, kind: str, **data) -> None:
        frames = [b"EVENT"] + [bytes(f) for f in P.encode("EVENT", {"kind": kind, "data": data})]
        self.send({"kind": "pub", "status": self.watchdog.state, "t_ns": self.now_ns(), "frames": frames,
                   "event": kind, "data": P.fit_strings(data)})

    def chunks_dropped(self, chunk_ids: list, reason: str) -> None:
        """Tell the controller which ACKed chunks lost waypoints that will never run, and why."""
        for i in range(0, len(chunk_ids), MAX_IDS_PER_EVENT):
            self.event("chunk_dropped", chunk_ids=list(chunk_ids[i:i + MAX_IDS_PER_EVENT]), reason=reason)

    def reply(self, req: int, ok: bool, code: str = "", info: dict | None = None) -> None:
        self.send({"kind": "reply", "req": req, "ok": ok, "code": code, "info": info or {}})

    def now_ns(self) -> int:
        """Server time: monotonic wall clock, or simulation time in lockstep."""
        return self.step * self.period_ns if self.cfg.lockstep else time.monotonic_ns()

    def drain(self, timeout_s: float = 0.0, max_msgs: int = 64) -> None:
        for _ in range(max_msgs):
            if not self.pipe.poll(timeout_s * 1000.0):
                return
            timeout_s = 0.0
            try:
                cmd = channel.unpack(self.conn.recv_bytes())
            except (EOFError, OSError):
                self.running = False  # the I/O process is gone: stop the arm and exit
                return
            self.tick_flags |= TickTrace.F_CMD
            self.handle(cmd)

    # -- one tick -----------------------------------------------------------------------------
    def poll_estop(self) -> None:
        """Latch ESTOP if the I/O process counted a new e-stop (the shared word jumps the pipe queue)."""
        count = self.shared.estop_count.value
        if count != self.estop_seen:
            self.emit_transitions()  # earlier transitions are published with the epoch they happened in
            self.estop_seen = count
            if self.watchdog.trip("ESTOP", f"e-stop {count} requested"):
                self._clear("e-stop")
                self.driver.stop()
            else:  # already latched: the reason names the newest epoch, the one the next ARM must acknowledge
                self.watchdog.reason = f"e-stop {count} requested"

    def guard(self) -> None:
        """E-stop, watchdog and force checks; latch and stop motion on any trip."""
        self.poll_estop()
        self.watchdog.on_command(self.shared.last_cmd_ns.value)
        if self.watchdog.check(time.monotonic_ns()) or \
                (self.watchdog.motion_allowed and self.safety.force_exceeded(self.state)
                 and self.watchdog.trip("HOLD", f"contact force {np.linalg.norm(self.state.ee_force_n):.0f} N "
                                                f"over the limit {self.safety.limits.force_max_n:.0f} N")):
            self._clear(self.watchdog.reason)
            self.driver.hold()
        self.emit_transitions()

    def emit_transitions(self) -> None:
        """Publish the watchdog's transitions as ``state`` events, each with the e-stop epoch."""
        for old, new, reason in self.watchdog.drain():
            self.event("state", old=old, new=new, reason=reason, t_ns=time.monotonic_ns(),
                       estop_epoch=self.estop_seen)
            if new == "IDLE" or new in LATCHED:
                self._clear(reason)

    def move(self) -> bool:
        """Scheduler -> safety -> driver; return True if a setpoint was sent."""
        if not self.watchdog.motion_allowed or self.scheduler is None:
            return False
        tick = self.scheduler.tick(self.now_ns(), self.last_setpoint)
        if tick is None:
            return False
        try:
            sp, grip = self.safety.filter(self.mode, tick.setpoint, tick.gripper, self.state, self.period_ns / 1e9)
            sent = self.driver.command(self.mode, sp, grip)
        except Exception as exc:  # noqa: BLE001  any driver/safety failure must latch FAULT, never kill the loop
            self.fault(P.truncate(f"{type(exc).__name__}: {exc}"))
            return False
        self.last_setpoint = np.asarray(sent, float) if self.mode in ("joint_pos", "ee_pose") else None
        self.starved = tick.starved
        if tick.executed:
            self.executed_last = tick.executed[-1]
            self.executed_since_pub += [list(e) for e in tick.executed]
        return True

    def publish_state(self) -> None:
        p50_us, p99_us = period_err_percentiles_us(self.err_hist)
        body = {"t_ns": self.now_ns(), "wall_ns": time.monotonic_ns(), "t_capture_ns": self.state.t_capture_ns,
                "status": self.watchdog.state, "reason": self.watchdog.reason, "mode": self.mode or "",
                "estop_epoch": self.estop_seen,
                "starved": self.starved, "episode": self.episode, "step": self.step,
                "exec": list(self.executed_last), "executed": self.executed_since_pub[-MAX_IDS_PER_EVENT:],
                "executed_omitted": max(0, len(self.executed_since_pub) - MAX_IDS_PER_EVENT),
                "scheduled": self.last_scheduled, "buffered": self.scheduler.remaining if self.scheduler else 0,
                "clamps": dict(self.safety.clamps), "gripper": float(self.state.gripper),
                "period_err_p50_us": p50_us, "period_err_p99_us": p99_us, "ticks": int(self.err_hist.sum()),
                "extras": scalar_extras(self.state.extras)}
        self.executed_since_pub = []
        # encoded here, so the I/O process only forwards bytes (its time belongs to the command path)
        frames = [b"STATE"] + [bytes(f) for f in P.encode("STATE", {"state": body}, state_arrays(self.state))]
        self.send({"kind": "pub", "status": self.watchdog.state, "t_ns": body["t_ns"], "frames": frames},
                  droppable=True)

    def run(self) -> None:
        self.send({"kind": "ready", "info": asdict(self.info), "servo_rate_hz": self.rate_hz,
                   "dims": self.dims, "period_ns": self.period_ns, "sched": getattr(self, "sched", "normal")})
        try:
            (self._run_lockstep if self.cfg.lockstep else self._run_realtime)()
        finally:
            self.driver.stop()
            self.driver.close()
            self.outbox.put(None)
            self.writer.join(1.0)

    def _run_realtime(self) -> None:
        state_every = max(1, round(self.rate_hz / self.cfg.state_rate_hz))
        next_ns, prev_ns, k = time.monotonic_ns(), None, 0
        slack_gc = SlackGC()
        slack_gc.start()
        trace = TickTrace(os.environ["ARMFLOW_SERVO_TRACE"]) if os.environ.get("ARMFLOW_SERVO_TRACE") else None
        try:
            while self.running:
                if trace is not None:
                    trace.begin()
                deadline = next_ns
                sleep_until(next_ns, self.spin_ns)
                t = time.monotonic_ns()
                if prev_ns is not None:
                    record_period_error(self.err_hist, t - prev_ns - self.period_ns)
                prev_ns = t
                next_ns += self.period_ns
                if t - deadline > self.period_ns // REPHASE_FRACTION:
                    next_ns = t + self.period_ns  # woke late: re-phase (see REPHASE_FRACTION)
                k += 1
                self.tick_flags = 0
                self.safely(self._tick_realtime, k % state_every == 0)
                t_work = time.monotonic_ns()
                gc_before = slack_gc.n
                slack_gc.after_tick()  # after the tick's command went out, before the sleep
                if trace is not None:
                    trace.record(deadline, t, t_work, self.tick_flags | TickTrace.F_GC * (slack_gc.n != gc_before))
        finally:
            slack_gc.stop()
            if trace is not None:
                trace.save()

    def safely(self, tick, *args) -> None:
        """Run one tick; an exception from the driver (or a bug) latches FAULT instead of ending the process."""
        try:
            tick(*args)
        except Exception as exc:  # noqa: BLE001
            self.fault(P.truncate(f"servo tick: {type(exc).__name__}: {exc}"))

    def _tick_realtime(self, publish: bool) -> None:
        self.guard()
        self.drain()
        self.state = self.driver.read_state()
        if self.move():
            self.step += 1  # commands sent to the driver (= env steps for a sim task)
            self.tick_flags |= TickTrace.F_MOVED
        if publish:
            self.publish_state()
            self.tick_flags |= TickTrace.F_PUB

    def _run_lockstep(self) -> None:
        idle_every_ns = int(1e9 / self.cfg.state_rate_hz)
        self.last_pub = 0
        while self.running:
            self.safely(self._tick_lockstep, idle_every_ns)

    def _tick_lockstep(self, idle_every_ns: int) -> None:
        self.guard()
        if self.move():
            self.step += 1
            self.state = self.driver.read_state()
            self._end_episode_if_done()
            self.publish_state()
            self.last_pub = time.monotonic_ns()
            self.drain()
            return
        self.drain(timeout_s=0.002)
        if time.monotonic_ns() - self.last_pub > idle_every_ns:
            self.publish_state()
            self.last_pub = time.monotonic_ns()

    def _end_episode_if_done(self) -> None:
        """Lockstep: a finished episode (success / terminated / truncated) executes nothing more until RESET."""
        extras = self.state.extras
        if any(bool(extras.get(k, False)) for k in ("success", "terminated", "truncated")):
            self._clear("episode finished (success / terminated / truncated): RESET for the next")


def servo_main(cfg: ServoConfig, conn, shared: channel.SharedWords) -> None:
    """Entry point of the servo process."""
    # Ctrl-C reaches the whole process group: the I/O process shuts the servo down in order (stop message,
    # or pipe EOF if it died), so the servo must not die half-way through a tick on SIGINT.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sched = set_realtime_priority(cfg.rt_priority if not cfg.lockstep else 0)
    try:
        loop = ServoLoop(cfg, conn, shared)
        loop.sched = sched
        if sched.startswith("SCHED_FIFO"):
            loop.spin_ns = min(loop.spin_ns, 80_000)  # FIFO wakes on time: spin less, leave the CPU to the I/O
            # the tick thread (its writer thread, made in ServoLoop.__init__, stays FIFO) ahead of every FIFO task
            deadline = set_deadline_scheduling(loop.period_ns)
            loop.sched = f"{deadline} (writer thread {sched})" if deadline else sched
    except Exception as exc:  # report any start failure to the I/O process, then exit
        conn.send_bytes(channel.pack({"kind": "fatal", "error": f"{type(exc).__name__}: {exc}"}))
        raise
    loop.run()
