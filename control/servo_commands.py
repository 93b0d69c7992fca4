"""The servo loop's command handling (ARM, DISARM, CHUNK, RESET, lease, stop), apart from its tick (``servo.py``).

``ServoCommands`` is ``ServoLoop``'s base: the methods read and write the loop's state (watchdog, safety layer,
scheduler, driver, mode) and answer through its ``reply`` / ``event``. A command the driver fails on latches FAULT
and is answered; it never ends the servo process.
"""
from __future__ import annotations

import time
from dataclasses import asdict

import numpy as np

from armflow.control import protocol as P
from armflow.control.scheduler import ChunkScheduler
from armflow.hardware.driver import DriverError


class ServoCommands:
    def handle(self, cmd: dict) -> None:
        """Apply one command. Whatever a controller's command makes the driver raise latches FAULT and is
        answered (NACK / event); it never ends the servo process."""
        try:
            self._handle(cmd)
            self.emit_transitions()  # at once: a state event's t_ns is when the command changed the state
        except Exception as exc:  # noqa: BLE001  driver / simulator errors of any type
            reason = P.truncate(f"{cmd.get('cmd', '?').upper()} failed: {type(exc).__name__}: {exc}")
            self.fault(reason)
            if "req" in cmd:
                self.reply(cmd["req"], False, "driver_error", {"reason": reason, "state": self.watchdog.state})
            elif cmd.get("cmd") == "chunk":
                self.event("chunk_rejected", chunk_id=cmd.get("chunk_id"), reason=reason)

    def fault(self, reason: str) -> None:
        """Latch FAULT, drop the buffer and stop the driver (best effort: it may be what failed)."""
        self.watchdog.trip("FAULT", reason)
        self._clear(reason)
        try:
            self.driver.stop()
        except Exception:  # noqa: BLE001  already faulted; the latch stops all commanding
            pass

    def _handle(self, cmd: dict) -> None:
        kind = cmd["cmd"]
        if kind == "lease":
            if cmd.get("t_cmd_ms"):
                self.watchdog.t_cmd_ns = int(cmd["t_cmd_ms"] * 1e6)
            self.watchdog.on_lease(cmd["held"])
        elif kind == "arm":
            self._arm(cmd)
        elif kind == "disarm":
            self.watchdog.on_disarm()
            self._clear("disarmed")
            self.reply(cmd["req"], True, info={"state": self.watchdog.state})
        elif kind == "chunk":
            self._chunk(cmd)
        elif kind == "reset":
            self._reset(cmd)
        elif kind == "stop":
            self.running = False

    def _clear(self, reason: str) -> None:
        if self.scheduler is not None:
            dropped = self.scheduler.clear()
            if dropped:
                self.chunks_dropped(dropped, reason)

    def _arm(self, cmd: dict) -> None:
        """ARM (or re-ARM after a latch). The I/O process checked that it acknowledges the newest e-stop
        epoch; an e-stop that overtook it in the pipe refuses it here. A pending e-stop latches first, so an
        ARM that acknowledges it clears it now rather than being undone a tick later."""
        mode = cmd["mode"]
        self.poll_estop()
        acknowledged = cmd.get("estop_epoch", self.estop_seen)
        if acknowledged != self.estop_seen:
            self.reply(cmd["req"], False, "estopped", {"acknowledged": acknowledged, "estop_epoch": self.estop_seen,
                                                       "state": self.watchdog.state})
            return
        if not self.safety.check_mode(mode):
            self.reply(cmd["req"], False, "mode_gated", {"reason": f"mode {mode} not allowed"})
            return
        if self.watchdog.state in ("FAULT", "ESTOP"):
            try:
                self.driver.recover()
            except DriverError as exc:
                self.reply(cmd["req"], False, "recover_failed", {"reason": str(exc)})
                return
        ok, reason = self.watchdog.on_arm(time.monotonic_ns())
        if not ok:
            self.reply(cmd["req"], False, "not_leased", {"reason": reason})
            return
        self.state = self.driver.read_state()
        self._clear(f"re-armed ({mode})")
        self.mode, self.resume_check = mode, True
        self.scheduler = ChunkScheduler(mode, self.dims[mode], int(self.cfg.exec_latency_ms * 1e6),
                                        int(self.cfg.actuator_latency_ms * 1e6), lockstep=self.cfg.lockstep)
        self.safety.reset(mode, self.state)
        self.last_setpoint = self.safety.prev.copy() if mode in ("joint_pos", "ee_pose") else None
        self.reply(cmd["req"], True, info={"state": self.watchdog.state, "mode": mode})

    def _chunk(self, cmd: dict) -> None:
        """The I/O process ACKed this chunk after checking what it could (mode, order, times); what changed
        since (state, mode, time, resume distance) is reported at once as ``chunk_rejected``."""
        cmd["actions"] = np.asarray(cmd["actions"], np.float64)  # float32 frames are passed on as sent
        if cmd.get("gripper") is not None:
            cmd["gripper"] = np.asarray(cmd["gripper"], np.float64)
        reason = self._chunk_refusal(cmd)
        if reason:
            self.event("chunk_rejected", chunk_id=cmd["chunk_id"], reason=reason)
            return
        res = self.scheduler.insert(cmd["chunk_id"], cmd["t0_ns"], cmd["dt_ns"], cmd["actions"], cmd.get("gripper"),
                                    self.now_ns(), self.last_setpoint)
        if not res.n_kept:
            self.event("chunk_rejected", chunk_id=cmd["chunk_id"],
                       reason=f"stale on arrival: all {res.n_stale} waypoints due before servo now + exec latency")
            return
        self.watchdog.on_chunk()
        if res.superseded:
            self.chunks_dropped(res.superseded, f"replaced by chunk {cmd['chunk_id']} before any waypoint ran")
        self.resume_check = False
        self.last_scheduled = {"chunk_id": cmd["chunk_id"], **asdict(res)}  # reported in the next state

    def _chunk_refusal(self, cmd: dict) -> str:
        """Why a chunk cannot run now ("" if it can): state, mode, resume distance."""
        if not self.watchdog.motion_allowed:
            return f"state is {self.watchdog.state}; ARM first"
        if cmd["action_space"] != self.mode:
            return f"chunk action_space {cmd['action_space']} != armed mode {self.mode}"
        if self.resume_check:
            first = self.scheduler.first_kept_index(cmd["t0_ns"], cmd["dt_ns"], len(cmd["actions"]), self.now_ns())
            if first is not None:
                good, dist = self.safety.resume_ok(self.mode, cmd["actions"][first], self.state)
                if not good:
                    return f"first waypoint {dist:.3f} from the measured pose exceeds max_resume_delta"
        return ""

    def _reset(self, cmd: dict) -> None:
        if not (self.info.is_sim and hasattr(self.driver, "reset")):
            self.reply(cmd["req"], False, "not_sim", {"reason": "RESET is simulation-only"})
            return
        seed = int(cmd["seed"])
        if not 0 <= seed <= P.SEED_MAX:  # the protocol refuses these already; the driver must never see one
            self.reply(cmd["req"], False, "bad_field", {"reason": f"RESET.seed={seed} outside [0, {P.SEED_MAX}]"})
            return
        self._clear("RESET (new episode)")
        self.driver.reset(seed)
        self.step, self.episode = 0, self.episode + 1
        self.state = self.driver.read_state()
        if self.mode is not None:
            self.safety.reset(self.mode, self.state)
            self.last_setpoint = self.safety.prev.copy() if self.mode in ("joint_pos", "ee_pose") else None
        self.publish_state()
        self.reply(cmd["req"], True, info={"episode": self.episode})
