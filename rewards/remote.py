"""The reward model in its own process: a ZeroMQ ROUTER server, a non-blocking client, pending relabels.

``serve(model, endpoint)`` answers score requests in a thread pool, so one slow batch never holds up the
socket; ``RemoteRewardModel(endpoint)`` is itself a ``RewardModel`` whose ``score_async`` only encodes the
queries and hands them to its I/O thread (it returns a Future at once, so a control loop never waits on a
slow model); ``PendingRewards`` tracks transitions whose rewards are still out and hands back
``(key, result)`` as they arrive, for relabelling a replay buffer. Default endpoints are loopback:
``ipc://`` or ``tcp://127.0.0.1:PORT`` (the server has no authentication, so other hosts need ``allow_remote``).
"""
from __future__ import annotations

import itertools
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from queue import Empty, SimpleQueue
from typing import Any, Callable, Hashable, Sequence

import zmq

from armflow.rewards.protocol import RewardModel, RewardQuery, RewardResult
from armflow.rewards.wire import decode_query, decode_result, encode_query, encode_result, pack, unpack

LOOPBACK = ("127.0.0.1", "localhost", "[::1]")


def check_endpoint(endpoint: str, allow_remote: bool = False) -> str:
    if endpoint.startswith(("ipc://", "inproc://")):
        return endpoint
    if endpoint.startswith("tcp://"):
        host = endpoint[len("tcp://"):].rsplit(":", 1)[0]
        if host in LOOPBACK or allow_remote:
            return endpoint
        raise ValueError(f"endpoint={endpoint}: the reward server has no authentication; bind loopback "
                         "(tcp://127.0.0.1:PORT or ipc://PATH) or set allow_remote=true behind your own network")
    raise ValueError(f"endpoint={endpoint!r}: expected ipc://PATH or tcp://127.0.0.1:PORT")


def serve(model: RewardModel, endpoint: str, stop: threading.Event | None = None, workers: int = 2,
          max_seconds: float | None = None, on_ready: Callable[[], None] | None = None,
          allow_remote: bool = False) -> dict:
    """Answer requests on ``endpoint`` until ``stop`` is set (or ``max_seconds``); returns counts."""
    stop = stop or threading.Event()
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(check_endpoint(endpoint, allow_remote))
    pool = ThreadPoolExecutor(workers, thread_name_prefix="reward-serve")
    pending: list[tuple[list[bytes], int, Future]] = []
    stats = {"requests": 0, "queries": 0, "invalid": 0, "errors": 0}
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    if on_ready:
        on_ready()
    try:
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            if sock.poll(5 if pending else 50):  # [ms]: short while batches are out, so replies leave promptly
                *route, payload = sock.recv_multipart()
                pending += _dispatch(model, pool, route, payload, sock, stats)
            for item in [p for p in pending if p[2].done()]:
                pending.remove(item)
                _reply(sock, *item, stats)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        sock.close(0)
    return stats


def _dispatch(model, pool, route, payload, sock, stats) -> list:
    stats["requests"] += 1
    try:
        msg = unpack(payload)
        if msg["op"] == "info":
            sock.send_multipart([*route, pack({"id": msg["id"], "ok": True, "info": {
                "backend": model.backend, "model_version": model.model_version}})])
            return []
        if msg["op"] != "score":
            raise ValueError(f"op {msg['op']!r}: expected score or info")
        queries = [decode_query(q) for q in msg["queries"]]
    except Exception as exc:  # a bad message is answered, never fatal to the server
        stats["errors"] += 1
        sock.send_multipart([*route, pack({"id": -1, "ok": False, "error": f"bad request: {exc}"})])
        return []
    stats["queries"] += len(queries)
    return [(route, msg["id"], pool.submit(model.score, queries))]


def _reply(sock, route, msg_id, future, stats) -> None:
    try:
        results = future.result()
        stats["invalid"] += sum(not r.valid for r in results)
        message = {"id": msg_id, "ok": True, "results": [encode_result(r) for r in results]}
    except Exception as exc:  # bad input for this backend: the caller's future raises it
        stats["errors"] += 1
        message = {"id": msg_id, "ok": False, "error": f"{type(exc).__name__}: {exc}"}
    sock.send_multipart([*route, pack(message)])


