"""Human takeover of a running policy (HIL-SERL's interventions, Luo et al. 2024): ``Intervention.poll``.

Every control tick the loop calls ``poll(frame_rgb, status_text, policy_gripper)`` once: it reads the
teleop device once and returns the human's action (7,) in [-1, 1] (the teleop contract of
``armflow.hardware.teleop``) while the human drives, else ``None`` (the policy drives)::

    tick        0    1    2    3    4    5    6    7
    keys             t    w         space     t
    poll()    None  0+g  +x   0+g  0+G  0+G  None None     (0+g: zero motion, gripper g; G: toggled)

Who drives (``make_intervention(name, **cfg)``):

- ``keyboard``: ``t`` toggles (take over / hand back). While the human drives and presses no key this
  tick, the action is zero motion with the current gripper command: the arm holds still, as a person
  expects when they let go of the keys.
- ``spacemouse``: motion above ``takeover_deadband`` (fraction of full scale) takes over, and that
  tick's motion is the human's first action; the right button toggles; ``idle_handback_s`` without
  input (no motion, no button) hands back. ``idle_handback_s=0`` hands back on the first still tick,
  as SERL's SpaceMouse wrapper does (human only on ticks with motion).
- ``none``: never (headless runs; no window).

Gripper: the human starts from the gripper the policy last commanded (``policy_gripper``; sign: >= 0
closed) so a takeover never drops a held object; the device's toggle then flips it. ``handback_gripper``
is the gripper the human left at the last hand-back (None before one), for the loop to keep;
``hand_back()`` lets the loop end a takeover itself (e.g. at an episode reset).

Bookkeeping for the loop's logs: ``takeovers``, ``handbacks``, ``steps_in_control`` (ticks ``poll``
returned an action), ``events`` = [("takeover" | "handback", t [s, ``clock``])], and ``device_events``,
the device's other events this tick (e.g. "quit").
"""
from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

INTERVENTION_DEVICES = ("keyboard", "spacemouse", "none")
KEYBOARD_WINDOW = "armflow improve (t: take over / hand back)"
# per device: (takeover_deadband, idle_handback_s) unless the caller overrides them
DEFAULTS: dict[str, dict[str, float | None]] = {
    "keyboard": {"takeover_deadband": None, "idle_handback_s": None},
    "spacemouse": {"takeover_deadband": 0.2, "idle_handback_s": 1.0},
    "none": {"takeover_deadband": None, "idle_handback_s": None},
}


class NullDevice:
    """A device nobody touches: zero motion, gripper open, no events (``make_intervention("none")``)."""

    def read(self) -> tuple[np.ndarray, set[str]]:
        action = np.zeros(7)
        action[6] = -1.0
        return action, set()


