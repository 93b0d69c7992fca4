"""A real OpenAI-compatible chat-completions server on 127.0.0.1 for tests and the reward benchmark.

It answers the documented response shape (``choices[0].message.content``,
``choices[0].logprobs.content[0].top_logprobs`` as a list of ``{token, logprob, bytes}``) and derives
every answer from the request alone: P(yes) = ``expected_prob(first image's data URL)``, so a client can
check that no answer went to the wrong query. Modes:

- ``logprobs``: logprobs when the request asks (yes mass split over "Yes" / " yes", no over "No" / "no",
  plus a distractor token, so a correct client renormalises to exactly ``expected_prob``);
- ``no_logprobs``: ``logprobs: null``; the content is "Yes" or "No";
- ``malformed``: 200 with ``malformed`` = ``json`` (not JSON), ``shape`` (no choices) or ``tokens``
  (logprobs and content without any yes/no token);
- ``fail_first=n, fail_status=429|500``: the first n requests fail (``retry_after_s`` adds Retry-After);
- ``delay_s``: every answer waits that long first (slow server); ``hold_s``: a short hold for
  concurrency measurements.

``stats()`` counts requests and the peak number in flight at once.
"""
from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODES = ("logprobs", "no_logprobs", "malformed")
MALFORMED = ("json", "shape", "tokens")


def expected_prob(image_url: str) -> float:
    """The server's P(yes) for a request whose first image is ``image_url`` (in [0.02, 0.98])."""
    h = int(hashlib.sha256(image_url.encode()).hexdigest()[:8], 16)
    return 0.02 + 0.96 * (h % 10007) / 10006


def _first_image(body: dict) -> str:
    for message in body.get("messages", []):
        content = message.get("content")
        for part in content if isinstance(content, list) else []:
            if part.get("type") == "image_url":
                return part["image_url"]["url"]
    return ""


def _top(p_yes: float) -> list[dict]:
    other = 0.05  # a distractor token keeps the yes/no mass below 1, as real models do
    entries = [("Yes", 0.7 * p_yes), (" yes", 0.3 * p_yes), ("No", 0.9 * (1 - p_yes)),
               ("no", 0.1 * (1 - p_yes)), ("The", other / 0.95)]
    entries = [(tok, math.log(max(mass * 0.95, 1e-300))) for tok, mass in entries]
    entries.sort(key=lambda e: -e[1])
    return [{"token": tok, "logprob": lp, "bytes": list(tok.encode())} for tok, lp in entries]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # listen() backlog: a burst of concurrent connects must not be dropped (SYN retry = 1 s)


class ChatServer:
    """``ChatServer(mode=...).start()``; ``url`` is the base URL (``http://127.0.0.1:PORT/v1``)."""

    def __init__(self, mode: str = "logprobs", model: str = "stub-vlm", fail_first: int = 0,
                 fail_status: int = 500, retry_after_s: float | None = None, delay_s: float = 0.0,
                 hold_s: float = 0.0, malformed: str = "json", port: int = 0):
        if mode not in MODES or malformed not in MALFORMED:
            raise ValueError(f"mode={mode!r} (valid: {MODES}), malformed={malformed!r} (valid: {MALFORMED})")
        self.mode, self.model, self.malformed = mode, model, malformed
        self.fail_first, self.fail_status, self.retry_after_s = fail_first, fail_status, retry_after_s
        self.delay_s, self.hold_s = delay_s, hold_s
        self._lock = threading.Lock()
        self.requests = self.in_flight = self.peak_in_flight = 0
        self.answered: dict[str, float] = {}  # first image URL hash -> P(yes) served
        self._httpd = _Server(("127.0.0.1", port), self._handler())
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def start(self) -> "ChatServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="chat-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop answering and close the socket: later requests are refused (a dead server)."""
        self._httpd.shutdown()
        self._httpd.server_close()

    def stats(self) -> dict:
        with self._lock:
            return {"requests": self.requests, "peak_in_flight": self.peak_in_flight}

    def __enter__(self) -> "ChatServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ answers
    def answer(self, body: dict, n: int) -> tuple[int, dict | bytes, dict]:
        """(status, JSON object or raw bytes, headers) for request number ``n`` (1-based), from its body."""
        if n <= self.fail_first:
            headers = {"Retry-After": f"{self.retry_after_s:g}"} if self.retry_after_s is not None else {}
            return self.fail_status, {"error": {"message": "stub: failing on purpose", "code": self.fail_status}}, headers
        if self.model and body.get("model") != self.model:
            return 404, {"error": {"message": f"model {body.get('model')!r} not found"}}, {}
        if self.mode == "malformed" and self.malformed == "json":
            return 200, b"<html>not json", {}
        if self.mode == "malformed" and self.malformed == "shape":
            return 200, {"id": "x", "object": "chat.completion", "result": "yes"}, {}
        url = _first_image(body)
        p_yes = expected_prob(url) if url else 0.9
        with self._lock:
            self.answered[hashlib.sha256(url.encode()).hexdigest()] = p_yes
        text = "Yes" if p_yes >= 0.5 else "No"
        logprobs = None
        if self.mode == "malformed":  # tokens: nothing readable as yes/no
            text, top = "Perhaps", [{"token": t, "logprob": -1.0 - i, "bytes": list(t.encode())}
                                    for i, t in enumerate(("Perhaps", "Maybe", "The"))]
            logprobs = {"content": [{"token": "Perhaps", "logprob": -1.0, "bytes": [], "top_logprobs": top}]}
        elif self.mode == "logprobs" and body.get("logprobs"):
            top = _top(p_yes)[: int(body.get("top_logprobs") or 0)]
            first = top[0] if top else _top(p_yes)[0]
            logprobs = {"content": [{**first, "top_logprobs": top}]}
        return 200, {"id": f"chatcmpl-{n}", "object": "chat.completion", "created": int(time.time()),
                     "model": body.get("model"),
                     "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                  "logprobs": logprobs, "finish_reason": "length"}],
                     "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}, {}

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output quiet
                pass

            def _send(self, status: int, payload, headers: dict) -> None:
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._send(200, {"object": "list", "data": [{"id": server.model, "object": "model"}]}, {})

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with server._lock:
                    server.requests += 1
                    number = server.requests
                    server.in_flight += 1
                    server.peak_in_flight = max(server.peak_in_flight, server.in_flight)
                try:
                    time.sleep(server.delay_s + server.hold_s)
                    try:
                        body = json.loads(raw)
                    except ValueError:
                        self._send(400, {"error": {"message": "request body is not JSON"}}, {})
                        return
                    self._send(*server.answer(body, number))
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout) before the answer
                finally:
                    with server._lock:
                        server.in_flight -= 1

        return Handler