class RemoteRewardModel(RewardModel):
    """A reward model served by ``serve`` at ``endpoint``; results come back with the server's backend and
    model version. A request unanswered within ``timeout_s`` gives invalid results (dead or stuck server);
    an error the server reports for bad input raises from the Future."""

    backend = "remote"

    def __init__(self, endpoint: str, timeout_s: float = 30.0):
        self.endpoint, self.timeout_s = check_endpoint(endpoint, allow_remote=True), float(timeout_s)
        self._ids = itertools.count()
        self._outbox: SimpleQueue = SimpleQueue()
        self._pending: dict[int, tuple[Future, list, float, float]] = {}  # id -> future, keys, sent, deadline
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._closed = threading.Event()
        self._info: dict | None = None
        self._thread = threading.Thread(target=self._io_loop, name="reward-client-io", daemon=True)
        self._thread.start()

    @property
    def model_version(self) -> str:
        return (self._info or {}).get("model_version", f"remote:{self.endpoint}")

    def info(self, timeout_s: float | None = None) -> dict:
        """The served backend and model version (asks the server once)."""
        if self._info is None:
            self._info = self._send({"op": "info"}, keys=[]).result(timeout_s or self.timeout_s)
        return self._info

    def score_async(self, queries: Sequence[RewardQuery]) -> Future:
        """Encode and enqueue; returns a Future of the results at once."""
        queries = list(queries)
        return self._send({"op": "score", "queries": [encode_query(q) for q in queries]}, [q.key for q in queries])

    def _score(self, queries: Sequence[RewardQuery]) -> list[RewardResult]:
        return self.score_async(queries).result()

    def _send(self, message: dict, keys: list) -> Future:
        future: Future = Future()
        if self._closed.is_set():
            future.set_exception(RuntimeError(f"RemoteRewardModel({self.endpoint}) is closed"))
            return future
        msg_id = next(self._ids)
        now = time.monotonic()
        with self._lock:
            self._pending[msg_id] = (future, keys, now, now + self.timeout_s)
        self._outbox.put(pack({**message, "id": msg_id}))
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:  # the pipe is full of wake-ups already
            pass
        return future

    def _io_loop(self) -> None:
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.endpoint)
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        try:
            while not self._closed.is_set():
                with self._lock:
                    next_deadline = min((p[3] for p in self._pending.values()), default=None)
                wait_ms = 100 if next_deadline is None else max(0, min(100, (next_deadline - time.monotonic()) * 1e3))
                events = dict(poller.poll(wait_ms))
                if self._wake_r in events:
                    os.read(self._wake_r, 4096)
                self._flush_outbox(sock)
                while sock in events and sock.poll(0):
                    self._resolve(unpack(sock.recv()))
                self._expire()
        finally:
            sock.close(0)

    def _flush_outbox(self, sock) -> None:
        while True:
            try:
                sock.send(self._outbox.get_nowait())
            except Empty:
                return

    def _resolve(self, reply: dict) -> None:
        with self._lock:
            entry = self._pending.pop(reply.get("id"), None)
        if entry is None:
            return  # expired already, or an error reply to a message we could not have sent
        future, keys, sent, _ = entry
        if not reply.get("ok"):
            future.set_exception(ValueError(f"reward server at {self.endpoint}: {reply.get('error')}"))
        elif "info" in reply:
            future.set_result(reply["info"])
        else:
            elapsed = time.monotonic() - sent
            results = [decode_result(r) for r in reply["results"]]
            for key, r in zip(keys, results):
                r.key, r.latency_s = key, elapsed  # the caller's wait, transport included
            future.set_result(results)

    def _expire(self, reason: str | None = None) -> None:
        now = time.monotonic()
        with self._lock:
            gone = [i for i, p in self._pending.items() if reason or p[3] <= now]
            entries = [self._pending.pop(i) for i in gone]
        for future, keys, sent, _ in entries:
            why = reason or f"reward server at {self.endpoint} did not answer within {self.timeout_s:g} s"
            future.set_result([RewardResult.invalid(why, backend=self.backend, model_version=self.model_version,
                                                    latency_s=now - sent, key=k) for k in keys])

    def close(self) -> None:
        if not self._closed.is_set():
            self._closed.set()
            self._thread.join(timeout=2.0)
            self._expire(reason="RemoteRewardModel closed before the answer")
            os.close(self._wake_r)
            os.close(self._wake_w)
        super().close()


class PendingRewards:
    """Transitions whose rewards are being computed: ``submit(keys, queries)`` never blocks; ``poll()`` returns
    ``(key, result)`` for every batch that has arrived since (e.g. to write ``replay.reward[key]``)."""

    def __init__(self, model: RewardModel):
        self.model = model
        self._batches: list[tuple[list[Hashable], Future]] = []

    def submit(self, keys: Sequence[Hashable], queries: Sequence[RewardQuery]) -> None:
        if len(keys) != len(queries):
            raise ValueError(f"PendingRewards.submit: {len(keys)} keys for {len(queries)} queries")
        self._batches.append((list(keys), self.model.score_async(queries)))

    def poll(self) -> list[tuple[Hashable, RewardResult]]:
        done = [b for b in self._batches if b[1].done()]
        self._batches = [b for b in self._batches if all(b is not d for d in done)]
        return [pair for keys, future in done for pair in zip(keys, future.result())]

    def wait(self, timeout_s: float) -> list[tuple[Hashable, RewardResult]]:
        """Everything still pending, waiting up to ``timeout_s`` in total."""
        deadline, out = time.monotonic() + timeout_s, []
        while self._batches and time.monotonic() < deadline:
            out += self.poll()
            time.sleep(0.002)
        return out + self.poll()

    def __len__(self) -> int:
        return sum(len(keys) for keys, _ in self._batches)
