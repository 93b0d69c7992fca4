"""Episode-atomic LeRobot v3.0 writer (numpy, pyarrow and av only; no torch).

Commit protocol of `save_episode` (see armflow.data.commit; info.json is the commit point):
1. each camera's episode, already encoded while frames arrived, is remuxed onto a staged
   copy of the camera's current MP4 (under `.tmp/commit/`, hidden from LeRobot's globs);
2. a staged copy of the current data parquet gets one more row group;
3. tasks.parquet, the current episodes parquet and stats.json are staged;
4. info.json is staged with the new totals and the sha256 of every file (`armflow_checksums`);
5. the journal is written, then every staged file is renamed into place, info.json last.
A kill before step 5 leaves the dataset as it was (the next writer discards the staged
files); a kill inside step 5's renames is rolled forward by the next open or append.
Cost per save is O(size of the current files)
(parquet row groups are rewritten, MP4 packets remuxed, nothing re-encoded), bounded by
rolling to a new file past `data_files_size_in_mb` / `video_files_size_in_mb` (defaults
10 and 50 MB, below LeRobot's 100/200) or `max_frames_per_file` frames (default 10k:
about 0.1-0.3 s per save at 84x84 on a loaded 2-core CPU; per-episode files would be
O(episode) but break LeRobot's many-episodes-per-file layout).
"""

from __future__ import annotations

import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from armflow.data.columns import check_value, committed_row_groups, to_arrow
from armflow.data.commit import Commit, discard_uncommitted, kill_hook, recover
from armflow.data.episodes import episodes_schema, file_index_of, list_files, read_episodes, \
    stats_columns, stats_of_row
from armflow.data.errors import DatasetError
from armflow.data.layout import DATA_PATH, DEFAULT_FEATURES, EPISODES_PATH, INFO_PATH, \
    STATS_PATH, TASKS_PATH, TMP_DIR, VIDEO_PATH, atomic_write_json, build_info, data_schema, is_video, \
    load_info, normalise_features, read_tasks, tasks_table, write_json, write_parquet
from armflow.data.integrity import CHECKSUMS_KEY, check_file, committed_digests, file_entry
from armflow.data.stats import Stats, aggregate_stats, compute_stats, image_histogram, \
    stats_from_histogram, stats_to_json
from armflow.data.video import CODEC_NAMES, EpisodeEncoder, append_video, choose_codec, probe_video

_MB = 1 << 20


@dataclass
class FilePos:
    """Current file of one stream: its (chunk, file) index and committed rows/frames in it."""

    chunk: int = 0
    file: int = 0
    count: int = 0

    def rolled(self, chunks_size: int) -> "FilePos":
        nxt = self.file + 1
        return FilePos(self.chunk + 1, 0, 0) if nxt >= chunks_size else FilePos(self.chunk, nxt, 0)


