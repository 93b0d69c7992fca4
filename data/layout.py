"""LeRobot v3.0 on-disk layout: paths, info.json, parquet schemas, atomic writes.

Shared by the writer (`armflow.data.lerobot`) and the reader (`armflow.data.reader`).
numpy/pyarrow only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from armflow.data.errors import DatasetError
from armflow.data.integrity import check_bytes

CODEBASE_VERSION = "v3.0"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
TMP_DIR = ".tmp"
DEFAULT_FEATURES: dict[str, dict[str, Any]] = {
    "timestamp": {"dtype": "float32", "shape": (1,), "names": None},
    "frame_index": {"dtype": "int64", "shape": (1,), "names": None},
    "episode_index": {"dtype": "int64", "shape": (1,), "names": None},
    "index": {"dtype": "int64", "shape": (1,), "names": None},
    "task_index": {"dtype": "int64", "shape": (1,), "names": None},
}
# dtype name -> (numpy dtype, arrow type) for columns stored in the data parquet.
DTYPES: dict[str, tuple[type, pa.DataType]] = {
    "float32": (np.float32, pa.float32()),
    "float64": (np.float64, pa.float64()),
    "int64": (np.int64, pa.int64()),
    "int32": (np.int32, pa.int32()),
    "bool": (np.bool_, pa.bool_()),
}
VIDEO_DTYPE = "video"


def is_video(feature: dict) -> bool:
    return feature["dtype"] == VIDEO_DTYPE


def normalise_features(features: dict[str, dict], origin: str | Path = "features") -> dict[str, dict]:
    """Validate `{"dtype", "shape", "names"}` entries; shapes become tuples of int."""
    out: dict[str, dict] = {}
    for key, feat in features.items():
        if not isinstance(feat, dict) or "dtype" not in feat or "shape" not in feat:
            raise DatasetError(origin, f"feature {key!r} needs 'dtype' and 'shape', got {feat!r}")
        dtype, shape = feat["dtype"], tuple(int(s) for s in feat["shape"])
        if dtype == VIDEO_DTYPE:
            if len(shape) != 3 or shape[2] != 3:
                raise DatasetError(origin, f"video feature {key!r} needs shape (H, W, 3), got {shape}")
        elif dtype not in DTYPES:
            raise DatasetError(origin, f"feature {key!r} dtype {dtype!r} unsupported; valid: "
                                       f"{sorted(DTYPES) + [VIDEO_DTYPE]}")
        elif len(shape) != 1:
            raise DatasetError(origin, f"feature {key!r} needs a 1-D shape, got {shape}")
        out[key] = {**feat, "shape": shape, "names": feat.get("names")}
    return out


def column_type(feature: dict) -> pa.DataType:
    """Arrow type of a non-video feature: shape (1,) is a scalar, (D,) a fixed-size list."""
    arrow = DTYPES[feature["dtype"]][1]
    (dim,) = feature["shape"]
    return arrow if dim == 1 else pa.list_(arrow, dim)


def _hf_feature(feature: dict) -> dict:
    value = {"dtype": feature["dtype"], "_type": "Value"}
    (dim,) = feature["shape"]
    return value if dim == 1 else {"feature": value, "length": dim, "_type": "List"}


def data_schema(features: dict[str, dict]) -> pa.Schema:
    """Schema of `data/*.parquet` (non-video features then the default columns)."""
    cols = {k: f for k, f in features.items() if not is_video(f)}
    meta = {"info": {"features": {k: _hf_feature(f) for k, f in cols.items()}}}
    return pa.schema([pa.field(k, column_type(f)) for k, f in cols.items()],
                     metadata={"huggingface": json.dumps(meta)})


def to_numpy_column(column: pa.ChunkedArray | pa.Array, feature: dict, where: str | Path,
                    key: str) -> np.ndarray:
    """Arrow column -> numpy `(N,)` for scalars or `(N, D)` for vectors, checked against `feature`."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    np_dtype, arrow_type = DTYPES[feature["dtype"]]
    (dim,) = feature["shape"]
    bad = f"column {key!r} is {arr.type}, info.json says dtype {feature['dtype']} shape {list(feature['shape'])}"
    kind = arr.type
    if pa.types.is_fixed_size_list(kind) or pa.types.is_list(kind) or pa.types.is_large_list(kind):
        lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
        if kind.value_type != arrow_type or np.any(lengths != dim):
            raise DatasetError(where, bad)
        values = pc.list_flatten(arr).to_numpy(zero_copy_only=False).astype(np_dtype, copy=False)
        return values.reshape(len(arr), dim) if dim > 1 else values
    if kind != arrow_type or dim != 1:
        raise DatasetError(where, bad)
    return arr.to_numpy(zero_copy_only=False).astype(np_dtype, copy=False)


def build_info(fps: int, features: dict[str, dict], robot_type: str | None, data_mb: int,
               video_mb: int, chunks_size: int) -> dict:
    """A fresh `meta/info.json` (no episodes yet)."""
    has_video = any(is_video(f) for f in features.values())
    all_features = {**features, **DEFAULT_FEATURES}
    return {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": robot_type,
        "total_episodes": 0,
        "total_frames": 0,
        "total_tasks": 0,
        "chunks_size": chunks_size,
        "data_files_size_in_mb": data_mb,
        "video_files_size_in_mb": video_mb,
        "fps": fps,
        "splits": {},
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH if has_video else None,
        "features": {k: {**f, "shape": list(f["shape"])} for k, f in all_features.items()},
    }


