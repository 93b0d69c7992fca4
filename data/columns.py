"""Per-frame value checks and arrow conversions used by the writer (numpy/pyarrow only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from armflow.data.errors import DatasetError
from armflow.data.integrity import check_bytes
from armflow.data.layout import DTYPES, is_video


def check_value(key: str, feature: dict, value) -> np.ndarray:
    """`value` as the feature's numpy dtype and shape, or ValueError naming key, expected and got."""
    arr = np.asarray(value)
    shape = tuple(feature["shape"])
    if is_video(feature):
        if arr.dtype != np.uint8 or arr.shape != shape:
            raise ValueError(f"add_frame: {key!r} expected uint8 {shape}, got {arr.dtype} {arr.shape}")
        return arr
    want = np.dtype(DTYPES[feature["dtype"]][0])
    kinds = {"f": "fiu", "i": "iu", "b": "b"}[want.kind]
    if arr.dtype.kind not in kinds:
        raise ValueError(f"add_frame: {key!r} expected {feature['dtype']} {shape}, got {arr.dtype} {arr.shape}")
    if arr.shape != shape and not (shape == (1,) and arr.shape == ()):
        raise ValueError(f"add_frame: {key!r} expected shape {shape}, got {arr.shape}")
    return arr.astype(want, copy=False).reshape(shape)


def to_arrow(values: np.ndarray, kind: pa.DataType) -> pa.Array:
    """numpy `(N,)`/`(N, 1)` -> scalar column, `(N, D)` -> fixed-size list column."""
    if pa.types.is_fixed_size_list(kind):
        flat = pa.array(np.ascontiguousarray(values).reshape(-1), type=kind.value_type)
        return pa.FixedSizeListArray.from_arrays(flat, kind.list_size)
    return pa.array(values.reshape(-1), type=kind)


def committed_row_groups(path: Path, n_rows: int, digest: dict | None = None) -> list[pa.Table]:
    """The first `n_rows` rows of `path` as tables, one per row group (episode).

    Page CRCs and `digest` (its recorded size/sha256) are verified: an append must not
    carry corrupted rows into a file whose new hash would then vouch for them.
    """
    try:
        payload = path.read_bytes()
        check_bytes(path, payload, digest)
        pf = pq.ParquetFile(pa.BufferReader(payload), page_checksum_verification=True)
        tables, total = [], 0
        for i in range(pf.num_row_groups):
            if total >= n_rows:
                break
            table = pf.read_row_group(i)
            tables.append(table.slice(0, n_rows - total))
            total += len(tables[-1])
    except (pa.ArrowException, OSError) as exc:
        raise DatasetError(path, f"cannot append: corrupt parquet ({exc})") from None
    if total != n_rows:
        raise DatasetError(path, f"cannot append: has {total} rows, episodes reference {n_rows}")
    return tables
