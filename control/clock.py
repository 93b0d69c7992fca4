"""NTP-style clock offset between client and server monotonic clocks.

One exchange: the client stamps t0 (send), the server t1 (receive) and t2 (reply), the client
t3 (receive). ``offset = ((t1 - t0) + (t2 - t3)) / 2`` maps client time to server time and
``rtt = (t3 - t0) - (t2 - t1)``; the sample with the smallest RTT has the tightest error bound
(|error| <= rtt / 2), so it is kept.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ClockSync:
    offset_ns: int = 0  # server_time = client_time + offset_ns
    rtt_ns: int | None = None
    n_samples: int = 0

    def add_sample(self, t0_ns: int, t1_ns: int, t2_ns: int, t3_ns: int) -> bool:
        """Record one exchange; return True if it became the kept (min-RTT) sample."""
        rtt = (t3_ns - t0_ns) - (t2_ns - t1_ns)
        self.n_samples += 1
        if rtt < 0:
            return False  # clocks are monotonic: a negative RTT is a corrupt sample
        if self.rtt_ns is None or rtt < self.rtt_ns:
            self.rtt_ns = rtt
            self.offset_ns = ((t1_ns - t0_ns) + (t2_ns - t3_ns)) // 2
            return True
        return False

    def to_server(self, client_ns: int) -> int:
        return client_ns + self.offset_ns

    def to_client(self, server_ns: int) -> int:
        return server_ns - self.offset_ns

    @property
    def error_bound_ns(self) -> int | None:
        return None if self.rtt_ns is None else self.rtt_ns // 2
