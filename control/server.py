"""The bridge server's I/O process: ROUTER (control) + PUB (state, events), handshake, lease.

The servo loop runs in its own process (``control/servo.py``) and owns the driver; this
process only validates messages, keeps sessions and the controller lease, and relays:
requests -> servo over a pipe (+ shared-memory watchdog/e-stop words), servo state/events
-> PUB, servo replies -> ACK/NACK. CHUNK and HEARTBEAT are acknowledged here right after
validation (the fast path the round-trip benchmark measures); ARM/DISARM/RESET are
acknowledged when the servo has applied them.

E-stops are counted (the shared ``estop_count``, published as ``estop_epoch``). An ARM must name the
newest epoch (``ARM.estop_epoch``; without it, its session's WELCOME epoch): one that does not is NACKed
``estopped`` here, at receipt, so an ARM that raced another client's e-stop (sent before its sender heard
of it) never re-arms the arm; the servo repeats the check for ARMs already in its pipe.
"""
from __future__ import annotations

import gc
import logging
import os
import secrets
import select
import time
from dataclasses import dataclass, field

import zmq

from armflow.control import channel, protocol as P
from armflow.control.limits import SafetyLimits, default_limits_name, load_limits
from armflow.control.scheduler import admit
from armflow.control.security import CurveConfig, check_endpoint, make_curve_server, start_authenticator
from armflow.control.servo import ServoConfig, servo_main
from armflow.control.timing import set_realtime_priority
from armflow.control.watchdog import MOVING

log = logging.getLogger("armflow.control.server")
MAX_SESSIONS = 256
#: Requests queued per peer before libzmq stops reading from it (x MAX_REQUEST_FRAME_BYTES bounds its memory).
ROUTER_RCVHWM = 64


class ServerError(RuntimeError):
    """The server could not start (servo failed, endpoint refused, ...)."""


@dataclass
class ServerConfig:
    robot: str = "fake_arm"
    robot_options: dict = field(default_factory=dict)
    limits: str | None = None  # name under configs/safety_limits/ or a YAML path; None: default_limits_name
    endpoint: str = "ipc:///tmp/armflow-bridge"
    pub_endpoint: str | None = None  # default: derived from endpoint
    lockstep: bool = False
    servo_rate_hz: float | None = None
    state_rate_hz: float = 100.0
    t_cmd_ms: int | None = None  # default: the limits file's t_cmd_ms_default
    lease_timeout_ms: int = 5000  # a silent controller loses its lease (and session) after this
    exec_latency_ms: float = 0.0
    actuator_latency_ms: float = 0.0
    curve: CurveConfig | None = None
    rt_priority: int = 0  # > 0: SCHED_FIFO priority of the servo process (real-time mode)
    # SCHED_FIFO priority of this I/O process (its ZeroMQ threads included), which is on every command's round
    # trip: None -> rt_priority - 1 (below the servo, which must never wait for it) when rt_priority > 1; 0: off
    io_rt_priority: int | None = None
    start_method: str = "spawn"
    ready_timeout_s: float = 120.0


def derive_pub_endpoint(endpoint: str) -> str:
    if endpoint.startswith("tcp://"):
        host, port = endpoint[len("tcp://"):].rsplit(":", 1)
        return f"tcp://{host}:*" if port == "*" else f"tcp://{host}:{int(port) + 1}"
    return endpoint + ".pub"


@dataclass
class Session:
    session: str
    role: str
    last_seen_ns: int
    estop_epoch: int = 0  # the e-stop epoch in its WELCOME: what an ARM without ``estop_epoch`` acknowledges


