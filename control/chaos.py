"""A chaos proxy for the control channel: delay, drop, duplicate and reorder messages (tests only).

Clients connect their DEALER to ``proxy.endpoint``; the proxy keeps one upstream DEALER per
client identity (so the server still sees distinct clients and the lease works) and applies
the faults in both directions. The state PUB stream is not proxied (clients subscribe to the
server directly), so the proxy stresses exactly the command path the watchdog protects.
"""
from __future__ import annotations

import heapq
import itertools
import random
import threading
import time
from dataclasses import dataclass

import zmq

from armflow.control import protocol as P


@dataclass(frozen=True)
class ChaosConfig:
    drop: float = 0.0  # probability a message is lost
    duplicate: float = 0.0  # probability it is delivered twice
    reorder: float = 0.0  # probability it is held back by an extra delay (later ones overtake it)
    delay_ms: tuple[float, float] = (0.0, 0.0)  # uniform one-way delay [ms]
    reorder_extra_ms: float = 30.0
    seed: int = 0


class ChaosProxy:
    """``with ChaosProxy(server_endpoint, "ipc:///tmp/x", ChaosConfig(drop=0.1)) as proxy: ...``"""

    def __init__(self, upstream: str, bind: str, cfg: ChaosConfig = ChaosConfig()):
        self.upstream, self.bind, self.cfg = upstream, bind, cfg
        self.rng = random.Random(cfg.seed)
        self.ctx = zmq.Context()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.endpoint = ""
        self.counts = {"forwarded": 0, "dropped": 0, "duplicated": 0, "reordered": 0}
        self._ready = threading.Event()

    def __enter__(self) -> "ChaosProxy":
        self._thread = threading.Thread(target=self._run, name="chaos-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(5.0):
            raise RuntimeError("chaos proxy did not start")
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5.0)
        self.ctx.term()

    def _plan(self, now: float) -> list[float]:
        """Delivery times for one message (empty: dropped)."""
        c = self.cfg
        if self.rng.random() < c.drop:
            self.counts["dropped"] += 1
            return []
        times = [now + self.rng.uniform(*c.delay_ms) / 1e3]
        if self.rng.random() < c.reorder:
            self.counts["reordered"] += 1
            times[0] += c.reorder_extra_ms / 1e3
        if self.rng.random() < c.duplicate:
            self.counts["duplicated"] += 1
            times.append(times[0] + self.rng.uniform(0, c.reorder_extra_ms) / 1e3)
        return times

    def _run(self) -> None:
        front = self.ctx.socket(zmq.ROUTER)
        front.linger = 0
        front.maxmsgsize = P.MAX_REQUEST_FRAME_BYTES  # stands in for the server's ROUTER
        front.bind(self.bind)
        self.endpoint = front.last_endpoint.decode()
        backs: dict[bytes, zmq.Socket] = {}
        poller = zmq.Poller()
        poller.register(front, zmq.POLLIN)
        queue: list = []  # heap of (t_deliver, tiebreak, direction, ident, frames)
        tie = itertools.count()
        self._ready.set()
        while not self._stop.is_set():
            timeout = 5 if not queue else max(0, int((queue[0][0] - time.monotonic()) * 1000))
            events = dict(poller.poll(min(timeout, 5)))
            now = time.monotonic()
            if front in events:
                ident, *frames = front.recv_multipart()
                if ident not in backs:
                    back = self.ctx.socket(zmq.DEALER)
                    back.linger = 0
                    back.maxmsgsize = P.MAX_PUB_FRAME_BYTES
                    back.connect(self.upstream)
                    backs[ident] = back
                    poller.register(back, zmq.POLLIN)
                for t in self._plan(now):
                    heapq.heappush(queue, (t, next(tie), "up", ident, frames))
            for ident, back in backs.items():
                if back in events:
                    frames = back.recv_multipart()
                    for t in self._plan(now):
                        heapq.heappush(queue, (t, next(tie), "down", ident, frames))
            while queue and queue[0][0] <= time.monotonic():
                _, _, direction, ident, frames = heapq.heappop(queue)
                self.counts["forwarded"] += 1
                if direction == "up":
                    backs[ident].send_multipart(frames)
                else:
                    front.send_multipart([ident] + frames)
        for sock in [front, *backs.values()]:
            sock.close(linger=0)