def load_info(root: Path) -> dict:
    """Read and check `meta/info.json`; DatasetError naming the file otherwise."""
    path = root / INFO_PATH
    if not path.is_file():
        raise DatasetError(path, "missing: not a LeRobot dataset root (no meta/info.json)")
    try:
        info = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(path, f"corrupt JSON ({exc})") from None
    if not isinstance(info, dict):
        raise DatasetError(path, f"expected a JSON object, got {type(info).__name__}")
    missing = [k for k in ("codebase_version", "fps", "features", "total_episodes", "total_frames",
                           "data_path") if k not in info]
    if missing:
        raise DatasetError(path, f"missing keys {missing}")
    if info["codebase_version"] != CODEBASE_VERSION:
        raise DatasetError(path, f"codebase_version {info['codebase_version']!r} unsupported, expected "
                                 f"{CODEBASE_VERSION!r} (convert older datasets with LeRobot first)")
    info["features"] = normalise_features(info["features"], origin=path)
    return info


def _write_synced(path: Path, payload: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write `payload` to `path` via a temp file + fsync + os.replace (never half-written)."""
    tmp = path.with_name(path.name + ".tmp")
    _write_synced(tmp, payload)
    os.replace(tmp, path)


def json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=4) + "\n").encode()


def write_json(path: Path, obj: Any) -> None:
    """Write `obj` to a new file `path` (fsynced); callers stage it and rename it into place."""
    _write_synced(path, json_bytes(obj))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, json_bytes(obj))


def write_parquet(path: Path, tables: list[pa.Table], schema: pa.Schema) -> None:
    """Write `tables` (one row group each) to a new file `path`, fsynced, with page CRCs.

    Page checksums let any reader that verifies them (pyarrow `page_checksum_verification`)
    catch a corrupted page even where no content hash is recorded.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(path, schema, compression="snappy", write_page_checksum=True) as writer:
        for table in tables:
            table = table if table.schema.equals(schema) else table.cast(schema)
            writer.write_table(table, row_group_size=max(len(table), 1))
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def atomic_write_parquet(path: Path, tables: list[pa.Table], schema: pa.Schema) -> None:
    """Write `tables` (one row group each) to `path` atomically (temp file + os.replace)."""
    tmp = path.with_name(path.name + ".tmp")
    write_parquet(tmp, tables, schema)
    os.replace(tmp, path)


def read_parquet(path: Path, columns: list[str] | None = None, digest: dict | None = None) -> pa.Table:
    """`pq.read_table` verifying page CRCs and, given `digest` ({"size", "sha256"}), the file's hash.

    DatasetError naming the file for missing/truncated/corrupt files. With a digest the
    file is read once into memory, hashed and parsed from that buffer (no second read).
    """
    if not path.is_file():
        raise DatasetError(path, "missing parquet file")
    try:
        if digest is None:
            return pq.read_table(path, columns=columns, page_checksum_verification=True)
        payload = path.read_bytes()
        check_bytes(path, payload, digest)
        return pq.read_table(pa.BufferReader(payload), columns=columns, page_checksum_verification=True)
    except (pa.ArrowException, OSError) as exc:
        raise DatasetError(path, f"corrupt or truncated parquet ({type(exc).__name__}: {exc})") from None


def tasks_table(tasks: list[str]) -> pa.Table:
    """`meta/tasks.parquet` as LeRobot (pandas) writes it: task string as the index."""
    pandas_meta = {
        "index_columns": ["__index_level_0__"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode",
                            "numpy_type": "object", "metadata": {"encoding": "UTF-8"}}],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64",
             "numpy_type": "int64", "metadata": None},
            {"name": None, "field_name": "__index_level_0__", "pandas_type": "unicode",
             "numpy_type": "object", "metadata": None},
        ],
        "attributes": {}, "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.0",
    }
    schema = pa.schema([pa.field("task_index", pa.int64()), pa.field("__index_level_0__", pa.large_string())],
                       metadata={"pandas": json.dumps(pandas_meta)})
    return pa.table({"task_index": list(range(len(tasks))), "__index_level_0__": tasks}, schema=schema)


def read_tasks(root: Path, digests: dict[str, dict] | None = None) -> list[str]:
    """Task strings ordered by task_index (accepts index column `__index_level_0__` or `task`)."""
    path = root / TASKS_PATH
    table = read_parquet(path, digest=(digests or {}).get(TASKS_PATH))
    name = next((n for n in ("task", "__index_level_0__") if n in table.column_names), None)
    if name is None or "task_index" not in table.column_names:
        raise DatasetError(path, f"expected columns task_index and task, got {table.column_names}")
    indices = table.column("task_index").to_pylist()
    tasks = table.column(name).to_pylist()
    if sorted(indices) != list(range(len(indices))):
        raise DatasetError(path, f"task_index must be 0..{len(indices) - 1}, got {indices}")
    return [t for _, t in sorted(zip(indices, tasks))]
