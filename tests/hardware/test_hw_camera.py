"""Camera capture process against a generated MP4 opened by cv2.VideoCapture as the "camera"."""
from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from armflow.hardware.camera import CameraProcess

N_FRAMES, W, H = 40, 64, 48


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("cam") / "source.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (W, H))
    assert writer.isOpened()
    for i in range(N_FRAMES):
        frame = np.zeros((H, W, 3), np.uint8)
        frame[..., 2] = 40 + 5 * i  # BGR: red ramps with the frame index
        writer.write(frame)
    writer.release()
    return str(path)


def test_newest_frames_are_fresh_rgb_and_monotonic(video):
    with CameraProcess(video, width=W, height=H, fps=60.0, loop_file=True) as cam:
        seen = []
        frame, t_ns, seq = cam.wait_frame()
        for _ in range(8):
            time.sleep(0.03)
            frame, t_ns, seq = cam.wait_frame(newer_than=seq)
            seen.append((seq, t_ns, int(frame[0, 0, 0]), int(frame[0, 0, 2])))
            assert frame.shape == (H, W, 3) and frame.dtype == np.uint8
            assert time.monotonic_ns() - t_ns < 0.5e9  # newest frame, stamped on this host's monotonic clock
        seqs, stamps = [s[0] for s in seen], [s[1] for s in seen]
        assert seqs == sorted(set(seqs)) and stamps == sorted(stamps)
        assert seqs[-1] - seqs[0] >= 7  # newest-only: frames in between were skipped, not queued
        assert all(blue < 10 for *_, blue in seen)  # RGB order: the red ramp is in channel 0
        assert len({red for _, _, red, _ in seen}) > 3
        proc = cam._proc
    assert not proc.is_alive() and cam._shm is None  # clean shutdown


def test_source_end_is_reported(video):
    cam = CameraProcess(video, width=32, height=24).start()  # no pacing, no looping: the file runs out fast
    try:
        deadline = time.monotonic() + 10
        while not cam.ended and time.monotonic() < deadline:
            time.sleep(0.01)
        assert cam.ended
        frame, _, seq = cam.latest()
        assert frame.shape == (24, 32, 3) and seq == N_FRAMES
    finally:
        cam.close()
