"""Teleop devices with one interface, ``read() -> (action (7,) in [-1, 1], events: set[str])``.

``action`` = end-effector delta (dx, dy, dz, rx, ry, rz; base frame, the env's OSC_POSE convention)
+ gripper (-1 open, +1 closed). ``events`` subset of {"save", "discard", "quit", "success", "takeover"}
("takeover" toggles who drives the arm; only ``armflow.hardware.intervention`` acts on it).

Keyboard (``KeyboardDevice``): a live OpenCV viewer window (``cv2.imshow``; works under Xvfb); keys
are read with ``cv2.waitKey`` and consumed ONE PER ``read()`` in the order typed (holding a key
auto-repeats, so it moves continuously):

====================  =====================================
w / s                 +x / -x (away from / towards the base)
a / d                 +y / -y
r / f                 +z / -z (up / down)
i / k, j / l, u / o   roll +/-, pitch +/-, yaw +/-
space                 toggle the gripper (open <-> closed)
y                     toggle the human success label (frames recorded while on: next.success = true)
t                     take over from the policy / hand back to it ("takeover"; ``armflow improve``)
enter                 save the episode
backspace / x         discard the episode
q / esc               quit
====================  =====================================

SpaceMouse: see ``armflow.hardware.spacemouse``.
"""
from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np

KEY_AXES: dict[str, tuple[int, float]] = {
    "w": (0, 1.0), "s": (0, -1.0), "a": (1, 1.0), "d": (1, -1.0), "r": (2, 1.0), "f": (2, -1.0),
    "i": (3, 1.0), "k": (3, -1.0), "j": (4, 1.0), "l": (4, -1.0), "u": (5, 1.0), "o": (5, -1.0),
}
KEY_EVENTS: dict[int, str] = {13: "save", 10: "save", 8: "discard", 127: "discard", ord("x"): "discard",
                              ord("q"): "quit", 27: "quit", ord("y"): "success", ord("t"): "takeover"}
SPACE = 32
DEVICES = ("keyboard", "spacemouse")


class KeyboardDevice:
    """Keyboard teleop through an OpenCV window; ``show(frame)`` updates the viewer.

    ``background=True``: one daemon thread owns the window (every OpenCV call) and polls keys every ~5 ms, so
    keys typed while the caller is busy (a checkpoint, a video encode) are never lost; OpenCV's ``waitKey``
    keeps only the last key of those that arrived during one call. ``show`` then only hands the frame over."""

    def __init__(self, window: str = "armflow teleop", speed: float = 1.0, view_size_px: int = 480,
                 wait_ms: int = 1, background: bool = False):
        import cv2

        self._cv2, self.window, self.speed = cv2, window, float(speed)
        self.view_size_px, self.wait_ms = int(view_size_px), int(wait_ms)
        self._keys: deque[int] = deque()
        self._gripper = -1.0
        self._thread, self._pending, self._closing = None, None, threading.Event()
        blank = np.zeros((self.view_size_px, self.view_size_px, 3), np.uint8)
        if background:
            self._pending = (blank, None)
            ready = threading.Event()
            self._thread = threading.Thread(target=self._pump, args=(ready,), name="keyboard-pump", daemon=True)
            self._thread.start()
            ready.wait(10.0)
        else:
            cv2.namedWindow(window, cv2.WINDOW_AUTOSIZE)
            self.show(blank)

    def _pump(self, ready: threading.Event) -> None:
        cv2 = self._cv2
        cv2.namedWindow(self.window, cv2.WINDOW_AUTOSIZE)
        ready.set()
        while not self._closing.is_set():
            pending, self._pending = self._pending, None
            if pending is not None:
                self._draw(*pending)
            key = cv2.waitKey(5)
            if key != -1:
                self._keys.append(key & 0xFF)
        cv2.destroyWindow(self.window)
        cv2.waitKey(1)

    def show(self, frame_rgb: np.ndarray, text: str | None = None) -> None:
        """Display an RGB frame (upscaled to the viewer size), optionally with a status line."""
        if self._thread is not None:
            self._pending = (frame_rgb, text)
            return
        self._draw(frame_rgb, text)
        self._poll()

    def _draw(self, frame_rgb: np.ndarray, text: str | None) -> None:
        cv2 = self._cv2
        h, w = frame_rgb.shape[:2]
        scale = self.view_size_px / max(h, w)
        img = cv2.resize(np.ascontiguousarray(frame_rgb[..., ::-1]), (int(w * scale), int(h * scale)),
                         interpolation=cv2.INTER_NEAREST)
        if text:
            cv2.putText(img, text, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1)
        cv2.imshow(self.window, img)

    def _poll(self) -> None:
        if self._thread is not None:
            return  # the pump thread collects keys
        key = self._cv2.waitKey(self.wait_ms)
        while key != -1:
            self._keys.append(key & 0xFF)
            key = self._cv2.waitKey(1)

    def wait(self, seconds: float) -> None:
        """Keep polling keys while the caller paces its loop (OpenCV's waitKey reports only the LAST key
        pressed during one call, so sleeping and then polling once would lose keys typed meanwhile)."""
        if self._thread is not None:
            time.sleep(max(0.0, seconds))
            return
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            key = self._cv2.waitKey(1)
            if key != -1:
                self._keys.append(key & 0xFF)

    def read(self) -> tuple[np.ndarray, set[str]]:
        self._poll()
        action = np.zeros(7)
        events: set[str] = set()
        if self._keys:
            key = self._keys.popleft()
            if key == SPACE:
                self._gripper = -self._gripper
            elif chr(key) in KEY_AXES:
                axis, sign = KEY_AXES[chr(key)]
                action[axis] = sign * self.speed
            elif key in KEY_EVENTS:
                events.add(KEY_EVENTS[key])
        action[6] = self._gripper
        return np.clip(action, -1.0, 1.0), events

    def reset(self) -> None:
        """New episode: gripper open; the window title says "recording" (keys typed so far still count)."""
        self._gripper = -1.0
        if self._thread is None:
            self._cv2.setWindowTitle(self.window, f"{self.window} [recording]")
        self._poll()

    def close(self) -> None:
        if self._thread is not None:
            self._closing.set()
            self._thread.join(timeout=5)
            return
        self._cv2.destroyWindow(self.window)
        self._cv2.waitKey(1)


def make_device(name: str, **cfg):
    """``keyboard`` -> ``KeyboardDevice(**cfg)``; ``spacemouse`` -> ``SpaceMouseDevice(**cfg)``."""
    if name == "keyboard":
        return KeyboardDevice(**cfg)
    if name == "spacemouse":
        from armflow.hardware.spacemouse import SpaceMouseDevice

        return SpaceMouseDevice(**cfg)
    raise KeyError(f"unknown teleop device {name!r}; valid devices: {', '.join(DEVICES)}")


def __getattr__(name: str):
    # The session glue lives in teleop_session (it imports sim/data lazily); re-exported here.
    if name in ("run_teleop_episode", "record_teleop_session", "EnvTarget", "DriverTarget"):
        from armflow.hardware import teleop_session

        return getattr(teleop_session, name)
    raise AttributeError(name)