class Intervention:
    """Takeover state machine over one teleop device (anything with ``read() -> (action (7,), events)``).

    takeover_deadband: motion (max |action[:6]|) above which the human takes over; None: only the
        "takeover" event does.
    idle_handback_s: hand back after this long without input [s]; None: only the "takeover" event does.
    clock: time source for ``events`` and the idle timer [s].
    """

    def __init__(self, device, takeover_deadband: float | None = None, idle_handback_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic):
        if takeover_deadband is not None and not 0.0 <= takeover_deadband < 1.0:
            raise ValueError(f"takeover_deadband must be in [0, 1) or None, got {takeover_deadband}")
        if idle_handback_s is not None and idle_handback_s < 0.0:
            raise ValueError(f"idle_handback_s must be >= 0 or None, got {idle_handback_s}")
        self.device, self.clock = device, clock
        self.takeover_deadband, self.idle_handback_s = takeover_deadband, idle_handback_s
        self.takeovers = self.handbacks = self.steps_in_control = 0
        self.events: list[tuple[str, float]] = []
        self.device_events: set[str] = set()
        self.gripper: float | None = None  # the human's gripper command while in control
        self.handback_gripper: float | None = None
        self._active, self._flip, self._last_input_t = False, 1.0, 0.0
        self._device_gripper: float | None = None
        self._frame: np.ndarray | None = None

    @property
    def active(self) -> bool:
        """True while the human drives."""
        return self._active

    def poll(self, frame_rgb: np.ndarray | None = None, status_text: str | None = None,
             policy_gripper: float | None = None) -> np.ndarray | None:
        """One tick: the human's action (7,) while the human drives, else None. Call once per tick."""
        # 1. read the device once (the keyboard hands out one key per read)
        action, events = self.device.read()
        action = np.asarray(action, dtype=float)
        now = self.clock()
        toggled = "takeover" in events
        self.device_events = events - {"takeover"}
        motion = float(np.max(np.abs(action[:6])))
        if motion > 0.0 or toggled or action[6] != self._device_gripper:
            self._last_input_t = now
        self._device_gripper = float(action[6])
        # 2. decide who drives this tick
        if self._active:
            idle = self.idle_handback_s is not None and now - self._last_input_t >= self.idle_handback_s
            if toggled or idle:
                self._hand_back(now)
        elif toggled or (self.takeover_deadband is not None and motion > self.takeover_deadband):
            self._take_over(now, float(action[6]), policy_gripper)
        # 3. the human's action: the device's, gripper relative to where the human started from
        human = None
        if self._active:
            human = action.copy()
            human[6] = self._flip * action[6]
            self.gripper = float(human[6])
            self.steps_in_control += 1
        self._show(frame_rgb, status_text)
        return human

    def hand_back(self) -> None:
        """Give control back to the policy now (e.g. the loop resets the episode while the human drives)."""
        if self._active:
            self._hand_back(self.clock())

    def _take_over(self, now: float, device_gripper: float, policy_gripper: float | None) -> None:
        start = device_gripper if policy_gripper is None else (1.0 if policy_gripper >= 0.0 else -1.0)
        self._flip = 1.0 if (start >= 0.0) == (device_gripper >= 0.0) else -1.0
        self._active, self._last_input_t = True, now
        self.takeovers += 1
        self.events.append(("takeover", now))

    def _hand_back(self, now: float) -> None:
        self._active = False
        self.handback_gripper = self.gripper
        self.handbacks += 1
        self.events.append(("handback", now))

    def _show(self, frame_rgb: np.ndarray | None, status_text: str | None) -> None:
        if not hasattr(self.device, "show"):
            return
        if frame_rgb is not None:
            self._frame = frame_rgb
        elif self._frame is None:
            self._frame = np.zeros((96, 96, 3), np.uint8)
        text = "HUMAN" if self._active else "POLICY"
        self.device.show(self._frame, f"{text}  {status_text}" if status_text else text)

    def wait(self, seconds: float) -> None:
        """Pace the loop [s]; the keyboard keeps collecting keys meanwhile (see ``KeyboardDevice.wait``)."""
        getattr(self.device, "wait", time.sleep)(max(0.0, seconds))

    def close(self) -> None:
        if hasattr(self.device, "close"):
            self.device.close()


def make_intervention(name: str, **cfg) -> Intervention:
    """``keyboard`` | ``spacemouse`` | ``none``. ``takeover_deadband`` and ``idle_handback_s`` override
    ``DEFAULTS[name]``; the other keys go to the device (``KeyboardDevice`` / ``SpaceMouseDevice``)."""
    if name not in INTERVENTION_DEVICES:
        raise KeyError(f"unknown intervention device {name!r}; valid devices: {', '.join(INTERVENTION_DEVICES)}")
    own = {**DEFAULTS[name], **{k: cfg.pop(k) for k in list(cfg) if k in DEFAULTS[name]}}
    if name == "keyboard":
        from armflow.hardware.teleop import KeyboardDevice

        device = KeyboardDevice(**{"window": KEYBOARD_WINDOW, "background": True, **cfg})
    elif name == "spacemouse":
        from armflow.hardware.spacemouse import SpaceMouseDevice

        device = SpaceMouseDevice(**{"right_button_event": "takeover", **cfg})
    else:
        if cfg:
            raise TypeError(f"intervention device 'none' takes no device options, got {sorted(cfg)}")
        device = NullDevice()
    return Intervention(device, **own)