class BridgeServer:
    """Start with ``start()``, run ``serve(should_stop)``, always ``close()``."""

    def __init__(self, cfg: ServerConfig):
        self.cfg = cfg
        self.limits_name = cfg.limits or default_limits_name(cfg.robot, cfg.robot_options)
        self.limits: SafetyLimits = load_limits(self.limits_name)
        t_cmd_max = self.limits.t_cmd_ms_max_lockstep if cfg.lockstep else self.limits.t_cmd_ms_max
        # lockstep sim cannot move while the policy thinks, so it tolerates slow (CPU) inference by default
        self.t_cmd_ms = int(cfg.t_cmd_ms or (t_cmd_max if cfg.lockstep else self.limits.t_cmd_ms_default))
        if not 0 < self.t_cmd_ms <= t_cmd_max:
            raise ServerError(f"t_cmd_ms={self.t_cmd_ms} outside (0, {t_cmd_max}] allowed by {self.limits_name}")
        self.t_cmd_max_ms = t_cmd_max
        for ep in (cfg.endpoint, cfg.pub_endpoint or derive_pub_endpoint(cfg.endpoint)):
            check_endpoint(ep, cfg.curve)
        self.sessions: dict[bytes, Session] = {}
        self.controller: bytes | None = None
        self.pending: dict[int, tuple[bytes, int, str, str]] = {}  # req -> (ident, seq, session, type)
        self.req_counter = 0
        self.n_bad = self.n_internal = 0
        # the servo's view, mirrored from its replies and states, to refuse at receipt what cannot run
        self.armed_mode: str | None = None
        self.last_chunk_id = -1  # chunk ids must increase with every ACKed CHUNK of a lease
        self.servo_t_ns = 0  # lockstep: the newest simulation time the servo published
        self.ctx = self.router = self.pub = self.auth = self.proc = self.conn = None
        self.ready: dict = {}
        self.servo_status = "DISCONNECTED"  # as last reported by the servo (pipe order)
        self.estop_reason = ""  # why the newest e-stop was sent (named when an ARM is refused for it)

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        mp = channel.get_context(self.cfg.start_method)
        self.shared = channel.SharedWords.create(mp)
        self.conn, child = mp.Pipe(duplex=True)
        scfg = ServoConfig(self.cfg.robot, dict(self.cfg.robot_options), self.limits.to_dict(), self.cfg.lockstep,
                           self.cfg.servo_rate_hz, self.cfg.state_rate_hz, self.t_cmd_ms,
                           self.cfg.exec_latency_ms, self.cfg.actuator_latency_ms, rt_priority=self.cfg.rt_priority)
        self.proc = mp.Process(target=servo_main, args=(scfg, child, self.shared), name="armflow-servo")
        self.proc.start()
        child.close()
        if not self.conn.poll(self.cfg.ready_timeout_s):
            raise ServerError(f"servo process not ready after {self.cfg.ready_timeout_s} s")
        msg = channel.unpack(self.conn.recv_bytes())
        if msg["kind"] != "ready":
            raise ServerError(f"servo process failed to start: {msg.get('error', msg)}")
        self.ready = msg
        io_prio = self.cfg.io_rt_priority
        if io_prio is None:
            io_prio = self.cfg.rt_priority - 1 if self.cfg.rt_priority > 1 and not self.cfg.lockstep else 0
        # before the ZeroMQ context exists, so that its I/O threads inherit the policy
        self.io_sched = set_realtime_priority(io_prio)
        self._bind()
        # everything built so far lives as long as the server: out of the collector's sight, so a full
        # collection scans only what requests create and never stalls the command path for milliseconds
        gc.freeze()
        log.info("bridge up: robot=%s control=%s pub=%s limits=%s hash=%s servo=%s io=%s", self.cfg.robot,
                 self.endpoint, self.pub_endpoint, self.limits_name, self.limits.hash, msg.get("sched"), self.io_sched)

    def _bind(self) -> None:
        self.ctx = zmq.Context()
        if self.cfg.curve is not None:
            self.auth = start_authenticator(self.ctx, self.cfg.curve)
        self.router = self.ctx.socket(zmq.ROUTER)
        self.pub = self.ctx.socket(zmq.PUB)
        for sock in (self.router, self.pub):
            sock.linger = 0
            if self.cfg.curve is not None:
                make_curve_server(sock, self.cfg.curve)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 0)
        # libzmq refuses (and disconnects) an oversize frame before reading it, authenticated or not
        self.router.maxmsgsize = P.MAX_REQUEST_FRAME_BYTES
        self.router.rcvhwm = ROUTER_RCVHWM
        self.pub.maxmsgsize = P.MAX_SUBSCRIPTION_BYTES  # a PUB reads its subscribers' subscriptions
        self.pub.sndhwm = 100
        self.router.bind(self.cfg.endpoint)
        self.pub.bind(self.cfg.pub_endpoint or derive_pub_endpoint(self.cfg.endpoint))
        self.endpoint = self.router.last_endpoint.decode()
        self.pub_endpoint = self.pub.last_endpoint.decode()

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.send_bytes(channel.pack({"cmd": "stop"}))
            except (OSError, ValueError):
                pass  # the servo already exited and closed its end
        if self.proc is not None:
            self.proc.join(5.0)
            if self.proc.is_alive():
                self.proc.kill()
                self.proc.join(2.0)
        for sock in (self.router, self.pub):
            if sock is not None:
                sock.close(linger=0)
        if self.auth is not None:
            self.auth.stop()
        if self.ctx is not None:
            self.ctx.term()
        for ep in (getattr(self, "endpoint", ""), getattr(self, "pub_endpoint", "")):
            if ep.startswith("ipc://") and os.path.exists(ep[len("ipc://"):]):
                os.unlink(ep[len("ipc://"):])

    def serve(self, should_stop=lambda: False, poll_ms: int = 20) -> None:
        """Run the I/O loop until ``should_stop()`` or the servo process exits.

        Every call here is on the command round trip: one poll wakes the loop, a request is read without a
        second readiness check (requests are small: copied frames are cheaper than zero-copy ones), and the
        servo pipe is tested with a plain ``poll(2)`` (``Connection.poll`` builds a selector per call)."""
        fd = self.conn.fileno()
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(fd, zmq.POLLIN)
        pipe = select.poll()
        pipe.register(fd, select.POLLIN)
        while not should_stop():
            events = dict(poller.poll(poll_ms))
            if self.router in events:
                for _ in range(256):  # drain, but keep serving the servo pipe
                    frames = self.router.recv_multipart()
                    self.on_request(frames[0], frames[1:])
                    if not self.router.get(zmq.EVENTS) & zmq.POLLIN:
                        break
            if fd in events:
                self._drain_servo(pipe)
            self._expire_lease()

    def _drain_servo(self, pipe) -> None:
        while True:
            try:
                self.on_servo(channel.unpack(self.conn.recv_bytes()))
            except EOFError:
                raise ServerError("servo process exited") from None
            if not pipe.poll(0):
                return

    # -- helpers --------------------------------------------------------------------------------
    def send(self, ident: bytes, msg_type: str, body: dict, seq: int = 0, session: str = "") -> None:
        self.router.send_multipart([ident] + P.encode(msg_type, body, seq=seq, session=session))

    def nack(self, ident: bytes, ack_seq: int, code: str, reason: str) -> None:
        self.send(ident, "NACK", {"ack_seq": ack_seq, "code": code, "reason": reason})  # encode truncates

    def to_servo(self, obj: dict) -> None:
        self.conn.send_bytes(channel.pack(obj))

    def _set_lease(self, ident: bytes | None, t_cmd_ms: int | None = None) -> None:
        self.controller = ident
        self.last_chunk_id = -1
        self.to_servo({"cmd": "lease", "held": ident is not None, "t_cmd_ms": t_cmd_ms})

    def _expire_lease(self) -> None:
        if self.controller is None:
            return
        sess = self.sessions.get(self.controller)
        if sess is None or time.monotonic_ns() - sess.last_seen_ns > self.cfg.lease_timeout_ms * 1e6:
            log.warning("controller lease expired")
            self.sessions.pop(self.controller, None)
            self._set_lease(None)

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

    # -- servo -> clients -------------------------------------------------------------------------
    def on_servo(self, msg: dict) -> None:
        kind = msg["kind"]
        if kind == "pub":  # state / event frames, already encoded by the servo process
            self.servo_status = msg["status"]
            self.servo_t_ns = msg.get("t_ns", self.servo_t_ns)
            self.pub.send_multipart(msg["frames"])
            if "event" in msg:
                log.info("event %s %s", msg["event"], msg["data"])
        elif kind == "reply":
            target = self.pending.pop(msg["req"], None)
            if target is None:
                return
            ident, seq, session, msg_type = target
            self.servo_status = msg["info"].get("state", self.servo_status)
            if msg_type == "ARM" and msg["ok"]:
                self.armed_mode = msg["info"]["mode"]
            if msg["ok"]:
                self.send(ident, "ACK", {"ack_seq": seq, "info": msg["info"]}, session=session)
            elif msg["code"] == "estopped":  # an e-stop overtook this ARM in the servo pipe
                info = msg["info"]
                self.nack(ident, seq, "estopped", self.estopped_reason(
                    info["acknowledged"], info["estop_epoch"], "it arrived after this ARM; see it and ARM again"))
            else:
                self.nack(ident, seq, msg["code"], str(msg["info"].get("reason", msg["code"])))
        elif kind == "fatal":
            raise ServerError(f"servo process failed: {msg['error']}")
