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
import select
import time
from dataclasses import dataclass, field

import zmq

from armflow.control import channel, protocol as P
from armflow.control.limits import SafetyLimits, default_limits_name, load_limits
from armflow.control.security import CurveConfig, check_endpoint, make_curve_server, start_authenticator
from armflow.control.server_requests import RequestHandlers, Session
from armflow.control.servo import ServoConfig, servo_main
from armflow.control.timing import set_realtime_priority

log = logging.getLogger("armflow.control.server")
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


class BridgeServer(RequestHandlers):
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