class LeRobotWriter:
    """Record episodes into a LeRobot v3.0 dataset at `root`; appends when `root` exists.

    features: LeRobot's `{key: {"dtype", "shape", "names"}}`; dtype "video" for cameras
      (uint8 frames `(H, W, 3)`), else "float32", "float64", "int64", "int32" or "bool".
    video_codec: "auto" (first working of libsvtav1, libx264, mpeg4) or one of them.
    When `root` already holds a dataset the writer appends: fps and features must match,
    the codec and file-size limits come from its info.json, and leftovers of an
    interrupted save are rolled forward (journal complete) or dropped first, with a warning.
    """

    def __init__(self, root: str | Path, fps: int, features: dict[str, dict], robot_type: str | None = None,
                 video_codec: str = "auto", *, data_files_size_in_mb: float = 10,
                 video_files_size_in_mb: float = 50, chunks_size: int = 1000,
                 max_frames_per_file: int = 10_000):
        self.root = Path(root)
        self.fps = int(fps)
        self.max_frames_per_file = int(max_frames_per_file)
        user = normalise_features(features)
        clash = sorted(set(user) & set(DEFAULT_FEATURES))
        if clash:
            raise ValueError(f"features {clash} are default columns written automatically; remove them")
        self._video_keys = [k for k, f in user.items() if is_video(f)]
        for key in self._video_keys:
            height, width, _ = user[key]["shape"]
            if height % 2 or width % 2:
                raise ValueError(f"video feature {key!r}: yuv420p needs even height and width, got {height}x{width}")
        self._codecs: dict[str, str] = {}
        recover(self.root)
        discard_uncommitted(self.root)
        self._digests: dict[str, dict] = {}  # committed files' {"size", "sha256"} by relative path
        self._verified: set[str] = set()  # files whose hash this writer checked or wrote
        if (self.root / INFO_PATH).exists():
            self._resume(user, video_codec)
        else:
            self._create(user, robot_type, video_codec, data_files_size_in_mb, video_files_size_in_mb, chunks_size)
        self.features = {k: f for k, f in self._info["features"].items() if k not in DEFAULT_FEATURES}
        self._tmp = self.root / TMP_DIR
        shutil.rmtree(self._tmp, ignore_errors=True)  # leftovers of a killed episode
        self._tmp.mkdir(parents=True)
        self._reset_buffer()

    # ------------------------------------------------------------------ set-up
    def _create(self, user: dict, robot_type, video_codec, data_mb, video_mb, chunks_size) -> None:
        for key in self._video_keys:
            height, width, channels = user[key]["shape"]
            codec = choose_codec(video_codec, height, width, self.fps)
            self._codecs[key] = codec
            user[key] = {**user[key], "info": {
                "video.height": height, "video.width": width, "video.codec": CODEC_NAMES[codec],
                "video.pix_fmt": "yuv420p", "video.is_depth_map": False, "video.fps": self.fps,
                "video.channels": channels, "has_audio": False}}
        self._info = build_info(self.fps, user, robot_type, data_mb, video_mb, chunks_size)
        self._info["features"] = normalise_features(self._info["features"])
        self._info[CHECKSUMS_KEY] = {"total_episodes": 0, "total_frames": 0, "files": {}}
        self._tasks: list[str] = []
        self._stats: dict[str, Stats] = {}
        self._data_pos, self._meta_pos = FilePos(), FilePos()
        self._video_pos = {k: FilePos() for k in self._video_keys}
        self._meta_table = self._meta_rows_table([])
        self._remove_orphans()
        atomic_write_json(self.root / INFO_PATH, _info_json(self._info))

    def _resume(self, user: dict, video_codec: str) -> None:
        info_path = self.root / INFO_PATH
        self._info = info = load_info(self.root)
        if info["fps"] != self.fps:
            raise DatasetError(info_path, f"fps {info['fps']} on disk, writer asked for {self.fps}")
        stored = {k: f for k, f in info["features"].items() if k not in DEFAULT_FEATURES}
        mismatch = {k: (stored.get(k, {}).get("dtype"), stored.get(k, {}).get("shape"), f["dtype"], f["shape"])
                    for k, f in user.items() if (stored.get(k, {}).get("dtype"), stored.get(k, {}).get("shape"))
                    != (f["dtype"], f["shape"])}
        if mismatch or set(stored) != set(user):
            raise DatasetError(info_path, f"cannot append: features differ from the dataset's "
                                          f"(on disk {sorted(stored)}, given {sorted(user)}; "
                                          f"(disk dtype, shape, given dtype, shape): {mismatch})")
        by_name = {name: enc for enc, name in CODEC_NAMES.items()}
        for key in self._video_keys:
            codec_name = stored[key].get("info", {}).get("video.codec", "av1")
            requested = by_name.get(codec_name, video_codec)
            height, width, _ = stored[key]["shape"]
            self._codecs[key] = choose_codec(requested, height, width, self.fps)
        n_eps = info["total_episodes"]
        self._digests = committed_digests(info, self.root)
        self._tasks = read_tasks(self.root, self._digests) if n_eps else []
        rows = read_episodes(self.root, n_eps, with_stats=True, digests=self._digests)
        self._data_pos, self._meta_pos = FilePos(), FilePos()
        self._video_pos = {k: FilePos() for k in self._video_keys}
        self._meta_table = self._meta_rows_table([])
        if rows:
            last = rows[-1]
            data_file = (last["data/chunk_index"], last["data/file_index"])
            self._data_pos = FilePos(*data_file, sum(r["length"] for r in rows if
                                                     (r["data/chunk_index"], r["data/file_index"]) == data_file))
            for key in self._video_keys:
                frames = int(round(last[f"videos/{key}/to_timestamp"] * self.fps))
                self._video_pos[key] = FilePos(last[f"videos/{key}/chunk_index"],
                                               last[f"videos/{key}/file_index"], frames)
            meta_file = (last["meta/episodes/chunk_index"], last["meta/episodes/file_index"])
            self._meta_table = self._meta_rows_table([r for r in rows if (
                r["meta/episodes/chunk_index"], r["meta/episodes/file_index"]) == meta_file])
            self._meta_pos = FilePos(*meta_file, len(self._meta_table))
        per_episode = [stats_of_row(r, info["features"]) for r in rows]
        self._stats = {k: aggregate_stats([s[k] for s in per_episode]) for k in (per_episode[0] if rows else {})}
        self._remove_orphans()
        if rows:
            self._truncate_current_files()

    def _truncate_current_files(self) -> None:
        """Drop rows/frames past the committed ones in the current files, as one journaled commit.

        Only datasets killed mid-save by armflow before journaled commits (or changed by
        another tool) hold such extras. Needed before the next save may roll to a new
        file: only the last file may hold extras.
        """
        commit = Commit(self.root)
        data = self._data_path(self._data_pos)
        if pq.ParquetFile(data).metadata.num_rows != self._data_pos.count:
            rows = committed_row_groups(data, self._data_pos.count, self._digests.get(self._rel(data)))
            write_parquet(commit.stage(self._rel(data)), rows, data_schema(self._info["features"]))
        for key, pos in self._video_pos.items():
            path = self._video_path(key, pos)
            if probe_video(path)[0] != pos.count:
                append_video(path, pos.count, None, commit.stage(self._rel(path)), self.fps)
        meta = self.root / EPISODES_PATH.format(chunk_index=self._meta_pos.chunk, file_index=self._meta_pos.file)
        if pq.ParquetFile(meta).metadata.num_rows != len(self._meta_table):
            write_parquet(commit.stage(self._rel(meta)), [self._meta_table], self._meta_table.schema)
        if commit.files:
            warnings.warn(f"{self.root}: dropped rows/frames past the committed episodes in {commit.files}",
                          stacklevel=3)
            self._apply(commit, self._info)

    def _remove_orphans(self) -> None:
        """Delete files past the current ones (an interrupted save's new files) and temp files."""
        streams = [(self.root / "data", "parquet", self._data_pos),
                   (self.root / "meta" / "episodes", "parquet", self._meta_pos)]
        streams += [(self.root / "videos" / k, "mp4", self._video_pos[k]) for k in self._video_keys]
        empty = self._info["total_episodes"] == 0
        for folder, ext, pos in streams:
            for path in list_files(folder, ext):
                if empty or file_index_of(path) > (pos.chunk, pos.file):
                    path.unlink()
            for path in folder.glob("chunk-*/*.tmp"):
                path.unlink()

    def _reset_buffer(self) -> None:
        self._columns: dict[str, list[np.ndarray]] = {k: [] for k in self.features if k not in self._video_keys}
        self._encoders: dict[str, EpisodeEncoder] = {}
        self._hists: dict[str, np.ndarray] = {}
        self._n_buffered = 0

    # ------------------------------------------------------------------ recording
    @property
    def num_episodes(self) -> int:
        return self._info["total_episodes"]

    def add_frame(self, frame: dict) -> None:
        """Buffer one frame: `{key: value}` for every feature (shape/dtype checked)."""
        missing, extra = set(self.features) - set(frame), set(frame) - set(self.features)
        if missing or extra:
            raise ValueError(f"add_frame: frame keys must be exactly {sorted(self.features)}; "
                             f"missing {sorted(missing)}, unexpected {sorted(extra)}")
        checked = {key: check_value(key, self.features[key], value) for key, value in frame.items()}
        for key in self._video_keys:
            if key not in self._encoders:
                height, width, _ = self.features[key]["shape"]
                path = self._tmp / f"{key}.episode.mp4"
                self._encoders[key] = EpisodeEncoder(path, self._codecs[key], self.fps, height, width)
                self._hists[key] = np.zeros((3, 256), dtype=np.int64)
            self._encoders[key].add(checked[key])
            self._hists[key] += image_histogram(checked[key])
        for key in self._columns:
            self._columns[key].append(checked[key])
        self._n_buffered += 1

    def clear_episode(self) -> None:
        """Discard the frames of the episode being recorded."""
        for encoder in self._encoders.values():
            encoder.abort()
        self._reset_buffer()

    def save_episode(self, task: str) -> int:
        """Commit the buffered frames as one episode with instruction `task`; returns its index."""
        n = self._n_buffered
        if n == 0:
            raise ValueError("save_episode: no frames were added since the last save")
        if not isinstance(task, str) or not task:
            raise ValueError(f"save_episode: task must be a non-empty string, got {task!r}")
        try:
            return self._commit(task, n)
        finally:
            self.clear_episode()

    def _commit(self, task: str, n: int) -> int:
        ep = self._info["total_episodes"]
        tasks = self._tasks + ([task] if task not in self._tasks else [])
        columns = {k: np.stack(v) for k, v in self._columns.items()}
        start = self._info["total_frames"]
        columns.update({
            "timestamp": (np.arange(n) / self.fps).astype(np.float32),
            "frame_index": np.arange(n, dtype=np.int64),
            "episode_index": np.full(n, ep, dtype=np.int64),
            "index": np.arange(start, start + n, dtype=np.int64),
            "task_index": np.full(n, tasks.index(task), dtype=np.int64),
        })
        ep_stats = {k: compute_stats(columns[k]) if k in columns else
                    stats_from_histogram(self._hists[k], n) for k in self._info["features"]}
        row = {"episode_index": ep, "tasks": [task], "length": n}
        commit = Commit(self.root)
        video_cols, video_pos = self._commit_videos(commit, n)  # step 1
        data_cols, data_pos = self._commit_data(commit, columns, start, n)  # step 2
        row.update({**video_cols, **data_cols})
        row.update(stats_columns(ep_stats))
        if len(tasks) != len(self._tasks):                # step 3
            write_parquet(commit.stage(TASKS_PATH), [tasks_table(tasks)], tasks_table(tasks).schema)
        meta_pos, meta_table = self._commit_meta_row(commit, row)
        stats = {k: aggregate_stats([self._stats[k], s]) if k in self._stats else s for k, s in ep_stats.items()}
        write_json(commit.stage(STATS_PATH), stats_to_json(stats))
        info = {**self._info, "total_episodes": ep + 1, "total_frames": start + n, "total_tasks": len(tasks),
                "splits": {"train": f"0:{ep + 1}"}}
        self._apply(commit, info)                         # steps 4 and 5
        self._tasks, self._stats = tasks, stats
        self._meta_pos, self._meta_table = meta_pos, meta_table
        self._video_pos, self._data_pos = video_pos, data_pos
        return ep

    def _apply(self, commit: Commit, info: dict) -> None:
        """Stage info.json with `info`'s totals and every committed file's hash, then apply `commit`."""
        digests = {**self._digests, **{rel: file_entry(commit.dir / rel) for rel in commit.files}}
        info = {**info, CHECKSUMS_KEY: {"total_episodes": info["total_episodes"],
                                        "total_frames": info["total_frames"], "files": digests}}
        write_json(commit.stage(INFO_PATH), _info_json(info))
        kill_hook("staged")
        commit.apply(last=INFO_PATH)
        self._info, self._digests = info, digests
        self._verified.update(commit.files)

    def _verify(self, path: Path) -> None:
        """Check a committed file's hash once per writer before its content is carried into a new file."""
        rel = self._rel(path)
        if rel not in self._verified:
            check_file(path, self._digests.get(rel))
            self._verified.add(rel)

    def _commit_videos(self, commit: Commit, n: int) -> tuple[dict, dict[str, FilePos]]:
        cols: dict = {}
        positions: dict[str, FilePos] = {}
        for key in self._video_keys:
            self._encoders[key].close()
            pos = self._roll(self._video_pos[key], self._video_path(key, self._video_pos[key]),
                             self._info["video_files_size_in_mb"])
            path = self._video_path(key, pos)
            if pos.count:
                self._verify(path)
            append_video(path if pos.count else None, pos.count, self._encoders[key].path,
                         commit.stage(self._rel(path)), self.fps)
            cols.update({f"videos/{key}/chunk_index": pos.chunk, f"videos/{key}/file_index": pos.file,
                         f"videos/{key}/from_timestamp": pos.count / self.fps,
                         f"videos/{key}/to_timestamp": (pos.count + n) / self.fps})
            positions[key] = FilePos(pos.chunk, pos.file, pos.count + n)
        return cols, positions

    def _commit_data(self, commit: Commit, columns: dict[str, np.ndarray], start: int,
                     n: int) -> tuple[dict, FilePos]:
        schema = data_schema(self._info["features"])
        pos = self._roll(self._data_pos, self._data_path(self._data_pos), self._info["data_files_size_in_mb"])
        path = self._data_path(pos)
        tables = committed_row_groups(path, pos.count, self._digests.get(self._rel(path))) if pos.count else []
        new = pa.table({f.name: to_arrow(columns[f.name], f.type) for f in schema}, schema=schema)
        write_parquet(commit.stage(self._rel(path)), tables + [new], schema)
        cols = {"data/chunk_index": pos.chunk, "data/file_index": pos.file,
                "dataset_from_index": start, "dataset_to_index": start + n}
        return cols, FilePos(pos.chunk, pos.file, pos.count + n)

    def _commit_meta_row(self, commit: Commit, row: dict) -> tuple[FilePos, pa.Table]:
        pos, table = self._meta_pos, self._meta_table
        path = self.root / EPISODES_PATH.format(chunk_index=pos.chunk, file_index=pos.file)
        if len(table) and path.exists() and path.stat().st_size > self._info["data_files_size_in_mb"] * _MB:
            pos, table = pos.rolled(self._info["chunks_size"]), table.slice(0, 0)
        row = {**row, "meta/episodes/chunk_index": pos.chunk, "meta/episodes/file_index": pos.file}
        table = pa.concat_tables([table, self._meta_rows_table([row])])
        write_parquet(commit.stage(EPISODES_PATH.format(chunk_index=pos.chunk, file_index=pos.file)),
                      [table], table.schema)
        return FilePos(pos.chunk, pos.file, len(table)), table

    def _meta_rows_table(self, rows: list[dict]) -> pa.Table:
        return pa.Table.from_pylist(rows, schema=episodes_schema(self._info["features"]))

    # ------------------------------------------------------------------ helpers
    def _roll(self, pos: FilePos, path: Path, limit_mb: float) -> FilePos:
        """Next file once the current one passes `limit_mb` or `max_frames_per_file` (bounds save cost)."""
        too_big = path.exists() and path.stat().st_size > limit_mb * _MB
        if pos.count and (too_big or pos.count >= self.max_frames_per_file):
            return pos.rolled(self._info["chunks_size"])
        return pos

    def _data_path(self, pos: FilePos) -> Path:
        return self.root / DATA_PATH.format(chunk_index=pos.chunk, file_index=pos.file)

    def _video_path(self, key: str, pos: FilePos) -> Path:
        return self.root / VIDEO_PATH.format(video_key=key, chunk_index=pos.chunk, file_index=pos.file)

    def _rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def finalize(self) -> None:
        """Close the writer; frames added after the last `save_episode` are discarded (with a warning)."""
        if self._n_buffered:
            warnings.warn(f"LeRobotWriter.finalize: discarding {self._n_buffered} unsaved frames", stacklevel=2)
        self.clear_episode()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> "LeRobotWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.clear_episode()  # an exception mid-episode loses only that episode
        self.finalize()


def _info_json(info: dict) -> dict:
    """info.json content: shapes as lists."""
    return {**info, "features": {k: {**f, "shape": list(f["shape"])} for k, f in info["features"].items()}}
