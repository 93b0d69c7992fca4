"""The bridge server's request handling (HELLO, ARM, DISARM, CHUNK, ESTOP, ...), apart from its sockets and
lifecycle (``server.py``).

``RequestHandlers`` is ``BridgeServer``'s base: each request is decoded, checked against the session, lease and
e-stop epoch, answered (ACK / NACK / WELCOME) and passed on to the servo process. No message, however hostile, ends
the server; nothing but authentication can refuse an e-stop.
"""
from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass

from armflow.control import channel, protocol as P
from armflow.control.scheduler import admit
from armflow.control.watchdog import MOVING

log = logging.getLogger("armflow.control.server")
MAX_SESSIONS = 256


@dataclass
class Session:
    session: str
    role: str
    last_seen_ns: int
    estop_epoch: int = 0  # the e-stop epoch in its WELCOME: what an ARM without ``estop_epoch`` acknowledges


class RequestHandlers:
    # -- requests -------------------------------------------------------------------------------
    def estop(self, ident: bytes, seq: int, malformed: str = "", reason: str = "") -> None:
        """Stop the arm and ACK. Nothing but authentication (CURVE, below this layer) can refuse an
        e-stop: not a missing session, nor any malformed field; the ACK says what was wrong."""
        self.shared.estop_count.value += 1  # the servo polls it every tick: jumps the pipe queue
        epoch = self.shared.estop_count.value
        sess = self.sessions.get(ident)
        who = sess.role if sess is not None else "a client without a session"
        self.estop_reason = P.truncate(f"{reason or ('malformed' if malformed else 'no reason')!r} from {who}", 96)
        log.warning("e-stop %d: %s", epoch, self.estop_reason)
        info = {"applied": True, "estop_epoch": epoch, **({"malformed": malformed} if malformed else {})}
        self.send(ident, "ACK", {"ack_seq": seq, "info": info})

    def arm_refusal(self, sess: Session, msg: P.Message) -> tuple[str, str]:
        """``(code, reason)`` if this ARM does not acknowledge the newest e-stop (``("", "")`` if it does).
        An ARM without ``estop_epoch`` (protocol 1.0) acknowledges its WELCOME's epoch: fail safe, it cannot
        clear an e-stop its sender may never have heard of."""
        named = msg.body.get("estop_epoch")
        seen, current = (sess.estop_epoch if named is None else named), self.shared.estop_count.value
        if seen > current:
            return "bad_field", f"ARM.estop_epoch={seen} > the server's e-stop epoch {current}"
        if seen == current:
            return "", ""
        how = ("this ARM names no estop_epoch (protocol 1.0 client): reconnect (HELLO) or upgrade" if named is None
               else f"see the e-stop (STATE estop_epoch) and ARM with estop_epoch={current}")
        return "estopped", self.estopped_reason(seen, current, how)

    def estopped_reason(self, seen: int, current: int, how: str) -> str:
        return f"e-stop {current} ({self.estop_reason}) not acknowledged: ARM names epoch {seen}; {how}"

    def on_request(self, ident: bytes, frames: list) -> None:
        """Handle one request; no message, however hostile, ends the server (bugs are NACKed ``internal``)."""
        try:
            self._on_request(ident, frames)
        except Exception as exc:  # noqa: BLE001
            self.n_internal += 1
            log.exception("request from %s failed", ident.hex())
            if P.peek(frames)[0] == "ESTOP":
                self.estop(ident, P.peek(frames)[1], f"{type(exc).__name__}: {exc}")
                return
            try:
                self.nack(ident, P.peek(frames)[1], "internal", f"server error: {type(exc).__name__}: {exc}")
            except Exception:  # noqa: BLE001  the answer itself failed: the request stays unanswered
                log.exception("could not NACK")

    def _on_request(self, ident: bytes, frames: list) -> None:
        t_recv = time.monotonic_ns()
        try:
            msg = P.decode(frames, expect=P.REQUEST_TYPES, raw=True)  # arrays stay bytes: see on_chunk
        except P.ProtocolError as exc:
            self.n_bad += 1
            kind, seq = P.peek(frames)
            if kind == "ESTOP":
                self.estop(ident, seq, str(exc))
            else:
                self.nack(ident, seq, exc.code, str(exc))
            return
        if msg.type == "HELLO":
            self.on_hello(ident, msg)
            return
        sess = self.sessions.get(ident)
        if msg.type == "ESTOP" and (sess is None or msg.session != sess.session):
            # a stop needs no session: any client that can connect may stop
            self.estop(ident, msg.seq, reason=msg.body.get("reason", ""))
            return
        if sess is None or msg.session != sess.session:
            self.nack(ident, msg.seq, "no_session", "send HELLO first (or session id mismatch)")
            return
        sess.last_seen_ns = t_recv
        is_ctrl = ident == self.controller
        if is_ctrl:
            self.shared.last_cmd_ns.value = t_recv  # watchdog feed: any valid message from the lease holder
        if msg.type == "ESTOP":  # anyone connected may stop the robot; it jumps the queue
            self.estop(ident, msg.seq, reason=msg.body.get("reason", ""))
        elif msg.type == "TIME_SYNC":
            self.send(ident, "ACK", {"ack_seq": msg.seq, "info": {"t0_ns": msg.body["t0_ns"], "t1_ns": t_recv,
                                                                  "t2_ns": time.monotonic_ns()}})
        elif msg.type == "HEARTBEAT":
            self.send(ident, "ACK", {"ack_seq": msg.seq})
        elif msg.type == "BYE":
            self.sessions.pop(ident, None)
            if is_ctrl:
                self._set_lease(None)
            self.send(ident, "ACK", {"ack_seq": msg.seq})
        elif not is_ctrl:
            self.nack(ident, msg.seq, "not_controller", f"{msg.type} needs the controller lease")
        elif msg.type == "CHUNK":
            self.on_chunk(ident, msg)
        elif msg.type == "ARM" and (refused := self.arm_refusal(sess, msg))[0]:
            self.nack(ident, msg.seq, *refused)
        else:  # ARM, DISARM, RESET: answered when the servo has applied them
            self.req_counter += 1
            self.pending[self.req_counter] = (ident, msg.seq, sess.session, msg.type)
            # the e-stop count when sent: an ARM from before an e-stop must not re-arm after it (pipe order)
            self.to_servo({"cmd": msg.type.lower(), "req": self.req_counter, **msg.body,
                           "estop_epoch": self.shared.estop_count.value})

    def servo_now_ns(self) -> int:
        """The servo's clock: the shared monotonic clock, or the newest published simulation time."""
        return self.servo_t_ns if self.cfg.lockstep else time.monotonic_ns()

    def chunk_refusal(self, msg: P.Message, n: int) -> tuple[str, str]:
        """``(code, reason)`` if the chunk cannot run, judged at receipt from the servo's mirrored state."""
        body = msg.body
        if self.servo_status not in MOVING:
            return "not_armed", f"state is {self.servo_status}; ARM first"
        if body["action_space"] != self.armed_mode:
            return "wrong_mode", f"chunk action_space {body['action_space']} != armed mode {self.armed_mode}"
        if body["chunk_id"] <= self.last_chunk_id:
            return "bad_chunk_id", (f"chunk_id {body['chunk_id']} <= last accepted {self.last_chunk_id} "
                                    "(ids must increase: duplicate or replay?)")
        return admit(body["t0_ns"], body["dt_ns"], n, self.servo_now_ns(), int(self.cfg.exec_latency_ms * 1e6),
                     int(self.cfg.actuator_latency_ms * 1e6))

    def on_chunk(self, ident: bytes, msg: P.Message) -> None:
        """ACK means "will run": every check that can be made here is. What changes before the servo
        inserts it (a trip, the clock) is reported by the servo as a ``chunk_rejected`` event at once."""
        try:
            actions, gripper = P.validate_chunk(msg, self.ready["dims"])
        except P.ProtocolError as exc:
            self.n_bad += 1
            self.nack(ident, msg.seq, exc.code, str(exc))
            return
        code, reason = self.chunk_refusal(msg, len(actions))
        if code:
            self.nack(ident, msg.seq, code, f"chunk {msg.body['chunk_id']}: {reason}")
            return
        self.last_chunk_id = msg.body["chunk_id"]
        # ACK first: the servo hand-off is off the round-trip path. The arrays were checked as bytes and go
        # on as bytes (the servo builds the ndarrays): numpy stays off the I/O process's command path.
        self.send(ident, "ACK", {"ack_seq": msg.seq, "info": {"chunk_id": msg.body["chunk_id"]}})
        self.to_servo({"cmd": "chunk", **msg.body, "actions": channel.array_ext(actions),
                       "gripper": None if gripper is None else channel.array_ext(gripper)})

    def on_hello(self, ident: bytes, msg: P.Message) -> None:
        body, info = msg.body, self.ready["info"]
        if msg.version[0] != P.PROTOCOL_VERSION[0]:
            reason = (f"protocol major {msg.version[0]} != server {P.PROTOCOL_VERSION[0]} "
                      f"(server speaks {P.PROTOCOL_VERSION})")
            self.send(ident, "REJECT", {"reason": reason, "code": "version"})
            return
        role = body["role"]
        if role not in P.ROLES:
            self.send(ident, "REJECT", {"reason": f"role {role!r}; valid: {P.ROLES}", "code": "bad_role"})
            return
        if role == "controller" and not info["is_sim"] and not body.get("allow_real", False):
            self.send(ident, "REJECT", {"reason": "this is a real robot: connect with allow_real=True",
                                        "code": "allow_real"})
            return
        if role == "controller" and self.controller not in (None, ident):
            self.send(ident, "REJECT", {"reason": "another controller holds the lease", "code": "lease_held"})
            return
        t_cmd = body.get("t_cmd_ms") or self.t_cmd_ms
        if not 0 < t_cmd <= self.t_cmd_max_ms:
            self.send(ident, "REJECT", {"reason": f"t_cmd_ms {t_cmd} outside (0, {self.t_cmd_max_ms}]",
                                        "code": "bad_t_cmd"})
            return
        session = secrets.token_hex(8)
        if len(self.sessions) >= MAX_SESSIONS:  # bounded: forget the longest-silent observer
            others = [i for i in self.sessions if i != self.controller]
            oldest = min(others, key=lambda i: self.sessions[i].last_seen_ns)
            del self.sessions[oldest]
        epoch = self.shared.estop_count.value
        self.sessions[ident] = Session(session, role, time.monotonic_ns(), epoch)
        if role == "controller":
            self.shared.last_cmd_ns.value = time.monotonic_ns()
            self._set_lease(ident, t_cmd)
        self.send(ident, "WELCOME", {
            "session": session, "robot": info, "limits": self.limits.to_dict(), "limits_hash": self.limits.hash,
            "servo_rate_hz": self.ready["servo_rate_hz"], "state_rate_hz": self.cfg.state_rate_hz,
            "server_time_ns": time.monotonic_ns(), "timing": "lockstep" if self.cfg.lockstep else "realtime",
            "t_cmd_ms": int(t_cmd), "role": role, "action_dims": self.ready["dims"],
            "pub_endpoint": self.pub_endpoint, "estop_epoch": epoch}, seq=msg.seq, session=session)
