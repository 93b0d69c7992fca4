"""The bridge's state machine (server side; clients cannot bypass it).

::

    DISCONNECTED --lease--> IDLE --ARM--> ARMED --chunk--> RUNNING
         ^                   ^  <--DISARM--'                  |
         '---lease lost------'                                v
    any moving state --(T_cmd silence | force | fault | e-stop)--> HOLD | FAULT | ESTOP

HOLD, FAULT and ESTOP latch: only an explicit ARM from the lease holder leaves them (the
first waypoint after it is checked against ``max_resume_delta`` by the safety layer); an
ARM leaves ESTOP only if it acknowledges the newest e-stop epoch (checked before ``on_arm``
by the server and the servo, see ``control/server.py``). A stronger latch replaces a
weaker one (ESTOP > FAULT > HOLD), never the reverse.
"""
from __future__ import annotations

STATES = ("DISCONNECTED", "IDLE", "ARMED", "RUNNING", "HOLD", "FAULT", "ESTOP")
LATCHED = ("HOLD", "FAULT", "ESTOP")
MOVING = ("ARMED", "RUNNING")
_SEVERITY = {"HOLD": 1, "FAULT": 2, "ESTOP": 3}


class Watchdog:
    """Tracks the bridge state; ``t_cmd_ns`` is the command timeout for the lease holder [ns]."""

    def __init__(self, t_cmd_ns: int):
        if t_cmd_ns <= 0:
            raise ValueError(f"t_cmd_ns must be > 0, got {t_cmd_ns}")
        self.t_cmd_ns = t_cmd_ns
        self.state = "DISCONNECTED"
        self.reason = ""
        self.last_cmd_ns: int | None = None
        self.leased = False
        self.transitions: list[tuple[str, str, str]] = []  # (from, to, reason), drained by the servo

    def _go(self, state: str, reason: str) -> None:
        if state != self.state:
            self.transitions.append((self.state, state, reason))
        self.state, self.reason = state, reason

    @property
    def motion_allowed(self) -> bool:
        return self.state in MOVING

    def on_lease(self, held: bool) -> None:
        """The controller lease was granted (``held``) or released/expired."""
        self.leased = held
        if self.state in LATCHED:
            return  # a new controller must ARM explicitly
        if held and self.state == "DISCONNECTED":
            self._go("IDLE", "controller connected")
        elif not held:
            self._go("HOLD" if self.state in MOVING else "DISCONNECTED", "controller lease released")

    def on_command(self, now_ns: int) -> None:
        """A valid command or heartbeat arrived from the lease holder."""
        self.last_cmd_ns = now_ns

    def on_arm(self, now_ns: int) -> tuple[bool, str]:
        if not self.leased:
            return False, "no controller lease"
        self.last_cmd_ns = now_ns
        self._go("ARMED", "armed")
        return True, ""

    def on_disarm(self) -> None:
        if self.state in MOVING:
            self._go("IDLE", "disarmed")

    def on_chunk(self) -> tuple[bool, str]:
        """A chunk may run only while ARMED/RUNNING."""
        if self.state not in MOVING:
            return False, f"state is {self.state}; ARM first"
        self._go("RUNNING", "running")
        return True, ""

    def trip(self, state: str, reason: str) -> bool:
        """Latch HOLD / FAULT / ESTOP unless a stronger latch is already set; return True if it changed."""
        if state not in _SEVERITY:
            raise ValueError(f"trip state must be one of {tuple(_SEVERITY)}, got {state!r}")
        if _SEVERITY.get(self.state, 0) >= _SEVERITY[state]:
            return False
        if state == "HOLD" and self.state not in MOVING:
            return False  # nothing is moving; HOLD would only hide IDLE/DISCONNECTED
        self._go(state, reason)
        return True

    def check(self, now_ns: int) -> bool:
        """Trip HOLD when the lease holder has been silent for more than T_cmd; True if it tripped."""
        if self.state in MOVING and self.last_cmd_ns is not None and now_ns - self.last_cmd_ns > self.t_cmd_ns:
            return self.trip("HOLD", f"no command for {(now_ns - self.last_cmd_ns) / 1e6:.0f} ms > T_cmd")
        return False

    def drain(self) -> list[tuple[str, str, str]]:
        out, self.transitions = self.transitions, []
        return out
