"""The bridge wire format: one schema module, ``PROTOCOL_VERSION = (major, minor)``.

A message is a ZeroMQ multipart ``[msgpack header, *array frames]``. The header is a map::

    {"v": [major, minor], "type": str, "seq": int, "session": str, "t_send_ns": int,
     "frames": [[name, dtype, shape], ...], "body": {type-specific scalars}}

Array frames are raw little-endian C-contiguous bytes described by ``frames``; they are sent
and received without copies (``np.frombuffer`` over the ZeroMQ frame) so camera images and
long chunks cost no serialisation. Never pickle: msgpack decodes only plain data, and every
field is checked against the schema below before anything acts on it (``ProtocolError``).
A newer *minor* version may add optional body fields (ignored by older peers); a different
*major* version is rejected at the handshake.

E-stop epochs (1.1): the server counts e-stops (``estop_epoch``, 0 at start) and publishes the count in
WELCOME, in every STATE and state EVENT, and in the ACK of an ESTOP. An ARM names the epoch its sender
has seen (``ARM.estop_epoch``); the server refuses (NACK ``estopped``) an ARM older than the current
epoch, so only a controller that has heard of the latest e-stop can re-enable motion (libfranka's and
UR's explicit recovery). An ARM without the field (a 1.0 client) counts as naming the epoch of its
session's WELCOME: it is refused once any e-stop happened since that client connected.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import msgpack
import numpy as np

from armflow.control.frames import (ALLOWED_DTYPES, MAX_FRAMES, MAX_NDIM, SMALL_FLOAT_FRAME, ProtocolError,  # noqa: F401
                                    RawArray, _DTYPES, canonical_dtype, check_frames, dtype_of, frame_buffer, is_int)

PROTOCOL_VERSION = (1, 1)

MAX_HEADER_BYTES = 16 * 1024
#: Requests from clients are small; published state may carry camera images.
MAX_REQUEST_BYTES = 4 * 1024 * 1024
MAX_PUB_BYTES = 64 * 1024 * 1024
MAX_CHUNK_H = 1024
MAX_ACTION_DIM = 16
MAX_STR = 256
INT64_MAX = 2**63 - 1
#: RESET seeds: the range every simulator seeds from (numpy's legacy ``RandomState``, gymnasium, MuJoCo tasks).
SEED_MAX = 2**32 - 1
#: A chunk's waypoint interval [ns]: 0.1 ms (faster than any servo loop) to 1 s.
MIN_DT_NS, MAX_DT_NS = 100_000, 1_000_000_000
#: Per-frame ``zmq.MAXMSGSIZE`` of sockets that receive from peers, so libzmq drops an oversize frame
#: (and disconnects its sender) before reading it: requests (server ROUTER), published state and
#: replies (client SUB / DEALER), subscriptions (server PUB; CURVE handshake commands pass too).
MAX_REQUEST_FRAME_BYTES = 4 * 1024 * 1024
MAX_PUB_FRAME_BYTES = 64 * 1024 * 1024
MAX_SUBSCRIPTION_BYTES = 64 * 1024

ROLES = ("controller", "observer")
ACTION_SPACES = ("joint_pos", "joint_vel", "ee_pose", "ee_delta")
MERGE_RULES = ("replace",)


# body schema: type -> {field: (accepted python types, required)}
_INT, _FLOAT, _STR, _BOOL, _DICT, _LIST = (int,), (int, float), (str,), (bool,), (dict,), (list,)
_OPT_INT = (int, type(None))
BODY_SCHEMAS: dict[str, dict[str, tuple[tuple[type, ...], bool]]] = {
    "HELLO": {"client_version": (_STR, True), "role": (_STR, True), "allow_real": (_BOOL, False),
              "t_cmd_ms": (_OPT_INT, False)},
    "WELCOME": {"session": (_STR, True), "robot": (_DICT, True), "limits": (_DICT, True),
                "limits_hash": (_STR, True), "servo_rate_hz": (_FLOAT, True), "state_rate_hz": (_FLOAT, True),
                "server_time_ns": (_INT, True), "timing": (_STR, True), "t_cmd_ms": (_INT, True),
                "role": (_STR, True), "action_dims": (_DICT, True), "pub_endpoint": (_STR, True),
                "estop_epoch": (_INT, False)},
    "REJECT": {"reason": (_STR, True), "code": (_STR, True)},
    "ARM": {"mode": (_STR, True), "estop_epoch": (_INT, False)},
    "DISARM": {},
    "CHUNK": {"chunk_id": (_INT, True), "obs_seq": (_INT, True), "t0_ns": (_INT, True), "dt_ns": (_INT, True),
              "action_space": (_STR, True), "merge": (_STR, False)},
    "HEARTBEAT": {},
    "ESTOP": {"reason": (_STR, False)},
    "RESET": {"seed": (_INT, True)},
    "TIME_SYNC": {"t0_ns": (_INT, True)},
    "BYE": {},
    "STATE": {"state": (_DICT, True)},
    "EVENT": {"kind": (_STR, True), "data": (_DICT, False)},
    "ACK": {"ack_seq": (_INT, True), "info": (_DICT, False)},
    "NACK": {"ack_seq": (_INT, True), "code": (_STR, True), "reason": (_STR, True)},
}
MSG_TYPES = tuple(BODY_SCHEMAS)
#: Sent by clients to the server (everything else is server -> client).
REQUEST_TYPES = ("HELLO", "ARM", "DISARM", "CHUNK", "HEARTBEAT", "ESTOP", "RESET", "TIME_SYNC", "BYE")
_HEADER_KEYS = {"v", "type", "seq", "session", "t_send_ns", "frames", "body"}
#: Integer fields whose valid range is narrower than int64 (inclusive bounds).
FIELD_RANGES = {"RESET.seed": (0, SEED_MAX), "ARM.estop_epoch": (0, INT64_MAX), "WELCOME.estop_epoch": (0, INT64_MAX)}
#: String fields a peer may send longer than MAX_STR: free text, truncated on decode instead of refused.
TRUNCATED_FIELDS = ("reason",)
# The checks below run on every message of the command path, where each microsecond of Python counts
# several times over (a policy loop wakes up with cold caches): precomputed lookups, and fast paths for the
# common case (plain ints, short strings, float64 arrays) that fall back to the general check otherwise.
_RANGED = {tuple(k.split(".", 1)) for k in FIELD_RANGES}
_INT64_MIN = -INT64_MAX - 1


@dataclass
class Message:
    """A decoded message; ``arrays`` maps frame name -> ndarray (read-only views when received)."""

    type: str
    body: dict = field(default_factory=dict)
    arrays: dict = field(default_factory=dict)
    seq: int = 0
    session: str = ""
    t_send_ns: int = 0
    version: tuple = PROTOCOL_VERSION


def encode(msg_type: str, body: dict | None = None, arrays: dict | None = None, *, seq: int = 0,
           session: str = "", t_send_ns: int | None = None) -> list:
    """Return the multipart frames ``[header bytes, *array buffers]`` (array buffers are not copied)."""
    if msg_type not in BODY_SCHEMAS:
        raise ProtocolError("bad_type", f"unknown message type {msg_type!r}; valid: {MSG_TYPES}")
    descs, buffers = [], []
    if arrays:
        for name, value in arrays.items():
            if not (type(value) is np.ndarray and value.dtype.str in _DTYPES and value.flags.c_contiguous):
                value = canonical_dtype(np.asarray(value))
            descs.append([name, value.dtype.str, list(value.shape)])
            buffers.append(memoryview(value).cast("B") if value.size else b"")
    header = {"v": list(PROTOCOL_VERSION), "type": msg_type, "seq": int(seq), "session": session,
              "t_send_ns": int(time.monotonic_ns() if t_send_ns is None else t_send_ns),
              "frames": descs, "body": _fit_body(body) if body else {}}
    raw = msgpack.packb(header, use_bin_type=True)
    if len(raw) > MAX_HEADER_BYTES:  # the receiver would refuse it: fail here, where the bug is
        raise ProtocolError("too_large", f"{msg_type} header of {len(raw)} bytes > {MAX_HEADER_BYTES}")
    return [raw] + buffers


def truncate(text: str, limit: int = MAX_STR) -> str:
    """``text`` cut to ``limit`` characters, the cut marked with an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def fit_strings(value):
    """``value`` with every string (at any depth) cut to MAX_STR, so whatever a peer sends decodes:
    reasons carry exception texts and user input of any length."""
    if isinstance(value, str):
        return truncate(value)
    if isinstance(value, dict):
        return {k: fit_strings(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [fit_strings(v) for v in value]
    return value


def _fit_body(body: dict):
    """``fit_strings(body)``, without rebuilding a body of plain scalars and short strings."""
    for v in body.values():
        t = type(v)
        if (t is str and len(v) > MAX_STR) or not (t is str or t is int or t is float or t is bool or v is None):
            return fit_strings(body)
    return body


def _unpack_header(raw: memoryview) -> dict:
    if len(raw) > MAX_HEADER_BYTES:
        raise ProtocolError("too_large", f"header of {len(raw)} bytes > {MAX_HEADER_BYTES}")
    try:
        header = msgpack.unpackb(raw, raw=False, strict_map_key=True, use_list=True,
                                 max_str_len=MAX_HEADER_BYTES, max_bin_len=0, max_ext_len=0,
                                 max_array_len=1024, max_map_len=256)
    except Exception as exc:  # msgpack raises many types for hostile bytes; all mean "bad header"
        raise ProtocolError("bad_msgpack", f"header is not valid msgpack ({type(exc).__name__})") from None
    if not isinstance(header, dict) or set(header) != _HEADER_KEYS:
        got = sorted(header) if isinstance(header, dict) else type(header).__name__
        raise ProtocolError("bad_header", f"header must be a map with keys {sorted(_HEADER_KEYS)}, got {got}")
    return header


def _check_version(v) -> tuple[int, int]:
    if not (isinstance(v, list) and len(v) == 2 and all(is_int(x) and 0 <= x < 1000 for x in v)):
        raise ProtocolError("bad_version", f"'v' must be [major, minor], got {v!r}")
    return int(v[0]), int(v[1])


def _check_value(name: str, value, types: tuple[type, ...]):
    """``value`` checked against ``types`` and its range; returns it (a free-text field truncated)."""
    t = type(value)  # exact types: msgpack yields plain int/float/str/bool/dict/list, and bool is not an int here
    if t not in types:
        raise ProtocolError("bad_field", f"{name} must be {[x.__name__ for x in types]}, got {t.__name__}")
    if t is int:
        lo, hi = FIELD_RANGES.get(name, (-INT64_MAX - 1, INT64_MAX))
        if not lo <= value <= hi:
            raise ProtocolError("bad_field", f"{name}={value} outside [{lo}, {hi}]")
    elif t is float:
        if not math.isfinite(value):
            raise ProtocolError("not_finite", f"{name} must be finite, got {value}")
    elif t is str and len(value) > MAX_STR:
        if name.rsplit(".", 1)[-1] not in TRUNCATED_FIELDS:
            raise ProtocolError("bad_field", f"{name} longer than {MAX_STR} characters")
        return truncate(value)
    return value


def _check_body(msg_type: str, body, minor: int) -> dict:
    if not isinstance(body, dict):
        raise ProtocolError("bad_body", f"body must be a map, got {type(body).__name__}")
    schema = BODY_SCHEMAS[msg_type]
    unknown = [k for k in body if k not in schema]
    if unknown and minor <= PROTOCOL_VERSION[1]:
        raise ProtocolError("bad_body", f"{msg_type}: unknown fields {sorted(unknown)}; valid: {sorted(schema)}")
    for name, (types, required) in schema.items():
        if name not in body:
            if required:
                raise ProtocolError("bad_body", f"{msg_type}: missing required field {name!r}")
            continue
        value = body[name]
        t = type(value)
        if t in types and ((t is int and _INT64_MIN <= value <= INT64_MAX and (msg_type, name) not in _RANGED)
                           or (t is str and len(value) <= MAX_STR)):
            continue  # the common case, decided without the general check below
        body[name] = _check_value(f"{msg_type}.{name}", value, types)
    return {k: v for k, v in body.items() if k in schema} if unknown else body


def decode(frames: list, *, max_bytes: int = MAX_REQUEST_BYTES, expect: tuple[str, ...] | None = None,
           raw: bool = False) -> Message:
    """Parse and validate multipart ``frames``; raise ``ProtocolError`` on anything off-schema.

    ``expect`` restricts the accepted message types (e.g. ``REQUEST_TYPES`` on the server).
    Array checks specific to a message type (e.g. chunk shapes) are in ``validate_chunk``.
    ``raw``: arrays come back as checked ``RawArray`` frames instead of ndarrays (the server's path).
    """
    if not frames:
        raise ProtocolError("bad_frames", "empty message")
    header = _unpack_header(frame_buffer(frames[0]))
    major, minor = _check_version(header["v"])
    msg_type = header["type"]
    if not isinstance(msg_type, str) or msg_type not in BODY_SCHEMAS:
        raise ProtocolError("bad_type", f"unknown message type {msg_type!r}; valid: {MSG_TYPES}")
    if expect is not None and msg_type not in expect:
        raise ProtocolError("bad_type", f"message type {msg_type} not accepted here; expected one of {expect}")
    for key, types in (("seq", _INT), ("t_send_ns", _INT), ("session", _STR)):
        _check_value(key, header[key], types)
    if header["seq"] < 0:
        raise ProtocolError("bad_field", "seq must be >= 0")
    if major != PROTOCOL_VERSION[0] and msg_type != "HELLO":
        raise ProtocolError("version", f"protocol major {major} != {PROTOCOL_VERSION[0]}")
    if major != PROTOCOL_VERSION[0]:  # a HELLO from another major: only enough to REJECT it
        return Message(msg_type, {}, {}, header["seq"], header["session"], header["t_send_ns"], (major, minor))
    body = _check_body(msg_type, header["body"], minor)
    arrays = check_frames(header["frames"], list(frames[1:]), max_bytes, raw)
    return Message(msg_type, body, arrays, header["seq"], header["session"], header["t_send_ns"], (major, minor))


def peek(frames: list) -> tuple[str | None, int]:
    """Best-effort ``(type, seq)`` of a message ``decode`` refused, read without building the rest of the
    header (msgpack ``skip``), so the server can still honour an e-stop that is malformed in any other way.
    ``type`` is upper-cased and stripped; a leading empty frame (REQ-style delimiter) is skipped."""
    if len(frames) > 1 and not frame_buffer(frames[0]).nbytes:
        frames = frames[1:]
    if not frames:
        return None, 0
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=MAX_REQUEST_BYTES, max_str_len=MAX_HEADER_BYTES,
                                max_bin_len=MAX_HEADER_BYTES, max_array_len=1024, max_map_len=256, max_ext_len=0)
    found: dict = {}
    try:
        unpacker.feed(bytes(frame_buffer(frames[0])[:MAX_REQUEST_BYTES]))
        for _ in range(min(unpacker.read_map_header(), 256)):
            key = unpacker.unpack()
            if key in ("type", "seq") and key not in found:
                found[key] = unpacker.unpack()
            else:
                unpacker.skip()
    except Exception:  # noqa: BLE001  hostile bytes: keep whatever was read before them
        pass
    kind = found.get("type")
    if isinstance(kind, bytes):
        kind = kind.decode("latin-1")
    kind = kind.strip(" \t\r\n\x00").upper() if isinstance(kind, str) else None
    seq = found.get("seq")
    return kind, seq if is_int(seq) and 0 <= seq <= INT64_MAX else 0


def validate_chunk(msg: Message, action_dims: dict[str, int]) -> tuple:
    """Check a CHUNK's fields and arrays; return ``(actions (H, D) float64, gripper (H,) | None)``, or, for a
    message decoded ``raw``, its checked ``RawArray`` frames (float32 or float64) as they are."""
    body = msg.body
    space = body["action_space"]
    if space not in action_dims:
        raise ProtocolError("bad_mode", f"action_space {space!r} not supported; valid: {sorted(action_dims)}")
    if body.get("merge", "replace") not in MERGE_RULES:
        raise ProtocolError("bad_field", f"merge {body['merge']!r} unknown; valid: {MERGE_RULES}")
    if not MIN_DT_NS <= body["dt_ns"] <= MAX_DT_NS:
        raise ProtocolError("bad_field", f"dt_ns must be in [{MIN_DT_NS}, {MAX_DT_NS}], got {body['dt_ns']}")
    if body["t0_ns"] < 0 or body["chunk_id"] < 0:
        raise ProtocolError("bad_field", "t0_ns and chunk_id must be >= 0")
    if set(msg.arrays) - {"actions", "gripper"} or "actions" not in msg.arrays:
        raise ProtocolError("bad_frames", f"CHUNK needs 'actions' (+ optional 'gripper'), got {sorted(msg.arrays)}")
    actions = msg.arrays["actions"]
    dim = action_dims[space]
    if dtype_of(actions).kind != "f" or actions.ndim != 2 or not 1 <= actions.shape[0] <= MAX_CHUNK_H \
            or actions.shape[1] != dim:
        raise ProtocolError("bad_shape", f"actions must be float (H<={MAX_CHUNK_H}, {dim}) for {space}, "
                                         f"got {dtype_of(actions)} {actions.shape}")
    if body["t0_ns"] + (actions.shape[0] - 1) * body["dt_ns"] > INT64_MAX:
        raise ProtocolError("bad_field", f"t0_ns={body['t0_ns']} + {actions.shape[0] - 1} * dt_ns={body['dt_ns']} "
                                         "overflows int64 ns")
    gripper = msg.arrays.get("gripper")
    if gripper is not None:
        if dtype_of(gripper).kind != "f" or tuple(gripper.shape) != (actions.shape[0],):
            raise ProtocolError("bad_shape", f"gripper must be float ({actions.shape[0]},), got {gripper.shape}")
        if type(gripper) is RawArray:
            values = gripper.values()
            outside = min(values) < 0 or max(values) > 1
        else:
            outside = (gripper < 0).any() or (gripper > 1).any()
            gripper = gripper if gripper.dtype == np.float64 else gripper.astype(np.float64)
        if outside:
            raise ProtocolError("bad_field", "gripper must be in [0, 1] (0 open, 1 closed)")
    if type(actions) is RawArray:
        return actions, gripper
    return (actions if actions.dtype == np.float64 else actions.astype(np.float64)), gripper
