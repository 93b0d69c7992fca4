"""``BridgeClient``: a remote arm with the same ``Driver`` interface as a local one, plus chunks.

Single-threaded on purpose: heartbeats come from the caller's loop (the loop that produces
actions), so if that loop hangs the server's watchdog holds the arm. Every request waits for
its ACK/NACK with a timeout, so a dead server surfaces as a ``BridgeError`` within
``reply_timeout_s`` (0.5 s default) instead of a hang.

``estop_epoch`` is the newest e-stop this client has heard of (WELCOME, STATE, state EVENTs,
the ACK of its own ESTOP); ``arm`` sends it, so an ARM that crossed another client's e-stop
is refused (``BridgeError`` code ``estopped``) until this client has received that e-stop.
"""
from __future__ import annotations

import time
from collections import deque

import numpy as np
import zmq

from armflow.control import protocol as P
from armflow.control.clock import ClockSync
from armflow.control.security import CurveConfig, endpoint_host, make_curve_client
from armflow.hardware.driver import Driver, RobotInfo, RobotState

CLIENT_VERSION = "armflow-0.1"


class BridgeError(RuntimeError):
    """The bridge refused a request (``code`` set) or the server is unreachable (``code='timeout'``)."""

    def __init__(self, message: str, code: str = "error"):
        super().__init__(message)
        self.code = code


def _sub_endpoint(pub_endpoint: str, control_endpoint: str) -> str:
    host = endpoint_host(pub_endpoint)
    if host in ("0.0.0.0", "*", "::"):  # a wildcard bind: reach it through the host we dialled
        return pub_endpoint.replace(host, endpoint_host(control_endpoint), 1)
    return pub_endpoint


