"""The takeover state machine, driven by scripted devices (no display): keyboard toggle, SpaceMouse motion."""
from __future__ import annotations

import struct
from types import SimpleNamespace

import numpy as np
import pytest

from armflow.hardware.intervention import Intervention, NullDevice, make_intervention
from armflow.hardware.spacemouse import SpaceMouseDevice

FWD = np.array([1.0, 0, 0, 0, 0, 0])


class ScriptedKeys:
    """Plays back one key per read() like ``KeyboardDevice``: "t" takeover, "w" +x, " " gripper toggle."""

    def __init__(self, keys: str):
        self.keys, self.gripper, self.shown = list(keys), -1.0, []

    def read(self):
        key = self.keys.pop(0) if self.keys else "."
        action, events = np.zeros(7), set()
        if key == "w":
            action[:6] = FWD
        elif key == " ":
            self.gripper = -self.gripper
        elif key == "t":
            events.add("takeover")
        elif key == "q":
            events.add("quit")
        action[6] = self.gripper
        return action, events

    def show(self, frame_rgb, text=None):
        self.shown.append((frame_rgb.shape, text))


class Clock:
    def __init__(self, dt_s: float = 0.05):
        self.t, self.dt_s = 0.0, dt_s

    def __call__(self) -> float:
        self.t += self.dt_s
        return self.t


def _poll_all(iv, n, **kw):
    return [iv.poll(**kw) for _ in range(n)]


def test_keyboard_toggle_hold_still_and_handback():
    dev, clock = ScriptedKeys(".tw. .t."), Clock()
    iv = Intervention(dev, clock=clock)
    out = _poll_all(iv, 8, status_text="ep 3")
    assert out[0] is None
    assert np.array_equal(out[1], [0, 0, 0, 0, 0, 0, -1])  # took over: holds still, gripper as it was
    assert np.array_equal(out[2], [1, 0, 0, 0, 0, 0, -1])
    assert np.array_equal(out[3], [0, 0, 0, 0, 0, 0, -1])  # no key this tick: zero motion, not the last key
    assert out[4][6] == 1.0 and out[5][6] == 1.0  # space closed the gripper, and it stays closed
    assert out[6] is None and out[7] is None and not iv.active
    assert (iv.takeovers, iv.handbacks, iv.steps_in_control) == (1, 1, 5)
    assert iv.handback_gripper == 1.0
    assert [name for name, _ in iv.events] == ["takeover", "handback"]
    assert iv.events[0][1] == pytest.approx(0.10) and iv.events[1][1] == pytest.approx(0.35)
    assert [text for _, text in dev.shown] == ["POLICY  ep 3"] + ["HUMAN  ep 3"] * 5 + ["POLICY  ep 3"] * 2


def test_keyboard_motion_alone_never_takes_over_and_other_events_pass_through():
    iv = Intervention(ScriptedKeys("www q"))
    assert _poll_all(iv, 4) == [None] * 4 and iv.takeovers == 0
    assert iv.poll() is None and iv.device_events == {"quit"}


def test_the_loop_can_hand_back():
    iv = Intervention(ScriptedKeys("t "))
    iv.hand_back()  # not in control: nothing happens
    assert iv.poll() is not None and iv.poll()[6] == 1.0
    iv.hand_back()
    assert not iv.active and iv.handback_gripper == 1.0 and iv.poll() is None
    assert (iv.takeovers, iv.handbacks) == (1, 1)


def test_takeover_starts_from_the_policy_gripper():
    # the policy holds an object (gripper closed); the device's own toggle says open: the human must not drop it
    iv = Intervention(ScriptedKeys("t. .t"))
    assert iv.poll(policy_gripper=0.8)[6] == 1.0
    assert iv.poll(policy_gripper=0.8)[6] == 1.0
    assert iv.poll()[6] == -1.0  # space opens it
    assert iv.poll()[6] == -1.0 and iv.poll() is None and iv.handback_gripper == -1.0


