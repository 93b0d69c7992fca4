"""SpaceMouse against a fake ``hid`` module emitting the documented 3Dconnexion report bytes."""
from __future__ import annotations

import struct
from types import SimpleNamespace

import numpy as np
import pytest

from armflow.hardware.spacemouse import SpaceMouseDevice, parse_report


class FakeHidDevice:
    def __init__(self, reports):
        self.reports, self.opened, self.nonblocking = list(reports), None, 0

    def open(self, vendor_id, product_id):
        self.opened = (vendor_id, product_id)

    def set_nonblocking(self, flag):
        self.nonblocking = flag

    def read(self, size):
        assert self.nonblocking == 1, "read before set_nonblocking would block the teleop loop"
        return list(self.reports.pop(0)[:size]) if self.reports else []

    def close(self):
        self.opened = None


def fake_hid(reports, vendor_id=0x256F, product_id=0xC635):
    dev = FakeHidDevice(reports)
    mod = SimpleNamespace(enumerate=lambda: [{"vendor_id": 0x1234, "product_id": 1},
                                             {"vendor_id": vendor_id, "product_id": product_id}],
                          device=lambda: dev)
    return mod, dev


def axes(report_id: int, *values: int) -> bytes:
    return bytes([report_id]) + struct.pack("<" + "h" * len(values), *values)


def test_parse_reports():
    assert np.allclose(parse_report(axes(1, 10, -20, 30))["translation"], [10, -20, 30])
    both = parse_report(axes(1, 1, 2, 3, 4, 5, 6))
    assert np.allclose(both["translation"], [1, 2, 3]) and np.allclose(both["rotation"], [4, 5, 6])
    assert np.allclose(parse_report(axes(2, -7, 8, -9))["rotation"], [-7, 8, -9])
    assert parse_report(bytes([3, 0b10]))["buttons"] == 2 and parse_report(b"") == {}


def test_axes_deadzone_scaling_and_mapping():
    mod, dev = fake_hid([axes(1, 175, -350, 10), axes(2, 0, 700, -3)])
    sm = SpaceMouseDevice(hid_module=mod, deadzone=0.05)
    assert dev.opened == (0x256F, 0xC635)
    action, events = sm.read()
    # dx = -ty, dy = -tx, dz = -tz (10/350 is inside the deadzone); roll = -ry (clipped), pitch = -rx, yaw = -rz
    assert np.allclose(action, [1.0, -0.5, 0.0, -1.0, 0.0, 0.0, -1.0]) and events == set()
    action, _ = sm.read()  # no new report: the last axes persist (the device only reports changes)
    assert action[0] == 1.0


def test_buttons_toggle_gripper_and_save_on_press_only():
    mod, _ = fake_hid([bytes([3, 1]), bytes([3, 0]), bytes([3, 2]), bytes([3, 2])])
    sm = SpaceMouseDevice(hid_module=mod)
    action, events = sm.read()  # all four reports drained in one read
    assert action[6] == 1.0 and events == {"save"}


def test_no_device_is_a_clear_error():
    mod = SimpleNamespace(enumerate=lambda: [{"vendor_id": 0x1234, "product_id": 1}], device=None)
    with pytest.raises(RuntimeError, match="no 3Dconnexion device"):
        SpaceMouseDevice(hid_module=mod)