class BridgeClient(Driver):
    """Args:
        endpoint: the server's control endpoint (``ipc://...`` or ``tcp://host:port``).
        role: ``controller`` (takes the lease) or ``observer`` (state only; may still e-stop).
        allow_real: required to control a non-simulated robot.
        t_cmd_ms: requested watchdog timeout (server caps it by its limits file).
        reply_timeout_s: how long a request waits for its ACK before ``BridgeError``.
        state_timeout_s: ``read_state`` fails when the newest state is older than this.
        curve: client CURVE keys for a non-loopback server.
    """

    def __init__(self, endpoint: str, role: str = "controller", allow_real: bool = False, t_cmd_ms: int | None = None,
                 reply_timeout_s: float = 0.5, connect_timeout_s: float = 5.0, state_timeout_s: float = 1.0,
                 curve: CurveConfig | None = None):
        if role not in P.ROLES:
            raise ValueError(f"role {role!r}; valid: {P.ROLES}")
        self.endpoint, self.role, self.allow_real, self.t_cmd_ms = endpoint, role, allow_real, t_cmd_ms
        self.reply_timeout_s, self.connect_timeout_s = reply_timeout_s, connect_timeout_s
        self.state_timeout_s = state_timeout_s
        self.curve = curve
        self.ctx = self.dealer = self.sub = None
        self._rcvtimeo = -1  # the DEALER's RCVTIMEO as last set [ms]
        self.welcome: dict = {}
        self.session = ""
        self.seq = 0
        self.chunk_id = -1
        self.estop_epoch = 0  # the newest e-stop epoch received from the server (what ARM acknowledges)
        self.clock = ClockSync()
        self.status: dict = {}
        self._state: RobotState | None = None
        self._state_rx_ns = 0
        self.events: deque = deque(maxlen=4096)
        self.rtt_ns: deque = deque(maxlen=100_000)  # request -> reply round trips [ns]

    # -- Driver interface -------------------------------------------------------------------------
    def connect(self) -> None:
        """Handshake, subscribe, sync clocks, see a fresh state. Safe to retry after a ``BridgeError``
        (the same socket identity is reused, so a lost WELCOME does not strand the lease)."""
        self.ctx = zmq.Context.instance()
        if self.dealer is None:
            self.dealer = self._socket(zmq.DEALER)
            self._rcvtimeo = -1
            self.dealer.connect(self.endpoint)
        body = {"client_version": CLIENT_VERSION, "role": self.role, "allow_real": self.allow_real}
        if self.t_cmd_ms is not None:
            body["t_cmd_ms"] = int(self.t_cmd_ms)
        reply = self.request("HELLO", body, timeout_s=self.connect_timeout_s, expect=("WELCOME", "REJECT"))
        if reply.type == "REJECT":
            self.close()
            raise BridgeError(f"bridge rejected HELLO: {reply.body['reason']}", reply.body["code"])
        self.welcome, self.session = reply.body, reply.body["session"]
        self.saw_estop(reply.body.get("estop_epoch", 0))
        if self.sub is None:
            self.sub = self._socket(zmq.SUB)
            self.sub.rcvhwm = 1000
            self.sub.setsockopt(zmq.SUBSCRIBE, b"STATE")
            self.sub.setsockopt(zmq.SUBSCRIBE, b"EVENT")
            self.sub.connect(_sub_endpoint(self.welcome["pub_endpoint"], self.endpoint))
        self.sync_clock()
        self.wait_state(lambda s: True, timeout_s=self.connect_timeout_s)  # slow joiner: see a fresh state first

    def _socket(self, kind: int) -> zmq.Socket:
        sock = self.ctx.socket(kind)
        sock.linger = 0
        sock.maxmsgsize = P.MAX_PUB_FRAME_BYTES  # replies and states: libzmq drops a bigger frame unread
        if self.curve is not None:
            make_curve_client(sock, self.curve)
        return sock

    def close(self) -> None:
        if self.dealer is not None and self.session:
            try:
                self.request("BYE", {}, timeout_s=0.2)
            except BridgeError:
                pass  # the server is gone; nothing to release
        for sock in (self.dealer, self.sub):
            if sock is not None:
                sock.close(linger=0)
        self.dealer = self.sub = None
        self.session = ""

    def info(self) -> RobotInfo:
        r = self.welcome["robot"]
        return RobotInfo(**{k: tuple(v) if isinstance(v, list) else v for k, v in r.items()})

    def read_state(self) -> RobotState:
        state = self.latest_state()
        if time.monotonic_ns() - self._state_rx_ns > self.state_timeout_s * 1e9:
            raise BridgeError(f"the newest state from the bridge is older than {self.state_timeout_s} s "
                              "(server down or stalled)", "timeout")
        return state

    def command(self, mode: str, setpoint: np.ndarray, gripper: float | None = None) -> np.ndarray:
        """One waypoint due one servo period from now (a chunk of length 1)."""
        dt_ns = int(1e9 / self.welcome["servo_rate_hz"])
        grip = None if gripper is None else np.array([gripper], float)
        t0 = self._state.t_capture_ns + dt_ns if self.lockstep else self.server_now_ns() + dt_ns
        self.send_chunk(np.asarray(setpoint, float)[None], t0, dt_ns, mode, gripper=grip)
        return np.asarray(setpoint, float)

    def hold(self) -> None:
        self.disarm()

    def stop(self) -> None:
        self.estop("client stop()")

    def recover(self) -> None:
        self.arm(self.status.get("mode") or "joint_pos")

    # -- bridge API -------------------------------------------------------------------------------
    @property
    def lockstep(self) -> bool:
        return self.welcome.get("timing") == "lockstep"

    def server_now_ns(self) -> int:
        return self.clock.to_server(time.monotonic_ns())

    def request(self, msg_type: str, body: dict, arrays: dict | None = None, timeout_s: float | None = None,
                expect: tuple[str, ...] = ("ACK", "NACK")) -> P.Message:
        """Send one request and wait for its reply; NACK -> ``BridgeError(code)``."""
        if self.dealer is None:
            raise BridgeError("not connected", "closed")
        self.seq += 1
        t_send = time.monotonic_ns()
        frames = P.encode(msg_type, body, arrays, seq=self.seq, session=self.session)
        big = False
        for f in frames:
            big = big or len(f) >= 65536  # zero-copy pays off only for large frames
        self.dealer.send_multipart(frames, copy=not big)
        timeout_s = self.reply_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout_s
        while True:
            # a blocking receive with RCVTIMEO: no poller built per request on the command path
            self._set_rcvtimeo(max(0, int((deadline - time.monotonic()) * 1000)) + 1)
            try:
                raw = self.dealer.recv_multipart()
            except zmq.Again:
                raw = None
            if raw is None:
                if time.monotonic() >= deadline:
                    raise BridgeError(f"bridge server at {self.endpoint} did not answer {msg_type} within "
                                      f"{timeout_s:.2f} s (server down or unreachable)", "timeout")
                continue
            reply = P.decode(raw, max_bytes=P.MAX_PUB_BYTES)
            if reply.type in ("ACK", "NACK") and reply.body["ack_seq"] not in (self.seq, 0):
                continue  # a late reply to an earlier request that already timed out
            if reply.type == "NACK":
                raise BridgeError(f"{msg_type} refused: {reply.body['reason']}", reply.body["code"])
            if reply.type not in expect:
                raise BridgeError(f"unexpected reply {reply.type} to {msg_type}", "protocol")
            self.rtt_ns.append(time.monotonic_ns() - t_send)
            if reply.type == "ACK":
                self.saw_estop(reply.body.get("info", {}).get("estop_epoch", 0))
            return reply

    def _set_rcvtimeo(self, ms: int) -> None:
        # the same timeout every request (reply_timeout_s, less the few us since the send) is set once:
        # only a change of more than 2 ms reaches setsockopt
        if abs(ms - self._rcvtimeo) > 2:
            self.dealer.rcvtimeo = self._rcvtimeo = ms

    def sync_clock(self, n: int = 8) -> ClockSync:
        """``n`` NTP-style exchanges (lost ones skipped); keeps the min-RTT sample."""
        got = 0
        for _ in range(n):
            t0 = time.monotonic_ns()
            try:
                info = self.request("TIME_SYNC", {"t0_ns": t0}).body["info"]
            except BridgeError as exc:
                if exc.code != "timeout":
                    raise
                continue
            self.clock.add_sample(t0, info["t1_ns"], info["t2_ns"], time.monotonic_ns())
            got += 1
        if not got and self.clock.rtt_ns is None:
            raise BridgeError(f"clock sync with {self.endpoint}: no TIME_SYNC answered", "timeout")
        return self.clock

    def heartbeat(self) -> None:
        self.request("HEARTBEAT", {})

    def saw_estop(self, epoch) -> None:
        """Record an e-stop epoch received from the server (it only grows)."""
        if type(epoch) is int:
            self.estop_epoch = max(self.estop_epoch, epoch)

    def arm(self, mode: str) -> None:
        """ARM ``mode``, acknowledging the newest e-stop received; refused (``estopped``) if the server has
        counted one since (read the state to see it, then ARM again)."""
        self.request("ARM", {"mode": mode, "estop_epoch": self.estop_epoch}, timeout_s=max(self.reply_timeout_s, 2.0))

    def disarm(self) -> None:
        self.request("DISARM", {}, timeout_s=max(self.reply_timeout_s, 2.0))

    def estop(self, reason: str = "client e-stop") -> None:
        self.request("ESTOP", {"reason": reason})

    def reset(self, seed: int, timeout_s: float = 30.0) -> RobotState:
        """Simulation only: new episode with ``seed``; return its first state."""
        episode = self.request("RESET", {"seed": int(seed)}, timeout_s=timeout_s).body["info"]["episode"]
        return self.wait_state(lambda s: s["episode"] == episode, timeout_s=timeout_s)

    def send_chunk(self, actions: np.ndarray, t0_ns: int, dt_ns: int, action_space: str,
                   gripper: np.ndarray | None = None, obs_seq: int = 0) -> int:
        """Schedule ``actions (H, D)`` at ``t0_ns + i*dt_ns`` (server time); return the chunk id."""
        self.chunk_id += 1
        arrays = {"actions": np.asarray(actions, np.float64)}
        if gripper is not None:
            arrays["gripper"] = np.asarray(gripper, np.float64)
        body = {"chunk_id": self.chunk_id, "obs_seq": int(obs_seq), "t0_ns": int(t0_ns), "dt_ns": int(dt_ns),
                "action_space": action_space}
        self.request("CHUNK", body, arrays)
        return self.chunk_id

    # -- state stream -----------------------------------------------------------------------------
    def _on_pub(self, frames: list) -> dict | None:
        msg = P.decode(frames[1:], max_bytes=P.MAX_PUB_BYTES, expect=("STATE", "EVENT"))
        if msg.type == "EVENT":
            data = msg.body.get("data", {})
            self.events.append((msg.body["kind"], data))
            if msg.body["kind"] == "state":
                self.saw_estop(data.get("estop_epoch", 0))
            return None
        body, a = msg.body["state"], msg.arrays
        self.saw_estop(body.get("estop_epoch", 0))
        extras = dict(body.get("extras", {}))
        extras.update({k: v for k, v in a.items() if k.startswith("observation.")})
        self._state = RobotState(body["t_ns"], a["joint_pos"], a["joint_vel"], a["ee_pos"], a["ee_quat"],
                                 body["gripper"], a["ee_force"], extras)
        self.status = body
        self._state_rx_ns = self.clock.to_client(body["wall_ns"])  # when the server published it, in our clock
        return body

    def latest_state(self) -> RobotState:
        """Drain the state stream and return the newest state (newest-only semantics)."""
        while self.sub.poll(0):
            self._on_pub(self.sub.recv_multipart())
        if self._state is None:
            self.wait_state(lambda s: True)
        return self._state

    def wait_state(self, pred, timeout_s: float = 1.0) -> RobotState:
        """Read states in order until ``pred(status_body)`` holds; ``BridgeError`` on timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self.sub.poll(max(1, int(remaining * 1000))):
                if time.monotonic() >= deadline:
                    raise BridgeError(f"no matching state from the bridge within {timeout_s:.2f} s", "timeout")
                continue
            body = self._on_pub(self.sub.recv_multipart())
            if body is not None and pred(body):
                return self._state

    def new_states(self, timeout_s: float = 0.0) -> list[tuple[dict, RobotState]]:
        """Every ``(status, state)`` received since the last call, oldest first (waits up to ``timeout_s``)."""
        out = []
        if self.sub.poll(int(timeout_s * 1000)):
            while self.sub.poll(0):
                body = self._on_pub(self.sub.recv_multipart())
                if body is not None:
                    out.append((body, self._state))
        return out

    def drain_events(self) -> list:
        self.latest_state()
        out = list(self.events)
        self.events.clear()
        return out

    def __enter__(self) -> "BridgeClient":
        self.connect()
        return self
