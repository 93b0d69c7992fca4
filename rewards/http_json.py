"""A small JSON-over-HTTP client (stdlib only) for reward servers: timeouts, retries with jitter, rate limit.

Retry policy (why): 429, 408 and 5xx are the server saying "not now", and connection errors and timeouts
are the network or a restarting server, so they are retried with full-jitter exponential backoff (many
clients retrying in lockstep would hit the server together again). A 429 or 503 with ``Retry-After``
waits what the server asked for, capped at ``max_retry_after_s``. Any other 4xx is our request being wrong:
it fails at once. Every failure ends as ``RequestFailed(reason)``; callers turn it into an invalid result.
"""
from __future__ import annotations

import email.utils
import http.client
import json
import random
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class RequestFailed(Exception):
    """The request did not produce a JSON answer; ``reason`` says why, ``status`` the last HTTP status."""

    def __init__(self, reason: str, status: int | None = None, attempts: int = 1):
        super().__init__(reason)
        self.reason, self.status, self.attempts = reason, status, attempts


class RateLimiter:
    """At most ``rate_per_s`` request starts per second across threads (evenly spaced slots; 0 = no limit)."""

    def __init__(self, rate_per_s: float = 0.0):
        if rate_per_s < 0:
            raise ValueError(f"rate_per_s={rate_per_s}: expected >= 0 (0 = unlimited)")
        self.interval_s = 1.0 / rate_per_s if rate_per_s > 0 else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Block until this caller's slot; returns the seconds waited."""
        if self.interval_s == 0.0:
            return 0.0
        with self._lock:  # reserve a slot, then sleep outside the lock
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self.interval_s
        wait = slot - now
        if wait > 0:
            time.sleep(wait)
        return wait


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


@dataclass
class RetryPolicy:
    max_retries: int = 3          # attempts = 1 + max_retries
    backoff_s: float = 0.25       # first backoff cap; doubles per attempt (full jitter: uniform(0, cap))
    max_backoff_s: float = 8.0
    max_retry_after_s: float = 30.0  # longer Retry-After requests fail instead of stalling the caller
    retry_timeouts: bool = True


class JsonClient:
    """POST JSON to ``base_url + path`` and return the decoded JSON object.

    timeout_s: per socket operation (connect, each read) [s]; a server that goes silent for longer fails
    the attempt. api_key: sent as ``Authorization: Bearer``. rate_per_s: request starts per second.
    """

    def __init__(self, base_url: str, timeout_s: float = 30.0, api_key: str | None = None,
                 retry: RetryPolicy | None = None, rate_per_s: float = 0.0, seed: int | None = None):
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"url={base_url!r}: expected http://host:port/v1 or https://...")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s={timeout_s}: expected > 0")
        self.base_url = base_url.rstrip("/")
        self.timeout_s, self.api_key = float(timeout_s), api_key
        self.retry = retry or RetryPolicy()
        self.limiter = RateLimiter(rate_per_s)
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self.requests_sent = 0
        self._count_lock = threading.Lock()

    def _jitter(self, attempt: int) -> float:
        cap = min(self.retry.max_backoff_s, self.retry.backoff_s * 2 ** attempt)
        with self._rng_lock:
            return self._rng.uniform(0.0, cap)

    def _once(self, path: str, body: bytes) -> dict[str, Any]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.base_url + path, data=body, headers=headers, method="POST")
        self.limiter.acquire()
        with self._count_lock:
            self.requests_sent += 1
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
            raw = response.read()
        try:
            answer = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise RequestFailed(f"response is not JSON: {raw[:80]!r}", status=200) from None
        if not isinstance(answer, dict):
            raise RequestFailed(f"response is JSON {type(answer).__name__}, expected an object", status=200)
        return answer

    def post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        """The JSON answer, after up to ``1 + max_retries`` attempts; else ``RequestFailed``."""
        body = json.dumps(payload).encode()
        attempts = self.retry.max_retries + 1
        for attempt in range(attempts):
            wait: float | None
            try:
                return self._once(path, body)
            except urllib.error.HTTPError as exc:
                detail = exc.read()[:200].decode("utf-8", "replace") if exc.fp else ""
                reason, status = f"HTTP {exc.code} {exc.reason}: {detail}".strip(), exc.code
                if exc.code not in RETRY_STATUS:
                    raise RequestFailed(reason, status, attempt + 1) from None
                wait = parse_retry_after(exc.headers.get("Retry-After"))
                if wait is not None and wait > self.retry.max_retry_after_s:
                    raise RequestFailed(f"{reason} (Retry-After {wait:.0f} s > max_retry_after_s)", status,
                                        attempt + 1) from None
            except (TimeoutError, socket.timeout) as exc:
                reason, status, wait = f"timed out after {self.timeout_s:g} s ({exc})", None, None
                if not self.retry.retry_timeouts:
                    raise RequestFailed(reason, None, attempt + 1) from None
            except urllib.error.URLError as exc:
                timed_out = isinstance(exc.reason, (TimeoutError, socket.timeout))
                reason, status, wait = f"cannot reach {self.base_url}: {exc.reason}", None, None
                if timed_out and not self.retry.retry_timeouts:
                    raise RequestFailed(reason, None, attempt + 1) from None
            except (OSError, http.client.HTTPException) as exc:  # reset mid-read, remote closed early, bad status line
                reason, status, wait = f"connection to {self.base_url} failed: {exc}", None, None
            if attempt + 1 < attempts:
                time.sleep(wait if wait is not None else self._jitter(attempt))
        raise RequestFailed(f"{reason} (gave up after {attempts} attempts)", status, attempts)
