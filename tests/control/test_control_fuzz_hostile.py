"""A hostile controller against the real bridge (server + servo processes, the MuJoCo sim Panda, ipc sockets).

Every class of issue 10 and more: random bytes, truncated msgpack, wrong types in every header and body
field, huge ints, NaN/inf, negative counts and shapes, oversize frames, every message type in every state
(IDLE, ARMED, RUNNING, HOLD, ESTOP, no session), duplicate and replayed chunk ids, stale / far-future /
overflowing chunk times, bad RESET seeds, rival controllers and session-less stop buttons. It asserts:

* 0 server deaths (I/O and servo processes alive, still serving at the end);
* 0 refused e-stops: every e-stop, malformed or not, is ACKed and the arm is in ESTOP within 0.5 s, and it
  stays there until an ARM that acknowledges that e-stop's epoch: every exit from ESTOP must follow an ARM
  this fuzzer sent naming an epoch >= every e-stop ACKed before the exit (ARMs here name the epoch seen,
  a stale one, a future one or none, and race a stop button's e-stop on purpose);
* 0 ACKed-but-silently-dropped chunks: each ACKed chunk executes (its id in a STATE's ``executed``) or an
  event naming it (``chunk_rejected`` / ``chunk_dropped``) arrives before ``max(ACK, t0) + dt + 1 s``;
* every reply and published message decodes in the client; server RSS stays bounded.

Default suite: ~400 messages (< 15 s). Slow suite: >= 10,000 messages. Figures print as ``FUZZ_HOSTILE: {...}``.
"""
import json
import os
import random
import re
import time

import msgpack
import numpy as np
import pytest
import zmq

from armflow.control import protocol as P
from armflow.control.launch import ServerProcess
from armflow.control.server import ServerConfig

MS = 1_000_000
GRACE_NS = 1_000_000_000  # an ACKed chunk's fate must be visible this long after its first waypoint is due
#: How long the harness waits to see ESTOP published. Generous because the harness itself shares 2 loaded cores
#: with the server (a refused e-stop never shows ESTOP at all); the latency is reported as estop_latency_max_ms.
ESTOP_WAIT_S = 2.0
#: An e-stop counts as "before" an exit from ESTOP if its ACK was received this long before the exit was published
#: (the exit's time stamp trails the transition by microseconds; the margin rules out false alarms).
EXIT_MARGIN_NS = 1_000_000


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def _children(pid: int) -> list[int]:
    out = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            out += [int(x) for x in f.read().split()]
    return out


