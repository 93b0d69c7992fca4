"""OpenCV camera capture in its own process, frames in a shared-memory ring, newest-frame access.

The capture process owns ``cv2.VideoCapture(source)`` (a device index, URL or video file), stamps
each frame with ``time.monotonic_ns()`` right after ``read()`` returns (monotonic clocks are shared
by processes on one host), converts BGR -> RGB, resizes to (width, height) and writes it into slot
``seq % ring`` of a shared-memory ring; the consumer copies the newest slot (``latest()``) and
re-checks its sequence number so a slot overwritten during the copy is never returned torn.
"""
from __future__ import annotations

import multiprocessing as mp
import time
from multiprocessing import shared_memory

import numpy as np


def _capture_loop(source, shm_name: str, meta, latest, stop, shape: tuple[int, int, int], ring: int,
                  fps: float | None, loop_file: bool) -> None:
    import cv2

    shm = shared_memory.SharedMemory(name=shm_name)
    frames = np.ndarray((ring, *shape), np.uint8, buffer=shm.buf)
    cap = cv2.VideoCapture(source)
    seq, period_s, t_next = 0, (1.0 / fps if fps else 0.0), time.monotonic()
    try:
        while not stop.is_set() and cap.isOpened():
            ok, bgr = cap.read()
            t_ns = time.monotonic_ns()
            if not ok:
                if loop_file:
                    cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                    continue
                break
            if bgr.shape[:2] != shape[:2]:
                bgr = cv2.resize(bgr, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)
            seq += 1
            slot = seq % ring
            with meta.get_lock():
                meta[2 * slot] = 0  # invalid while being written
            frames[slot] = bgr[..., ::-1]
            with meta.get_lock():
                meta[2 * slot], meta[2 * slot + 1] = seq, t_ns
                latest.value = seq
            if period_s:
                t_next += period_s
                time.sleep(max(0.0, t_next - time.monotonic()))
    finally:
        cap.release()
        del frames
        shm.close()
        with meta.get_lock():
            latest.value = -abs(latest.value) if latest.value else -1  # negative: the source ended


class CameraProcess:
    """``start()``, ``latest() -> (rgb (H, W, 3) uint8, t_capture_ns, seq) | None``, ``close()`` (+ context manager)."""

    def __init__(self, source, width: int = 128, height: int = 128, fps: float | None = None, ring: int = 4,
                 loop_file: bool = False):
        if ring < 2:
            raise ValueError(f"ring must be >= 2 slots, got {ring}")
        self.source, self.shape, self.fps, self.ring, self.loop_file = source, (height, width, 3), fps, ring, loop_file
        self._ctx = mp.get_context("spawn")  # no forked copies of GL/Qt state
        self._shm = self._proc = None

    def start(self) -> "CameraProcess":
        nbytes = int(np.prod(self.shape)) * self.ring
        self._shm = shared_memory.SharedMemory(create=True, size=nbytes)
        self._frames = np.ndarray((self.ring, *self.shape), np.uint8, buffer=self._shm.buf)
        self._meta = self._ctx.Array("q", 2 * self.ring)  # per slot: seq, t_capture_ns
        self._latest = self._ctx.Value("q", 0)
        self._stop = self._ctx.Event()
        self._proc = self._ctx.Process(
            target=_capture_loop, daemon=True, name=f"camera:{self.source}",
            args=(self.source, self._shm.name, self._meta, self._latest, self._stop, self.shape, self.ring,
                  self.fps, self.loop_file))
        self._proc.start()
        return self

    @property
    def ended(self) -> bool:
        """The source ran out (end of file, camera unplugged) and the process exited."""
        return self._latest.value < 0

    def latest(self) -> tuple[np.ndarray, int, int] | None:
        for _ in range(3):
            with self._meta.get_lock():
                seq = abs(self._latest.value)
                slot = seq % self.ring
                if seq == 0 or self._meta[2 * slot] != seq:
                    return None
                t_ns = self._meta[2 * slot + 1]
            frame = self._frames[slot].copy()
            with self._meta.get_lock():
                if self._meta[2 * slot] == seq:  # not overwritten while copying
                    return frame, int(t_ns), int(seq)
        return None

    def wait_frame(self, newer_than: int = 0, timeout_s: float = 5.0) -> tuple[np.ndarray, int, int]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            got = self.latest()
            if got is not None and got[2] > newer_than:
                return got
            if self._proc is not None and not self._proc.is_alive() and self.ended:
                break
            time.sleep(0.002)
        raise TimeoutError(f"camera {self.source!r}: no frame newer than #{newer_than} within {timeout_s} s")

    def close(self) -> None:
        if self._proc is not None:
            self._stop.set()
            self._proc.join(timeout=5)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(timeout=5)
            self._proc = None
        if self._shm is not None:
            del self._frames
            self._shm.close()
            self._shm.unlink()
            self._shm = None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.is_alive()

    def __enter__(self) -> "CameraProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
