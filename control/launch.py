"""Run a bridge server: in this process until a signal (``serve_until_signal``), or as a child
process for tests and benchmarks (``ServerProcess``, a context manager that yields the bound
endpoints once the server is ready)."""
from __future__ import annotations

import dataclasses
import signal
import threading

from armflow.control import channel
from armflow.control.server import BridgeServer, ServerConfig, ServerError


def serve_until_signal(cfg: ServerConfig, on_ready=None) -> None:
    """Serve until SIGINT/SIGTERM, then shut down cleanly (servo stopped, sockets closed)."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    server = BridgeServer(cfg)
    try:
        server.start()
        if on_ready is not None:
            on_ready(server)
        server.serve(stop.is_set)
    finally:
        server.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _child_main(cfg: ServerConfig, conn) -> None:
    def ready(server: BridgeServer) -> None:
        conn.send_bytes(channel.pack({"endpoint": server.endpoint, "pub_endpoint": server.pub_endpoint}))

    try:
        serve_until_signal(cfg, ready)
    except Exception as exc:
        conn.send_bytes(channel.pack({"error": f"{type(exc).__name__}: {exc}"}))
        raise


class ServerProcess:
    """``with ServerProcess(cfg) as sp: BridgeClient(sp.endpoint)``; ``sp.kill()`` simulates a crash."""

    def __init__(self, cfg: ServerConfig, start_timeout_s: float = 120.0):
        self.cfg, self.start_timeout_s = cfg, start_timeout_s
        self.proc = None
        self.endpoint = self.pub_endpoint = ""

    def __enter__(self) -> "ServerProcess":
        ctx = channel.get_context(self.cfg.start_method)
        parent, child = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=_child_main, args=(dataclasses.replace(self.cfg), child), name="armflow-bridge")
        self.proc.start()
        child.close()
        if not parent.poll(self.start_timeout_s):
            self.stop()
            raise ServerError(f"bridge server not ready within {self.start_timeout_s} s")
        msg = channel.unpack(parent.recv_bytes())
        if "error" in msg:
            self.stop()
            raise ServerError(msg["error"])
        self.endpoint, self.pub_endpoint = msg["endpoint"], msg["pub_endpoint"]
        return self

    def stop(self, timeout_s: float = 10.0) -> int | None:
        if self.proc is not None and self.proc.is_alive():
            self.proc.terminate()  # SIGTERM -> clean shutdown
            self.proc.join(timeout_s)
            if self.proc.is_alive():
                self.proc.kill()
                self.proc.join()
        return None if self.proc is None else self.proc.exitcode

    def kill(self) -> None:
        """SIGKILL the I/O process (its servo child notices the closed pipe and stops the arm)."""
        self.proc.kill()
        self.proc.join()

    def __exit__(self, *exc) -> None:
        self.stop()
