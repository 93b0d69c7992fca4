"""3Dconnexion SpaceMouse teleop over ``hidapi`` (``import hid``; ``pip install armflow[spacemouse]``).

HID input reports (little-endian int16 axes, about +-350 full scale):

- id 1, 7 bytes: translation tx, ty, tz; newer receivers send id 1 with 13 bytes: translation then
  rotation rx, ry, rz in one report;
- id 2, 7 bytes: rotation rx, ry, rz;
- id 3: buttons, a bit mask in byte 1 (bit 0 left, bit 1 right).

Mapping to the 7-D action (user in front of the robot, facing it): dx = -ty, dy = -tx, dz = -tz,
roll = -ry, pitch = -rx, yaw = -rz, each scaled by ``1 / full_scale``, zeroed inside ``deadzone`` and
clipped to [-1, 1]. Left button (press) toggles the gripper; right button (press) emits the event
``right_button_event`` ("save" for recording; ``armflow.hardware.intervention`` sets "takeover").
"""
from __future__ import annotations

import numpy as np

VENDOR_IDS = (0x256F, 0x046D)  # 3Dconnexion, and Logitech (older 3Dconnexion devices)
FULL_SCALE = 350.0


def parse_report(report: bytes | list[int]) -> dict[str, np.ndarray]:
    """Decode one HID report into {"translation": (3,) int} / {"rotation": (3,)} / {"buttons": int}."""
    data = bytes(report)
    if not data:
        return {}
    out: dict = {}
    rid = data[0]
    if rid in (1, 2) and len(data) >= 7:
        axes = np.frombuffer(data[1:7], dtype="<i2").astype(float)
        out["translation" if rid == 1 else "rotation"] = axes
        if rid == 1 and len(data) >= 13:
            out["rotation"] = np.frombuffer(data[7:13], dtype="<i2").astype(float)
    elif rid == 3 and len(data) >= 2:
        out["buttons"] = int(data[1])
    return out


class SpaceMouseDevice:
    """``read() -> (action (7,), events)``; ``hid_module`` is the ``hid`` module (injectable for tests)."""

    def __init__(self, hid_module=None, deadzone: float = 0.05, full_scale: float = FULL_SCALE,
                 speed: float = 1.0, max_reports_per_read: int = 64, right_button_event: str = "save"):
        if hid_module is None:
            try:
                import hid as hid_module
            except ImportError:
                raise ImportError("the SpaceMouse needs hidapi: `pip install armflow[spacemouse]`") from None
        self.deadzone, self.full_scale, self.speed = deadzone, full_scale, speed
        self.max_reports = max_reports_per_read
        self.right_button_event = right_button_event
        infos = [d for d in hid_module.enumerate() if d["vendor_id"] in VENDOR_IDS]
        if not infos:
            raise RuntimeError(f"no 3Dconnexion device found (vendor ids {[hex(v) for v in VENDOR_IDS]}); "
                               "check the USB connection and hidraw permissions (udev rule)")
        self.info = infos[0]
        self._dev = hid_module.device()
        self._dev.open(self.info["vendor_id"], self.info["product_id"])
        self._dev.set_nonblocking(1)
        self._trans = np.zeros(3)
        self._rot = np.zeros(3)
        self._buttons = 0
        self._gripper = -1.0

    def _axis(self, raw: np.ndarray) -> np.ndarray:
        x = np.clip(raw / self.full_scale, -1.0, 1.0)
        return np.where(np.abs(x) < self.deadzone, 0.0, x)

    def read(self) -> tuple[np.ndarray, set[str]]:
        events: set[str] = set()
        for _ in range(self.max_reports):  # drain: the newest axis values win
            report = self._dev.read(13)
            if not report:
                break
            parsed = parse_report(report)
            self._trans = parsed.get("translation", self._trans)
            self._rot = parsed.get("rotation", self._rot)
            if "buttons" in parsed:
                pressed = parsed["buttons"] & ~self._buttons
                if pressed & 1:
                    self._gripper = -self._gripper
                if pressed & 2:
                    events.add(self.right_button_event)
                self._buttons = parsed["buttons"]
        t, r = self._axis(self._trans), self._axis(self._rot)
        action = np.array([-t[1], -t[0], -t[2], -r[1], -r[0], -r[2], 0.0]) * self.speed
        action[6] = self._gripper
        return np.clip(action, -1.0, 1.0), events

    def reset(self) -> None:
        self._gripper = -1.0

    def show(self, frame_rgb: np.ndarray, text: str | None = None) -> None:
        """No viewer of its own (the SpaceMouse has no window)."""

    def close(self) -> None:
        self._dev.close()
