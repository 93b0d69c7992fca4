"""The I/O-process <-> servo-process channel: a ``multiprocessing`` pipe carrying msgpack bytes
(ndarrays as an ext type; never pickle), plus two shared-memory words the servo polls each tick
without touching the pipe:

* ``last_cmd_ns``: monotonic time of the lease holder's last valid message (watchdog feed);
* ``estop_count``: incremented by the I/O process on ESTOP, so an e-stop jumps every queue.
"""
from __future__ import annotations

import multiprocessing as mp
from dataclasses import dataclass

import msgpack
import numpy as np

_ND_EXT = 1


def _default(obj):
    if isinstance(obj, np.ndarray):
        arr = np.ascontiguousarray(obj)
        return msgpack.ExtType(_ND_EXT, msgpack.packb([arr.dtype.str, list(arr.shape), arr.tobytes()]))
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"cannot send {type(obj).__name__} to the servo process")


def array_ext(raw) -> msgpack.ExtType:
    """A ``protocol.RawArray`` (dtype string, shape, bytes) packed as ``pack`` packs an ndarray, so the I/O
    process hands a checked frame to the servo without building an ndarray of it."""
    return msgpack.ExtType(_ND_EXT, msgpack.packb([raw.dtype, list(raw.shape), bytes(raw.data)]))


def _ext_hook(code: int, data: bytes):
    if code != _ND_EXT:
        raise ValueError(f"unknown ext type {code}")
    dtype, shape, raw = msgpack.unpackb(data, raw=False)
    return np.frombuffer(raw, dtype=np.dtype(dtype)).reshape(shape)


def pack(obj: dict) -> bytes:
    return msgpack.packb(obj, default=_default, use_bin_type=True)


def unpack(data: bytes) -> dict:
    return msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=False)


@dataclass
class SharedWords:
    """Shared-memory words written by the I/O process, read by the servo (lock-free int64)."""

    last_cmd_ns: object
    estop_count: object

    @classmethod
    def create(cls, ctx) -> "SharedWords":
        return cls(ctx.RawValue("q", 0), ctx.RawValue("q", 0))


def get_context(start_method: str = "spawn"):
    valid = mp.get_all_start_methods()
    if start_method not in valid:
        raise ValueError(f"start_method {start_method!r} unavailable; valid: {valid}")
    return mp.get_context(start_method)
