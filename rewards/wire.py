"""msgpack messages of the reward server (protocol version ``WIRE_VERSION``).

request: ``{"v", "op": "score" | "info", "id", "queries": [query]}``; reply: ``{"v", "id", "ok", "results" |
"info" | "error"}``. A query is ``{"frames": {cam: [shape, bytes]}, "references": {...}, "instruction",
"mode", "state": [shape, float64 bytes] | None}`` (uint8 frames, raw bytes: no base64, no pickle); keys stay
with the client, which matches replies by ``id``. A result carries every ``RewardResult`` field but the key.
"""
from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

from armflow.rewards.protocol import RewardQuery, RewardResult

WIRE_VERSION = 1
_RESULT_FIELDS = ("value", "prob", "evidence", "latency_s", "backend", "model_version", "valid", "error")


def _array(arr: np.ndarray, dtype) -> list:
    arr = np.ascontiguousarray(arr, dtype=dtype)
    return [list(arr.shape), arr.tobytes()]


def _unarray(packed: list, dtype) -> np.ndarray:
    shape, data = packed
    return np.frombuffer(data, dtype=dtype).reshape(shape).copy()


def plain(value: Any) -> Any:
    """Evidence made msgpack-safe: numpy scalars and arrays to Python numbers and lists, the rest to str."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return value
    return str(value)


def encode_query(q: RewardQuery) -> dict:
    return {"frames": {c: _array(f, np.uint8) for c, f in q.frames.items()},
            "references": {n: _array(r, np.uint8) for n, r in q.references.items()},
            "instruction": q.instruction, "mode": q.mode,
            "state": None if q.state is None else _array(q.state, np.float64)}


def decode_query(d: dict) -> RewardQuery:
    return RewardQuery(frames={c: _unarray(f, np.uint8) for c, f in d["frames"].items()},
                       references={n: _unarray(r, np.uint8) for n, r in d.get("references", {}).items()},
                       instruction=d.get("instruction", ""), mode=d.get("mode", "success"),
                       state=None if d.get("state") is None else _unarray(d["state"], np.float64))


def encode_result(r: RewardResult) -> dict:
    out = {f: getattr(r, f) for f in _RESULT_FIELDS}
    out["value"] = float(out["value"])
    out["prob"] = None if out["prob"] is None else float(out["prob"])
    out["evidence"] = plain(out["evidence"])
    return out


def decode_result(d: dict) -> RewardResult:
    return RewardResult(**{f: d[f] for f in _RESULT_FIELDS})


def pack(message: dict) -> bytes:
    return msgpack.packb({"v": WIRE_VERSION, **message}, use_bin_type=True)


def unpack(payload: bytes) -> dict:
    message = msgpack.unpackb(payload, raw=False)
    if not isinstance(message, dict) or message.get("v") != WIRE_VERSION:
        got = message.get("v") if isinstance(message, dict) else type(message).__name__
        raise ValueError(f"reward wire message version {got!r}: expected {WIRE_VERSION}")
    return message
