"""An independent LeRobot v3.0 checker: what any reader of the format may rely on.

Written from the format's description (see /work/shared/design/ecosystem.md and LeRobot's
dataset docs), not from armflow's reader, and reading files the way LeRobot's loader
does: every `data/*/*.parquet` and `meta/episodes/*/*.parquet` counts, whatever info.json
says, so rows an interrupted save left behind are problems here, although armflow's
reader would ignore them. Hidden paths (`.tmp/`) are not part of the dataset.

`validate_lerobot_v3(root)` returns the problems found, one sentence each ([] = valid).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

try:
    import av
except ImportError:  # frame counts need PyAV; without it only the files' presence is checked
    av = None

REQUIRED_INFO = ("codebase_version", "fps", "features", "total_episodes", "total_frames", "total_tasks",
                 "chunks_size", "data_path", "video_path", "splits")
DEFAULT_COLUMNS = ("timestamp", "frame_index", "episode_index", "index", "task_index")
EPISODE_COLUMNS = ("episode_index", "tasks", "length", "data/chunk_index", "data/file_index",
                   "dataset_from_index", "dataset_to_index")
STATS = ("min", "max", "mean", "std", "count")


def validate_lerobot_v3(root: str | Path, check_videos: bool = True) -> list[str]:
    """Problems that make `root` an invalid LeRobot v3.0 dataset; [] when it is valid."""
    root = Path(root)
    problems: list[str] = []
    info = _info(root, problems)
    if info is None:
        return problems
    episodes = _episodes(root, info, problems)
    frames = _data(root, info, problems)
    tasks = _tasks(root, info, problems)
    if episodes is not None and frames is not None:
        _episodes_vs_data(info, episodes, frames, problems)
    if episodes is not None and tasks is not None:
        unknown = sorted({t for ts in episodes["tasks"] for t in (ts or [])} - set(tasks))
        if unknown:
            problems.append(f"meta/episodes: tasks {unknown[:3]} not in meta/tasks.parquet")
    if frames is not None and tasks is not None and len(frames["task_index"]):
        bad = frames["task_index"][(frames["task_index"] < 0) | (frames["task_index"] >= len(tasks))]
        if len(bad):
            problems.append(f"data: task_index {int(bad[0])} outside meta/tasks.parquet's 0..{len(tasks) - 1}")
    if episodes is not None and episodes["episode_index"] and check_videos:
        _videos(root, info, episodes, problems)
    _stats(root, info, problems)
    return problems


def _read(path: Path, problems: list[str], root: Path) -> pa.Table | None:
    try:
        return pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        problems.append(f"{path.relative_to(root)}: unreadable parquet ({exc})")
        return None


def _glob(folder: Path, ext: str) -> list[Path]:
    return sorted(folder.glob(f"*/*.{ext}"))


def _info(root: Path, problems: list[str]) -> dict | None:
    path = root / "meta" / "info.json"
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        problems.append(f"meta/info.json: missing or not JSON ({exc})")
        return None
    if not isinstance(info, dict):
        problems.append("meta/info.json: not a JSON object")
        return None
    missing = [k for k in REQUIRED_INFO if k not in info]
    if missing:
        problems.append(f"meta/info.json: missing keys {missing}")
        return None
    if info["codebase_version"] != "v3.0":
        problems.append(f"meta/info.json: codebase_version {info['codebase_version']!r}, expected 'v3.0'")
    if not isinstance(info["fps"], (int, float)) or info["fps"] <= 0:
        problems.append(f"meta/info.json: fps {info['fps']!r} is not a positive number")
        return None
    features = info["features"]
    for key in DEFAULT_COLUMNS:
        if key not in features:
            problems.append(f"meta/info.json: default feature {key!r} missing from features")
    for key, feat in features.items():
        if not isinstance(feat, dict) or "dtype" not in feat or "shape" not in feat:
            problems.append(f"meta/info.json: feature {key!r} lacks dtype/shape")
            return None
    has_video = any(f["dtype"] == "video" for f in features.values())
    if has_video and not info["video_path"]:
        problems.append("meta/info.json: video features but video_path is null")
    n = info["total_episodes"]
    split = info["splits"].get("train") if isinstance(info["splits"], dict) else None
    if n and split != f"0:{n}":
        problems.append(f"meta/info.json: splits.train {split!r}, expected '0:{n}' for {n} episodes")
    return info


def _episodes(root: Path, info: dict, problems: list[str]) -> dict | None:
    """All rows of meta/episodes/*/*.parquet as {column: list}, sorted by episode_index."""
    tables = []
    for path in _glob(root / "meta" / "episodes", "parquet"):
        table = _read(path, problems, root)
        if table is None:
            return None
        missing = [c for c in EPISODE_COLUMNS if c not in table.column_names]
        if missing:
            problems.append(f"{path.relative_to(root)}: missing columns {missing}")
            return None
        if "meta/episodes/chunk_index" in table.column_names:
            here = {(c, f) for c, f in zip(table.column("meta/episodes/chunk_index").to_pylist(),
                                           table.column("meta/episodes/file_index").to_pylist())}
            if here and here != {(int(path.parent.name.split("-")[1]), int(path.stem.split("-")[1]))}:
                problems.append(f"{path.relative_to(root)}: rows name meta/episodes files {sorted(here)}")
        tables.append(table.select(list(EPISODE_COLUMNS) + [c for c in table.column_names if c.startswith("videos/")]))
    rows = pa.concat_tables(tables, promote_options="default").to_pydict() if tables else \
        {c: [] for c in EPISODE_COLUMNS}
    order = np.argsort(rows["episode_index"], kind="stable")
    rows = {c: [v[i] for i in order] for c, v in rows.items()}
    n = len(rows["episode_index"])
    if n != info["total_episodes"]:
        problems.append(f"meta/episodes: {n} episode rows, info says {info['total_episodes']}")
    if rows["episode_index"] != list(range(n)):
        problems.append(f"meta/episodes: episode_index not contiguous from 0: {rows['episode_index'][:10]}")
        return None
    start = 0
    for e, (lo, hi, length) in enumerate(zip(rows["dataset_from_index"], rows["dataset_to_index"], rows["length"])):
        if length <= 0 or (lo, hi) != (start, start + length):
            problems.append(f"meta/episodes: episode {e} spans [{lo}, {hi}) with length {length}, "
                            f"expected [{start}, {start + length})")
            return None
        start = hi
    if start != info["total_frames"]:
        problems.append(f"meta/episodes: episodes hold {start} frames, info says {info['total_frames']}")
    return rows


def _data(root: Path, info: dict, problems: list[str]) -> dict | None:
    """Default columns of every data/*/*.parquet, keyed by (chunk, file) too."""
    features = info["features"]
    columns = [k for k, f in features.items() if f["dtype"] not in ("video", "image")]
    parts: dict[str, list] = {k: [] for k in DEFAULT_COLUMNS}
    per_file: dict[tuple[int, int], np.ndarray] = {}
    for path in _glob(root / "data", "parquet"):
        table = _read(path, problems, root)
        if table is None:
            return None
        missing = [c for c in columns if c not in table.column_names]
        if missing:
            problems.append(f"{path.relative_to(root)}: missing columns {missing} listed in info.json features")
            return None
        for k in DEFAULT_COLUMNS:
            parts[k].append(table.column(k).to_numpy())
        per_file[(int(path.parent.name.split("-")[1]), int(path.stem.split("-")[1]))] = parts["index"][-1]
    frames = {k: np.concatenate(v) if v else np.zeros(0, np.int64) for k, v in parts.items()}
    frames["files"] = per_file
    n = len(frames["index"])
    if n != info["total_frames"]:
        problems.append(f"data: {n} frames in data files, info says {info['total_frames']}")
    if not np.array_equal(np.sort(frames["index"]), np.arange(n)):
        problems.append("data: column 'index' is not 0..N-1 across the data files")
    expected_ts = frames["frame_index"] / float(info["fps"])
    if n and np.max(np.abs(frames["timestamp"] - expected_ts)) > 1e-4:
        problems.append("data: timestamp differs from frame_index / fps")
    return frames


def _episodes_vs_data(info: dict, episodes: dict, frames: dict, problems: list[str]) -> None:
    by_index = np.argsort(frames["index"])
    ep_of_frame = frames["episode_index"][by_index]
    fi_of_frame = frames["frame_index"][by_index]
    for e in range(len(episodes["episode_index"])):
        lo, hi = episodes["dataset_from_index"][e], episodes["dataset_to_index"][e]
        key = (episodes["data/chunk_index"][e], episodes["data/file_index"][e])
        rel = info["data_path"].format(chunk_index=key[0], file_index=key[1])
        if key not in frames["files"]:
            problems.append(f"meta/episodes: episode {e} names {rel}, which does not exist")
            continue
        in_file = frames["files"][key]
        if np.count_nonzero((in_file >= lo) & (in_file < hi)) != hi - lo:
            problems.append(f"{rel}: holds {np.count_nonzero((in_file >= lo) & (in_file < hi))} rows of "
                            f"episode {e}, its length is {hi - lo}")
        if hi <= len(ep_of_frame) and (np.any(ep_of_frame[lo:hi] != e)
                                       or not np.array_equal(fi_of_frame[lo:hi], np.arange(hi - lo))):
            problems.append(f"data: rows [{lo}, {hi}) do not hold episode {e}'s frames 0..{hi - lo - 1}")


def _tasks(root: Path, info: dict, problems: list[str]) -> list[str] | None:
    path = root / "meta" / "tasks.parquet"
    if not path.is_file():
        if info["total_episodes"]:
            problems.append("meta/tasks.parquet: missing")
        return None
    table = _read(path, problems, root)
    if table is None:
        return None
    name = next((c for c in ("task", "__index_level_0__") if c in table.column_names), None)
    if name is None or "task_index" not in table.column_names:
        problems.append(f"meta/tasks.parquet: expected columns task_index and task, got {table.column_names}")
        return None
    pairs = sorted(zip(table.column("task_index").to_pylist(), table.column(name).to_pylist()))
    if [i for i, _ in pairs] != list(range(len(pairs))):
        problems.append(f"meta/tasks.parquet: task_index not 0..{len(pairs) - 1}")
    if len(pairs) != info["total_tasks"]:
        problems.append(f"meta/tasks.parquet: {len(pairs)} tasks, info says {info['total_tasks']}")
    return [t for _, t in pairs]


def _videos(root: Path, info: dict, episodes: dict, problems: list[str]) -> None:
    fps = float(info["fps"])
    for key, feat in info["features"].items():
        if feat["dtype"] != "video" or not info["video_path"]:
            continue
        cols = [f"videos/{key}/{c}" for c in ("chunk_index", "file_index", "from_timestamp", "to_timestamp")]
        if any(c not in episodes for c in cols):
            problems.append(f"meta/episodes: video feature {key!r} but no {cols[0]}.. columns")
            continue
        needed: dict[Path, float] = {}
        for e in range(len(episodes["episode_index"])):
            chunk, file, t0, t1 = (episodes[c][e] for c in cols)
            if not math.isclose((t1 - t0) * fps, episodes["length"][e], abs_tol=1e-3):
                problems.append(f"meta/episodes: episode {e} covers {(t1 - t0) * fps:.3f} frames of {key!r}, "
                                f"its length is {episodes['length'][e]}")
            path = root / info["video_path"].format(video_key=key, chunk_index=chunk, file_index=file)
            needed[path] = max(needed.get(path, 0.0), t1)
        for path, t_end in needed.items():
            if not path.is_file():
                problems.append(f"{path.relative_to(root)}: missing video file for {key!r}")
                continue
            if av is None:
                continue
            n_frames = _count_frames(path)
            if n_frames is None:
                problems.append(f"{path.relative_to(root)}: unreadable video")
            elif n_frames < round(t_end * fps):
                problems.append(f"{path.relative_to(root)}: {n_frames} frames, episodes reach frame "
                                f"{round(t_end * fps)}")


def _count_frames(path: Path) -> int | None:
    """Video packets with a timestamp in the first video stream; None when unreadable."""
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            return sum(1 for p in container.demux(stream) if p.pts is not None)
    except (av.FFmpegError, IndexError, OSError):
        return None


def _stats(root: Path, info: dict, problems: list[str]) -> None:
    path = root / "meta" / "stats.json"
    if not path.is_file():
        if info["total_episodes"]:
            problems.append("meta/stats.json: missing")
        return
    try:
        stats = json.loads(path.read_text())
    except ValueError as exc:
        problems.append(f"meta/stats.json: not JSON ({exc})")
        return
    for key, entry in stats.items():
        feat = info["features"].get(key)
        if feat is None:
            problems.append(f"meta/stats.json: feature {key!r} not in info.json features")
            continue
        if not isinstance(entry, dict) or any(s not in entry for s in STATS):
            problems.append(f"meta/stats.json: {key!r} lacks one of {list(STATS)}")
            continue
        want = (3, 1, 1) if feat["dtype"] in ("video", "image") else tuple(feat["shape"])
        for s in ("min", "max", "mean", "std"):
            got = np.asarray(entry[s]).shape
            if got != want:
                problems.append(f"meta/stats.json: {key}.{s} has shape {got}, expected {want}")
        count = np.asarray(entry["count"]).reshape(-1)
        if count.size != 1 or int(count[0]) != info["total_frames"]:
            problems.append(f"meta/stats.json: {key}.count {count.tolist()}, info says "
                            f"{info['total_frames']} frames")