def test_spacemouse_style_deadband_idle_and_button():
    clock = Clock(dt_s=0.125)  # exact in binary: the idle test compares times
    dev = SimpleNamespace(script=[0.1, 0.1, 0.5, 0.4, 0, 0, 0, 0, 0, 0.6, "t", 0], gripper=-1.0)

    def read():
        step = dev.script.pop(0)
        action = np.zeros(7)
        action[6] = dev.gripper
        if step == "t":
            return action, {"takeover"}
        action[0] = step
        return action, set()

    dev.read = read
    iv = Intervention(dev, takeover_deadband=0.2, idle_handback_s=0.375, clock=clock)
    out = _poll_all(iv, 12)
    assert out[0] is None and out[1] is None  # inside the takeover deadband
    assert out[2][0] == 0.5 and out[3][0] == 0.4  # the motion that took over is the first human action
    assert [a is None for a in out[4:9]] == [False, False, True, True, True]  # 3 still ticks: hand back
    assert out[9][0] == 0.6 and out[10] is None and out[11] is None  # the button hands back at once
    assert (iv.takeovers, iv.handbacks) == (2, 2)


def _axes(report_id: int, *values: int) -> bytes:
    return bytes([report_id]) + struct.pack("<" + "h" * len(values), *values)


class FakeHid:
    """The ``hid`` module with one 3Dconnexion device that replays report batches, one batch per read() drain."""

    def __init__(self, batches):
        self.batches, self.pending = list(batches), []
        self.enumerate = lambda: [{"vendor_id": 0x256F, "product_id": 0xC635}]
        self.device = lambda: self

    def open(self, vendor_id, product_id):
        pass

    def set_nonblocking(self, flag):
        pass

    def read(self, size):
        if not self.pending:
            if not self.batches:
                return []
            self.pending = list(self.batches.pop(0)) + [None]  # None ends this drain
        report = self.pending.pop(0)
        return [] if report is None else list(report[:size])

    def close(self):
        pass


def test_real_spacemouse_device_through_make_intervention():
    push_fwd = _axes(1, 0, -175, 0)  # -ty -> +x, half scale
    still = _axes(1, 0, 0, 0)
    hid = FakeHid([[_axes(1, 0, -20, 0)], [push_fwd], [bytes([3, 1]), bytes([3, 0])], [still], [bytes([3, 2])],
                   [bytes([3, 0])]])
    iv = make_intervention("spacemouse", hid_module=hid, idle_handback_s=None)
    assert isinstance(iv.device, SpaceMouseDevice) and iv.device.right_button_event == "takeover"
    assert iv.poll() is None  # 20/350 is under the takeover deadband
    assert np.allclose(iv.poll(), [0.5, 0, 0, 0, 0, 0, -1])
    assert iv.poll()[6] == 1.0  # left button closes the gripper
    assert np.allclose(iv.poll(), [0, 0, 0, 0, 0, 0, 1])  # let go: holds still (idle hand-back disabled)
    assert iv.poll() is None and iv.handback_gripper == 1.0  # right button hands back
    assert iv.poll() is None and (iv.takeovers, iv.handbacks, iv.steps_in_control) == (1, 1, 3)


def test_none_never_takes_over_and_make_intervention_validates():
    iv = make_intervention("none")
    assert isinstance(iv.device, NullDevice) and _poll_all(iv, 3) == [None] * 3 and not iv.active
    with pytest.raises(KeyError, match="valid devices: keyboard, spacemouse, none"):
        make_intervention("joystick")
    with pytest.raises(TypeError, match="no device options"):
        make_intervention("none", speed=2.0)
    with pytest.raises(ValueError, match="takeover_deadband"):
        Intervention(NullDevice(), takeover_deadband=1.5)
    with pytest.raises(ValueError, match="idle_handback_s"):
        Intervention(NullDevice(), idle_handback_s=-1.0)