class Fuzzer:
    """One controller DEALER (hostile), a rival DEALER, a stop button, and a SUB that tracks the arm."""

    def __init__(self, sp: ServerProcess, seed: int):
        self.sp, self.rng, self.np_rng = sp, random.Random(seed), np.random.default_rng(seed)
        self.ctx = zmq.Context.instance()
        self.ctrl, self.rival, self.button = (self._dealer() for _ in range(3))
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.linger = 0
        self.sub.rcvhwm = 100_000
        for topic in (b"STATE", b"EVENT"):
            self.sub.setsockopt(zmq.SUBSCRIBE, topic)
        self.sub.connect(sp.pub_endpoint)
        self.pids = [sp.proc.pid] + _children(sp.proc.pid)
        self.seq, self.next_id, self.session, self.welcome = 10, 0, "", {}
        self.status, self.mode, self.state = "DISCONNECTED", None, None
        self.sent_chunks: dict[int, tuple] = {}  # seq -> (chunk_id, t0_ns, dt_ns)
        self.acked: dict[int, tuple] = {}  # chunk_id -> (deadline_ns, seq)
        self.resolved: set[int] = set()
        self.history: list[list] = []  # frames sent, for replays
        self.nack_codes: dict[str, int] = {}
        self.event_reasons: dict[str, int] = {}
        self.transitions: list = []
        self.lost_session = False  # a hostile BYE (or a lease expiry) ended the controller's session
        self.epoch_seen = self.welcome_epoch = 0  # newest e-stop epoch received; the session's WELCOME epoch
        self.estop_acks: list[tuple[int, int]] = []  # (t_received_ns, epoch) of every ACKed e-stop
        self.arms: list[tuple[int, int]] = []  # (t_sent_ns, epoch acknowledged) of ARMs that may leave ESTOP
        self.stats = {"sent": 0, "replies": 0, "acks": 0, "nacks": 0, "undecodable": 0, "chunks_acked": 0,
                      "chunks_executed": 0, "chunks_reported": 0, "silent_drops": 0, "estops": 0,
                      "estops_refused": 0, "estop_latency_max_ms": 0.0, "deaths": 0, "states_seen": set(),
                      "estop_exits": 0, "estop_exits_unacknowledged": 0, "arms_estopped": 0, "race_arms": 0}
        self.rss_base = [_rss_mb(p) for p in self.pids]
        self.rss_max = list(self.rss_base)
        self.hello()

    def _dealer(self) -> zmq.Socket:
        s = self.ctx.socket(zmq.DEALER)
        s.linger = 0
        s.sndtimeo = 2000
        s.connect(self.sp.endpoint)
        return s

    # -- plumbing -----------------------------------------------------------------------------------------
    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def send(self, frames: list, sock=None) -> None:
        (sock or self.ctrl).send_multipart(frames)
        self.stats["sent"] += 1
        self.pump()

    def request(self, msg_type: str, body: dict, arrays=None, sock=None, session=None) -> int:
        seq = self.next_seq()
        frames = P.encode(msg_type, body, arrays, seq=seq, session=self.session if session is None else session)
        self.send([bytes(f) for f in frames], sock)
        return seq

    def hello(self) -> None:
        """(Re)take the lease. Chunk ids restart with it, so first settle every chunk of the old lease."""
        if self.acked:
            last = max(d for d, _ in self.acked.values())
            self.wait(lambda: not self.acked, max(0.0, (last - time.monotonic_ns()) / 1e9) + 0.1)
        seq = self.request("HELLO", {"client_version": "hostile", "role": "controller"})
        self.wait(lambda: self.welcome.get("_seq") == seq, 5.0)
        assert self.session, "the fuzzer's controller got no WELCOME"

    def arm(self, mode: str, claim: str = "") -> int:
        """Send ARM naming an e-stop epoch: the one seen (mostly), a stale one, a future one, or none."""
        claim = claim or self.rng.choice(["seen"] * 6 + ["stale", "future", "none"])
        epoch = {"seen": self.epoch_seen, "stale": max(0, self.epoch_seen - self.rng.randrange(1, 3)),
                 "future": self.epoch_seen + 1, "none": self.welcome_epoch}[claim]
        if claim != "future":  # a future epoch must be refused: it can never be the ARM that leaves ESTOP
            self.arms.append((time.monotonic_ns(), epoch))
        return self.request("ARM", {"mode": mode} if claim == "none" else {"mode": mode, "estop_epoch": epoch})

    def stopped_since(self, t_send: int) -> bool:
        """ESTOP latched after ``t_send``, or already latched then (an e-stop that came just before, e.g. a frame
        the server read as one) and not left since: either way this e-stop holds the arm stopped."""
        if any(s == "ESTOP" and t >= t_send for s, _, t in self.transitions):
            return True
        before = [s for s, _, t in self.transitions if t < t_send]
        return bool(before) and before[-1] == "ESTOP" and not any(t >= t_send for _, _, t in self.transitions)

    def saw_epoch(self, epoch) -> None:
        if type(epoch) is int:
            self.epoch_seen = max(self.epoch_seen, epoch)

    def on_estop_exit(self, t_exit: int, new: str) -> None:
        """The arm left ESTOP: some ARM sent before it must acknowledge every e-stop ACKed before it."""
        self.stats["estop_exits"] += 1
        required = max([e for t, e in self.estop_acks if t < t_exit - EXIT_MARGIN_NS], default=0)
        if not any(t <= t_exit and e >= required for t, e in self.arms):
            self.stats["estop_exits_unacknowledged"] += 1
            self.stats["estops_refused"] += 1  # that e-stop did not stay applied
            self.stats.setdefault("refused_detail", []).append(
                ["re-armed", new, required, [(round((t - t_exit) / 1e6, 2), e) for t, e in self.arms[-4:]]])

    def on_reply(self, msg: P.Message, sock=None) -> None:
        self.stats["replies"] += 1
        if msg.type == "WELCOME":
            self.session, self.welcome = msg.body["session"], {**msg.body, "_seq": msg.seq}
            self.next_id = 0  # a new lease restarts chunk ids
            self.welcome_epoch = msg.body.get("estop_epoch", 0)
            self.saw_epoch(self.welcome_epoch)
        elif msg.type == "ACK":
            self.stats["acks"] += 1
            info = msg.body.get("info", {})
            if info.get("applied"):  # an e-stop's ACK (a server without epochs: count them here)
                self.estop_acks.append((time.monotonic_ns(), info.get("estop_epoch", len(self.estop_acks) + 1)))
            self.saw_epoch(info.get("estop_epoch"))
            chunk = self.sent_chunks.pop(msg.body["ack_seq"], None)
            if chunk is not None:
                cid, t0, dt = chunk
                assert msg.body["info"]["chunk_id"] == cid
                self.stats["chunks_acked"] += 1
                if cid in self.acked:  # the same id ACKed again (a lease change this fuzzer did not see)
                    self.stats["ids_reacked"] = self.stats.get("ids_reacked", 0) + 1
                self.acked[cid] = (max(time.monotonic_ns(), t0) + dt + GRACE_NS, msg.body["ack_seq"])
                self.next_id = max(self.next_id, cid + 1)
        elif msg.type == "NACK":
            self.stats["nacks"] += 1
            self.nack_codes[msg.body["code"]] = self.nack_codes.get(msg.body["code"], 0) + 1
            self.stats["arms_estopped"] += msg.body["code"] == "estopped"
            self.lost_session |= msg.body["code"] == "no_session" and sock is self.ctrl
            self.sent_chunks.pop(msg.body["ack_seq"], None)

    def on_pub(self, frames: list) -> None:
        msg = P.decode(frames[1:], max_bytes=P.MAX_PUB_BYTES, expect=("STATE", "EVENT"))
        if msg.type == "EVENT":
            data = msg.body.get("data", {})
            if msg.body["kind"] in ("chunk_rejected", "chunk_dropped"):
                ids = data.get("chunk_ids", [data.get("chunk_id")])
                why = re.sub(r"\d+", "N", f"{msg.body['kind']}: {str(data.get('reason'))[:40]}")
                self.event_reasons[why] = self.event_reasons.get(why, 0) + 1
                self._resolve(ids, "chunks_reported")
            if msg.body["kind"] == "state":
                self.saw_epoch(data.get("estop_epoch"))
                if data["old"] == "ESTOP":
                    self.on_estop_exit(data["t_ns"], data["new"])
                self.transitions = (self.transitions + [(data["new"], data["reason"][:30], data["t_ns"])])[-8:]
                self.status = data["new"]
                self.stats["states_seen"].add(data["new"])
            return
        body = msg.body["state"]
        self.saw_epoch(body.get("estop_epoch"))
        self.status, self.mode, self.state = body["status"], body["mode"], msg.arrays
        self.stats["states_seen"].add(body["status"])
        self.state_wall_ns = body["wall_ns"]
        self._resolve([e[0] for e in body["executed"]] + [body["exec"][0]], "chunks_executed")

    def _resolve(self, ids, counter: str) -> None:
        for cid in ids:
            if cid in self.acked:
                del self.acked[cid]
                self.stats[counter] += 1

    def pump(self) -> None:
        for sock in (self.ctrl, self.rival, self.button):
            while sock.poll(0):
                try:
                    self.on_reply(P.decode(sock.recv_multipart(), max_bytes=P.MAX_PUB_BYTES), sock)
                except P.ProtocolError:
                    self.stats["undecodable"] += 1
        while self.sub.poll(0):
            try:
                self.on_pub(self.sub.recv_multipart())
            except P.ProtocolError:
                self.stats["undecodable"] += 1
        now = time.monotonic_ns()
        for cid, (deadline, _) in list(self.acked.items()):
            if now > deadline:
                del self.acked[cid]
                self.stats["silent_drops"] += 1

    def wait(self, pred, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not pred():
            if time.monotonic() > deadline:
                return False
            self.ctrl.poll(2)
            self.pump()
        return True

    def check_alive(self) -> None:
        alive = all(os.path.exists(f"/proc/{p}") and open(f"/proc/{p}/stat").read().split()[2] != "Z"
                    for p in self.pids)
        if not alive:
            self.stats["deaths"] += 1
            raise AssertionError(f"a server process died: {self.stats}")
        self.rss_max = [max(m, _rss_mb(p)) for m, p in zip(self.rss_max, self.pids)]

    # -- hostile messages -------------------------------------------------------------------------------------
    def header(self, msg_type: str, body: dict, **over) -> dict:
        hdr = {"v": list(P.PROTOCOL_VERSION), "type": msg_type, "seq": self.next_seq(), "session": self.session,
               "t_send_ns": time.monotonic_ns(), "frames": [], "body": body}
        hdr.update(over)
        return hdr

    def weird(self):
        r = self.rng
        return r.choice([None, True, -1, 0, 2**64 - 1, -2**63, 2**63 - 1, 1e308, float("nan"), float("inf"),
                         "", "x" * r.choice([1, 300, 20_000]), b"\x00\xff", [], [1, [2, [3]]], {"a": {"b": 1}},
                         {1: 2}, -0.0])

    def garbage(self) -> list:
        r, kind = self.rng, self.rng.randrange(6)
        if kind == 0:  # random bytes
            return [r.randbytes(r.randrange(0, 300)) for _ in range(r.randrange(1, 4))]
        if kind == 1 and self.history:  # a truncated real message
            frames = r.choice(self.history)
            return [frames[0][: r.randrange(0, max(1, len(frames[0])))]] + frames[1:]
        if kind == 2:  # msgpack of the wrong shape
            return [msgpack.packb(self.weird(), use_bin_type=True, strict_types=False)]
        if kind == 3:  # every header field wrong in turn
            hdr = self.header(r.choice(P.MSG_TYPES), {})
            hdr[r.choice(sorted(hdr))] = self.weird()
            if r.random() < 0.3:
                hdr[r.choice([None, 7, -1.5, "extra", "", b"v"])] = 1  # odd keys (msgpack allows any)
            try:
                return [msgpack.packb(hdr, use_bin_type=True)]
            except (TypeError, ValueError):
                return [b"\x80"]
        if kind == 4:  # frame-descriptor games: negative / huge / lying shapes, bad dtypes, missing frames
            n = r.randrange(0, 20)
            descs = [[f"a{i}", r.choice(["<f8", "<f4", "|u1", "O", ">f8", "<c16", 7]),
                      [r.choice([-1, 0, 3, 10**9, 2**62]) for _ in range(r.randrange(0, 6))]] for i in range(n)]
            frames = [r.randbytes(r.randrange(0, 64)) for _ in range(r.randrange(0, 20))]
            return [msgpack.packb(self.header("CHUNK", {}, frames=descs), use_bin_type=True)] + frames
        # a real message type with a mutated body, from this socket, in whatever state the arm is in
        msg_type = r.choice([t for t in P.REQUEST_TYPES if t != "HELLO"])
        keys = sorted(P.BODY_SCHEMAS[msg_type]) + ["zz"]
        body = {k: self.weird() for k in r.sample(keys, r.randrange(0, min(3, len(keys) + 1)))}
        return [msgpack.packb(self.header(msg_type, body), use_bin_type=True)]

    def chunk(self) -> list:
        """A CHUNK: mostly executable, else one of the audit's classes (the server must NACK or report it)."""
        r, dims = self.rng, self.welcome["action_dims"]
        mode = self.mode if self.mode in dims and r.random() < 0.85 else r.choice(sorted(dims))
        h, now = r.choice([1, 2, 5, 20, 60]), time.monotonic_ns()
        acts = self.np_rng.normal(0, 0.002, (h, dims[mode]))
        if self.state is not None:
            base = {"joint_pos": self.state["joint_pos"], "ee_pose": np.r_[self.state["ee_pos"], self.state["ee_quat"]]}
            acts += base.get(mode, 0.0)
        t0, dt, cid = now + r.choice([-30, 0, 5, 20, 100]) * MS, r.choice([2, 5, 10, 50]) * MS, self.next_id
        self.next_id += 1
        trick = r.randrange(14)
        if trick == 0:
            t0 = 2**63 - r.randrange(1, 10**9)  # overflow
        elif trick == 1:
            t0 = now - r.choice([3, 100]) * 10**9  # stale
        elif trick == 2:
            t0 = now + r.choice([4_900, 6_000, 10**7]) * MS  # just inside / beyond the horizon
        elif trick == 3:
            dt = r.choice([0, -1, 1, P.MIN_DT_NS - 1, P.MAX_DT_NS + 1, 2**62])
        elif trick == 4:
            cid = r.choice([max(0, self.next_id - 2), -1, self.next_id + 2**20])  # duplicate / negative / jump
        elif trick == 5:
            acts[r.randrange(h), 0] = r.choice([np.nan, np.inf, -np.inf, 1e300])
        elif trick == 6:
            acts = acts[:, :-1]  # wrong width
        arrays = {"actions": acts}
        if r.random() < 0.3:
            arrays["gripper"] = self.np_rng.uniform(-0.5 if trick == 7 else 0, 1, h)
        body = {"chunk_id": cid, "obs_seq": r.randrange(100), "t0_ns": t0, "dt_ns": dt, "action_space": mode}
        if trick == 8:
            body["merge"] = r.choice(["replace", "append", 3])
        seq = self.next_seq()
        frames = [bytes(f) for f in P.encode("CHUNK", body, arrays, seq=seq, session=self.session)]
        self.sent_chunks[seq] = (cid, t0, dt)
        return frames

    def oversize(self) -> list:
        r = self.rng
        if r.random() < 0.5:  # one frame over MAXMSGSIZE: dropped unread, the sender disconnected
            return [msgpack.packb(self.header("CHUNK", {})), bytes(r.choice([5, 64, 256]) * 1024 * 1024)]
        return [msgpack.packb(self.header("HEARTBEAT", {}))] + [bytes(1024 * 1024)] * r.randrange(4, 40)

    # -- the e-stop trial -------------------------------------------------------------------------------------
    def estop_trial(self) -> None:
        """ARM, then one e-stop variant; it must be ACKed and ESTOP seen within ESTOP_WAIT_S. Half the time the
        controller's ARM (pre-e-stop epoch) races a stop button's e-stop: it must not re-arm the arm."""
        self.arm(self.rng.choice(sorted(self.welcome["action_dims"])), "seen")
        if not self.wait(lambda: self.status in ("ARMED", "RUNNING"), 1.0):
            return  # (ARM refused: mode gated, lease lost) nothing to stop from
        r, seq = self.rng, self.next_seq()
        variants = [
            lambda: {"reason": "ok"},
            lambda: {"reason": "r" * r.choice([257, 5000, 60_000])},
            lambda: {"reason": self.weird(), "unknown": self.weird()},
            lambda: {"why": 1},
        ]
        hdr = self.header("ESTOP", r.choice(variants)(), seq=seq)
        if r.random() < 0.3:
            hdr[r.choice(["v", "session", "t_send_ns", "frames"])] = self.weird()
        if r.random() < 0.2:
            hdr["type"] = r.choice(["estop", " ESTOP\x00", b"ESTOP"])
        try:
            frames = [msgpack.packb(hdr, use_bin_type=True)]
        except (TypeError, ValueError):
            frames = [msgpack.packb(self.header("ESTOP", {}, seq=seq))]
        sock = r.choice([self.ctrl, self.ctrl, self.button, self.rival])
        t_send = time.monotonic_ns()
        sock.send_multipart(frames)
        self.stats["sent"] += 1
        self.stats["estops"] += 1
        if r.random() < 0.5:  # the race: an ARM that left before its sender could hear of this e-stop
            self.stats["race_arms"] += 1
            self.arms.append((time.monotonic_ns(), self.epoch_seen))
            self.ctrl.send_multipart([bytes(f) for f in P.encode("ARM", {"mode": self.mode or "joint_pos",
                                      "estop_epoch": self.epoch_seen}, seq=self.next_seq(), session=self.session)])
            self.stats["sent"] += 1
        acked = []
        while not acked and sock.poll(int(ESTOP_WAIT_S * 1000)):  # this socket's reply to the e-stop
            m = P.decode(sock.recv_multipart(), max_bytes=P.MAX_PUB_BYTES)
            self.on_reply(m, sock)  # (the ESTOP's ACK is time-stamped here, as it arrives)
            acked += [m.type == "ACK"] if m.type in ("ACK", "NACK") and m.body["ack_seq"] == seq else []
        # ESTOP latched after the send; that it stays latched until an acknowledging ARM is on_estop_exit's check
        stopped = self.wait(lambda: self.stopped_since(t_send), ESTOP_WAIT_S)
        t_stopped = time.monotonic_ns()
        if not (stopped and acked == [True]):
            self.stats["estops_refused"] += 1
            self.stats.setdefault("refused_detail", []).append(
                [acked, self.status, [(a, b, (t - t_send) / 1e6) for a, b, t in self.transitions]])
        else:
            self.stats["estop_latency_max_ms"] = max(self.stats["estop_latency_max_ms"], (t_stopped - t_send) / 1e6)
        if r.random() < 0.7:  # usually back to work (having seen the e-stop), so chunks keep running between trials
            self.arm(self.mode or "joint_pos", "seen")

    # -- the campaign ----------------------------------------------------------------------------------------------
    def step(self) -> None:
        r = self.rng
        if self.lost_session:
            self.lost_session = False
            self.hello()
        x = r.random()
        if self.status not in ("ARMED", "RUNNING") and r.random() < 0.2:  # mostly armed, so chunks run
            self.arm(self.mode or r.choice(sorted(self.welcome["action_dims"])))
        elif x < 0.02:
            self.estop_trial()
        elif x < 0.30:
            frames = self.chunk()
            self.history.append(frames)
            self.send(frames)
        elif x < 0.55:
            self.send(self.garbage(), r.choice([self.ctrl, self.ctrl, self.rival]))
        elif x < 0.58 and self.history:  # replay an earlier message verbatim
            self.send(r.choice(self.history))
        elif x < 0.61:
            self.arm(r.choice(sorted(self.welcome["action_dims"]) + ["warp"]))
        elif x < 0.62:
            self.request("DISARM", {})
        elif x < 0.64:
            seed = r.choice([-1, -2**63, 2**32, 2**63 - 1, -1, 2**32, 7, P.SEED_MAX])
            self.send([msgpack.packb(self.header("RESET", {"seed": seed}))])
        elif x < 0.76:
            self.request("TIME_SYNC", {"t0_ns": r.choice([0, -1, 2**63 - 1, time.monotonic_ns()])})
        elif x < 0.80:  # a rival: another controller, an observer, another major, a stranger's commands
            role = r.choice(["controller", "observer", "admin"])
            self.request("HELLO", {"client_version": "rival", "role": role}, sock=self.rival,
                         session="") if r.random() < 0.7 else \
                self.send([msgpack.packb(self.header("ARM", {"mode": "joint_pos"}, session="bogus"))], self.rival)
        elif x < 0.803:
            self.send(self.oversize(), r.choice([self.rival, self.button]))
        elif x < 0.806:  # go quiet past T_cmd: the watchdog holds (and must report the dropped chunks)
            self.wait(lambda: False, self.welcome["t_cmd_ms"] / 1e3 + 0.1)
        elif x < 0.808:  # leave and come back: messages without a lease in between
            self.request("BYE", {})
            for _ in range(5):
                self.send(self.garbage())
            self.hello()
        else:
            self.request("HEARTBEAT", {})
        self.ctrl.poll(2)  # ~2 ms a message: slow enough for chunks to run between the interruptions
        if self.stats["sent"] % 200 < 2:
            self.check_alive()

    def finish(self) -> dict:
        """Wait out the outstanding deadlines, then check the server still serves."""
        last = max([d for d, _ in self.acked.values()], default=0)
        self.wait(lambda: not self.acked, max(0.0, (last - time.monotonic_ns()) / 1e9) + 0.5)
        self.pump()
        self.check_alive()
        seq = self.request("HEARTBEAT", {})
        assert self.wait(lambda: self.stats["replies"] and self.seq == seq and not self.ctrl.poll(0), 2.0)
        t_before = self.state_wall_ns
        assert self.wait(lambda: self.state_wall_ns > t_before, 2.0), "the servo stopped publishing"
        st = self.stats
        return {**{k: v for k, v in st.items() if k != "states_seen"}, "states_seen": sorted(st["states_seen"]),
                "nack_codes": self.nack_codes, "event_reasons": self.event_reasons,
                "rss_base_mb": [round(x) for x in self.rss_base], "rss_max_mb": [round(x) for x in self.rss_max]}

    def close(self) -> None:
        for s in (self.ctrl, self.rival, self.button, self.sub):
            s.close(linger=0)


def run_campaign(tmp_path, n_messages: int, seed: int) -> dict:
    cfg = ServerConfig(robot="sim_panda", endpoint=f"ipc://{tmp_path}/hostile", lease_timeout_ms=2000)
    with ServerProcess(cfg) as sp:
        fz = Fuzzer(sp, seed)
        try:
            while fz.stats["sent"] < n_messages:
                fz.step()
            figures = fz.finish()
        finally:
            fz.close()
        assert sp.proc.is_alive()
    print("FUZZ_HOSTILE:", json.dumps(figures))
    (tmp_path / "fuzz_hostile.json").write_text(json.dumps(figures, indent=1))
    assert figures["deaths"] == 0
    assert figures["estops"] >= n_messages // 200 and figures["estops_refused"] == 0, figures
    assert figures["estop_exits"] > 0 and figures["estop_exits_unacknowledged"] == 0, figures
    assert figures["silent_drops"] == 0, figures
    assert figures["undecodable"] == 0, figures
    assert figures["chunks_executed"] > 0 and figures["chunks_reported"] > 0 and figures["nacks"] > n_messages // 4
    assert all(m - b < 150 for m, b in zip(figures["rss_max_mb"], figures["rss_base_mb"])), figures
    return figures


@pytest.mark.timeout(120)
def test_hostile_controller_fast(tmp_path):
    run_campaign(tmp_path, n_messages=400, seed=1)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_hostile_controller_10k(tmp_path):
    figures = run_campaign(tmp_path, n_messages=10_500, seed=int(os.environ.get("ARMFLOW_FUZZ_SEED", "10")))
    assert {"IDLE", "ARMED", "RUNNING", "HOLD", "ESTOP"} <= set(figures["states_seen"])
