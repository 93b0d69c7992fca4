"""MP4 video streams for LeRobot v3 datasets, through PyAV.

Every episode is encoded on its own (yuv420p, a keyframe every 2 frames, no
B-frames, presentation timestamps exactly k/fps) and then appended to the
camera's current file by remuxing packets, so an episode always starts on a
keyframe at `from_timestamp` and nothing is re-encoded.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from armflow.data.errors import DatasetError

# Preferred encoders, best first, with their options. libsvtav1 is LeRobot's default.
CODEC_OPTIONS: dict[str, dict[str, str]] = {
    "libsvtav1": {"g": "2", "crf": "30", "preset": "10"},
    "libx264": {"g": "2", "crf": "23", "preset": "veryfast", "bf": "0"},
    "mpeg4": {"g": "2", "qscale": "3", "bf": "0"},
}
# Name written to info.json `video.codec` for each encoder.
CODEC_NAMES: dict[str, str] = {"libsvtav1": "av1", "libx264": "h264", "mpeg4": "mpeg4"}


def encoder_works(codec: str, height: int, width: int, fps: int) -> bool:
    """True when PyAV can open `codec` and encode a few frames at this size."""
    if codec not in av.codecs_available:
        return False
    try:
        enc = EpisodeEncoder(os.devnull, codec, fps, height, width, container_format="null")
        for _ in range(3):
            enc.add(np.zeros((height, width, 3), dtype=np.uint8))
        enc.close()
    except (av.FFmpegError, ValueError, OSError):
        return False
    return True


def choose_codec(requested: str, height: int, width: int, fps: int) -> str:
    """Resolve `requested` ("auto" or an encoder name in CODEC_OPTIONS) to a working encoder."""
    if requested != "auto":
        if requested not in CODEC_OPTIONS:
            raise ValueError(f"video_codec {requested!r} unknown; valid: 'auto', {sorted(CODEC_OPTIONS)}")
        if not encoder_works(requested, height, width, fps):
            raise ValueError(f"video_codec {requested!r} cannot encode {width}x{height} with this PyAV build")
        return requested
    for codec in CODEC_OPTIONS:
        if encoder_works(codec, height, width, fps):
            return codec
    raise ValueError(f"no working video encoder among {list(CODEC_OPTIONS)} for {width}x{height}")


class EpisodeEncoder:
    """Streams uint8 RGB frames `(H, W, 3)` of one episode into an MP4 file."""

    def __init__(self, path: str | Path, codec: str, fps: int, height: int, width: int,
                 container_format: str = "mp4"):
        if codec == "libsvtav1":
            os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its banner at info level otherwise
        self.path = str(path)
        self.n_frames = 0
        self._container = av.open(self.path, "w", format=container_format)
        try:
            self._stream = self._container.add_stream(codec, rate=fps, options=dict(CODEC_OPTIONS[codec]))
            self._stream.width, self._stream.height = width, height
            self._stream.pix_fmt = "yuv420p"
            self._stream.codec_context.time_base = Fraction(1, fps)
        except Exception:
            self._container.close()
            raise

    def add(self, rgb: np.ndarray) -> None:
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts = self.n_frames  # in 1/fps units: timestamp exactly k/fps
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.n_frames += 1

    def close(self) -> None:
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()

    def abort(self) -> None:
        try:
            self._container.close()
        except av.FFmpegError:
            pass


def _frame_number(pts: int, time_base: Fraction, fps: int) -> int:
    """round(pts * time_base * fps) in integer arithmetic (Fraction math is slow per packet)."""
    num, den = time_base.numerator * fps, time_base.denominator
    return (2 * pts * num + den) // (2 * den)


def append_video(base: str | Path | None, keep_frames: int, episode: str | Path | None, out: str | Path,
                 fps: int) -> None:
    """Write `out` = the first `keep_frames` frames of `base` followed by `episode`, by remuxing.

    `base=None` (or keep_frames 0) copies the episode alone; `episode=None` only truncates
    `base`. Frames past `keep_frames` in `base` (left by an interrupted save) are dropped.
    """
    sources = ([(str(base), keep_frames)] if base is not None and keep_frames > 0 else [])
    sources += [(str(episode), None)] if episode is not None else []
    if not sources:
        raise ValueError("append_video: nothing to write")
    with av.open(sources[-1][0]) as template, av.open(str(out), "w", format="mp4") as dst:
        out_stream = dst.add_stream_from_template(template.streams.video[0], opaque=True)
        offset, out_tb = 0, Fraction(1, fps)
        for path, limit in sources:
            with av.open(path) as src:
                stream = src.streams.video[0]
                num, den = stream.time_base.numerator * fps, stream.time_base.denominator
                n_copied = 0
                for packet in src.demux(stream):
                    if packet.pts is None:
                        continue  # flush packet
                    k = (2 * packet.pts * num + den) // (2 * den)  # frame number, see _frame_number
                    if limit is not None and k >= limit:
                        continue
                    dts = packet.dts if packet.dts is not None else packet.pts
                    packet.stream = out_stream
                    packet.time_base = out_tb
                    packet.pts, packet.dts = k + offset, (2 * dts * num + den) // (2 * den) + offset
                    packet.duration = 1
                    dst.mux(packet)
                    n_copied += 1
                offset += n_copied if limit is None else limit


def probe_video(path: str | Path) -> tuple[int, int, int]:
    """`(n_frames, height, width)` of an MP4's first video stream; DatasetError if unreadable."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DatasetError(path, "has no video stream")
            stream = container.streams.video[0]
            n_frames = stream.frames or sum(1 for p in container.demux(stream) if p.pts is not None)
            return int(n_frames), stream.codec_context.height, stream.codec_context.width
    except (av.FFmpegError, OSError) as exc:
        raise DatasetError(path, f"cannot open video ({type(exc).__name__}: {exc})") from None


def decode_range(path: str | Path, start_frame: int, n_frames: int, fps: int) -> np.ndarray:
    """Decode frames `[start_frame, start_frame + n_frames)` -> uint8 `(n_frames, H, W, 3)`.

    Seeks to the keyframe at or before `start_frame / fps` [s] and decodes forward.
    """
    got = 0
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            height, width = stream.codec_context.height, stream.codec_context.width
            out = np.empty((n_frames, height, width, 3), dtype=np.uint8)
            target = int(Fraction(start_frame, fps) / stream.time_base)
            container.seek(target, stream=stream, backward=True, any_frame=False)
            # One reformatter for all frames keeps its swscale context: frame.to_ndarray(format=...) builds a new
            # one per frame, ~1 ms per 84x84 frame against ~0.1 ms (measured, PyAV 18)
            rgb = VideoReformatter()
            for frame in container.decode(stream):
                k = _frame_number(frame.pts, stream.time_base, fps) - start_frame
                if k < 0:
                    continue
                if k >= n_frames:
                    break
                out[k] = rgb.reformat(frame, format="rgb24").to_ndarray()
                got += 1
    except (av.FFmpegError, OSError) as exc:
        raise DatasetError(path, f"cannot decode video ({type(exc).__name__}: {exc})") from None
    if got != n_frames:
        raise DatasetError(path, f"decoded {got} frames from frame {start_frame}, expected {n_frames}")
    return out
