"""Array frames of the bridge wire format: descriptors, dtypes, the finite check, and ``RawArray`` (a checked frame
left as bytes). ``armflow.control.protocol`` builds messages on these; numpy and msgpack only, never torch."""
from __future__ import annotations

import math
import sys

import numpy as np

MAX_FRAMES = 16
MAX_NDIM = 4
ALLOWED_DTYPES = ("<f4", "<f8", "<i4", "<i8", "|u1", "|b1")
_ITEMSIZE = {d: np.dtype(d).itemsize for d in ALLOWED_DTYPES}
_DTYPES = {d: np.dtype(d) for d in ALLOWED_DTYPES}
#: memoryview formats of the float dtypes on this (little-endian) host: NaN/inf checks without numpy
_FLOAT_FORMATS = {"<f4": "f", "<f8": "d"} if sys.byteorder == "little" else {}
#: Float frames up to this many elements are checked in plain Python (numpy's first call after the process
#: slept costs tens of microseconds of cold caches; a short Python sum costs a few).
SMALL_FLOAT_FRAME = 512


class ProtocolError(ValueError):
    """A message that violates the schema; ``code`` is a short machine-readable reason."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code


def is_int(x) -> bool:
    return type(x) is int


def frame_buffer(frame) -> memoryview:
    if type(frame) is bytes:
        return memoryview(frame)
    if hasattr(frame, "buffer"):  # zmq.Frame received with copy=False
        return frame.buffer
    return memoryview(frame)


def canonical_dtype(arr: np.ndarray) -> np.ndarray:
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    if arr.dtype.str not in ALLOWED_DTYPES:
        raise ProtocolError("bad_dtype", f"dtype {arr.dtype} not allowed; allowed: {ALLOWED_DTYPES}")
    return np.ascontiguousarray(arr)


class RawArray:
    """An array frame checked like any other (descriptor, size, finite) but left as bytes: what the server
    hands on without looking at the values keeps numpy off the command round trip. ``len``, ``shape`` and
    ``ndim`` behave as an ndarray's."""

    __slots__ = ("dtype", "shape", "data")

    def __init__(self, dtype: str, shape: tuple, data: memoryview):
        self.dtype, self.shape, self.data = dtype, shape, data  # dtype: one of ALLOWED_DTYPES

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d array")
        return self.shape[0]

    def values(self) -> memoryview:
        """The elements, flat (a float frame's as Python floats)."""
        return self.data.cast(_FLOAT_FORMATS[self.dtype]) if self.dtype in _FLOAT_FORMATS else self.to_numpy().ravel()

    def to_numpy(self) -> np.ndarray:
        return np.frombuffer(self.data, dtype=_DTYPES[self.dtype]).reshape(self.shape)


def dtype_of(arr) -> np.dtype:
    return _DTYPES[arr.dtype] if type(arr) is RawArray else arr.dtype


def is_finite_frame(view: memoryview, dtype: str, n: int) -> bool:
    """True if no element of a float frame is NaN or inf. A finite sum proves it (NaN and inf propagate);
    only a sum that overflowed needs the element-wise check."""
    fmt = _FLOAT_FORMATS.get(dtype)
    if fmt is not None and n <= SMALL_FLOAT_FRAME:
        values = view.cast(fmt)
        return math.isfinite(sum(values)) or all(map(math.isfinite, values))
    arr = np.frombuffer(view, dtype=_DTYPES[dtype])
    with np.errstate(over="ignore", invalid="ignore"):  # an overflowing sum is expected here, not an error
        return math.isfinite(arr.sum()) or bool(np.isfinite(arr).all())


def check_frames(descs, buffers: list, max_bytes: int, raw: bool = False) -> dict:
    if not isinstance(descs, list) or len(descs) != len(buffers) or len(descs) > MAX_FRAMES:
        raise ProtocolError("bad_frames", f"'frames' must list one [name, dtype, shape] per array frame "
                                          f"(<= {MAX_FRAMES}); got {len(buffers)} frames")
    arrays, total = {}, 0
    for desc, buf in zip(descs, buffers):
        if not (isinstance(desc, list) and len(desc) == 3 and isinstance(desc[0], str) and len(desc[0]) <= 64
                and desc[1] in ALLOWED_DTYPES and isinstance(desc[2], list) and len(desc[2]) <= MAX_NDIM
                and all(is_int(s) and 0 <= s <= max_bytes for s in desc[2])):
            raise ProtocolError("bad_frames", f"bad frame descriptor {desc!r}; dtypes allowed: {ALLOWED_DTYPES}")
        name, dtype, shape = desc
        if name in arrays:
            raise ProtocolError("bad_frames", f"duplicate frame name {name!r}")
        nbytes = math.prod(shape) * _ITEMSIZE[dtype]
        total += nbytes
        if total > max_bytes:
            raise ProtocolError("too_large", f"array frames exceed {max_bytes} bytes")
        view = frame_buffer(buf)
        if view.nbytes != nbytes:
            raise ProtocolError("bad_frames", f"frame {name!r}: {view.nbytes} bytes, descriptor needs {nbytes}")
        if nbytes and dtype[1] == "f" and not is_finite_frame(view, dtype, nbytes // _ITEMSIZE[dtype]):
            raise ProtocolError("not_finite", f"frame {name!r} contains NaN or inf")
        if raw:
            arrays[name] = RawArray(dtype, tuple(shape), view)
            continue
        arr = np.frombuffer(view, dtype=_DTYPES[dtype]).reshape(shape) if nbytes else np.zeros(shape, dtype)
        arr.flags.writeable = False  # a view over the received frame: never mutate it in place
        arrays[name] = arr
    return arrays


