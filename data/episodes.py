"""`meta/episodes/*.parquet`: one row per episode (indices, file positions, per-episode stats)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow as pa

from armflow.data.errors import DatasetError
from armflow.data.layout import DTYPES, is_video, read_parquet
from armflow.data.stats import STAT_NAMES, Stats

_FILE_RE = re.compile(r"chunk-(\d+)/file-(\d+)\.(parquet|mp4)$")


def file_index_of(path: Path) -> tuple[int, int] | None:
    """`(chunk_index, file_index)` parsed from `.../chunk-XXX/file-YYY.ext`, None if not such a path."""
    match = _FILE_RE.search(path.as_posix())
    return (int(match.group(1)), int(match.group(2))) if match else None


def list_files(folder: Path, ext: str) -> list[Path]:
    """Files `folder/chunk-*/file-*.<ext>` sorted by (chunk, file)."""
    files = [p for p in folder.glob(f"chunk-*/file-*.{ext}") if file_index_of(p) is not None]
    return sorted(files, key=file_index_of)


def _stat_type(feature: dict, stat: str) -> pa.DataType:
    if stat == "count":
        return pa.list_(pa.int64())
    if is_video(feature):
        return pa.list_(pa.list_(pa.list_(pa.float64())))
    integer = feature["dtype"] in DTYPES and np.issubdtype(DTYPES[feature["dtype"]][0], np.integer)
    return pa.list_(pa.int64() if integer and stat in ("min", "max") else pa.float64())


def episodes_schema(features: dict[str, dict]) -> pa.Schema:
    """Columns in LeRobot 0.4's order; `features` includes the default columns."""
    fields = [("episode_index", pa.int64()), ("tasks", pa.list_(pa.string())), ("length", pa.int64()),
              ("data/chunk_index", pa.int64()), ("data/file_index", pa.int64()),
              ("dataset_from_index", pa.int64()), ("dataset_to_index", pa.int64())]
    for key, feat in features.items():
        if is_video(feat):
            fields += [(f"videos/{key}/chunk_index", pa.int64()), (f"videos/{key}/file_index", pa.int64()),
                       (f"videos/{key}/from_timestamp", pa.float64()),
                       (f"videos/{key}/to_timestamp", pa.float64())]
    for key, feat in features.items():
        fields += [(f"stats/{key}/{stat}", _stat_type(feat, stat)) for stat in STAT_NAMES]
    fields += [("meta/episodes/chunk_index", pa.int64()), ("meta/episodes/file_index", pa.int64())]
    return pa.schema([pa.field(name, kind) for name, kind in fields])


def stats_columns(stats: dict[str, Stats]) -> dict[str, list]:
    """Per-episode stats as `stats/<feature>/<stat>` row values (nested lists)."""
    return {f"stats/{key}/{name}": np.asarray(value).tolist()
            for key, feat in stats.items() for name, value in feat.items()}


def stats_of_row(row: dict, features: dict[str, dict]) -> dict[str, Stats]:
    """Inverse of `stats_columns` for one episode row (features that have stats)."""
    out: dict[str, Stats] = {}
    for key in features:
        if f"stats/{key}/mean" in row:
            out[key] = {s: np.asarray(row[f"stats/{key}/{s}"]) for s in STAT_NAMES}
    return out


def read_episodes(root: Path, total_episodes: int, with_stats: bool = False,
                  digests: dict[str, dict] | None = None) -> list[dict]:
    """Committed episode rows `0..total_episodes-1` (later rows come from an interrupted save).

    `digests` (`{rel_path: {"size", "sha256"}}`, see armflow.data.integrity) verifies each file.
    """
    folder = root / "meta" / "episodes"
    files = list_files(folder, "parquet")
    if total_episodes > 0 and not files:
        raise DatasetError(folder, f"no episodes parquet files but info.json has {total_episodes} episodes")
    rows: list[dict] = []
    for path in files:
        table = read_parquet(path, digest=(digests or {}).get(path.relative_to(root).as_posix()))
        required = ["episode_index", "length", "data/chunk_index", "data/file_index",
                    "dataset_from_index", "dataset_to_index"]
        missing = [c for c in required if c not in table.column_names]
        if missing:
            raise DatasetError(path, f"missing columns {missing}")
        if not with_stats:
            table = table.select([c for c in table.column_names if not c.startswith("stats/")])
        rows += [r for r in table.to_pylist() if r["episode_index"] < total_episodes]
    rows.sort(key=lambda r: r["episode_index"])
    found = [r["episode_index"] for r in rows]
    if found != list(range(total_episodes)):
        raise DatasetError(folder, f"episode indices {found[:10]}... do not match total_episodes "
                                   f"{total_episodes} from info.json")
    return rows
