"""LeRobot v3.0 reader: validates a dataset on open and preloads its non-video columns.

Works on datasets written by LeRobot itself and by `LeRobotWriter`. Only committed
episodes (`0 .. info.total_episodes - 1`) are read; rows or frames past them, left by
an interrupted save, are ignored. A save killed inside its rename burst is rolled
forward first (armflow.data.commit, with a warning). Where info.json records content
hashes (`armflow_checksums`), every parquet and JSON file is verified on open and each
video's size on open and its sha256 on its first decode (hashing every video on each
open would dominate opening time for large camera datasets).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from armflow.data.commit import recover
from armflow.data.episodes import read_episodes, stats_of_row
from armflow.data.errors import DatasetError
from armflow.data.integrity import check_bytes, check_file, check_size, committed_digests
from armflow.data.layout import STATS_PATH, TASKS_PATH, is_video, load_info, read_parquet, \
    read_tasks, to_numpy_column
from armflow.data.stats import Stats, aggregate_stats, stats_from_json
from armflow.data.video import decode_range, probe_video


class LeRobotDataset:
    """A LeRobot v3.0 dataset at `root` (see README "Interfaces / Dataset").

    Attributes: `fps` [Hz], `features` (info.json's, default columns included),
    `num_episodes`, `num_frames`, `stats` {feature: {stat: array}}, `robot_type`,
    `tasks` (list indexed by task_index), `video_keys`.
    """

    def __init__(self, root: str | Path, check_videos: bool = True):
        self.root = Path(root)
        recover(self.root)
        info = load_info(self.root)
        self.info = info
        self.fps: int = int(info["fps"])
        self.features: dict[str, dict] = info["features"]
        self.robot_type: str | None = info.get("robot_type")
        self.num_episodes: int = int(info["total_episodes"])
        self.num_frames: int = int(info["total_frames"])
        self.video_keys = [k for k, f in self.features.items() if is_video(f)]
        self._digests = committed_digests(info, self.root)
        self._verified_videos: set[Path] = set()
        has_tasks = self.num_episodes > 0 or (self.root / TASKS_PATH).exists()
        self.tasks: list[str] = read_tasks(self.root, self._digests) if has_tasks else []
        self._rows = read_episodes(self.root, self.num_episodes, digests=self._digests)
        self._check_rows()
        self.episode_ranges = np.array([[r["dataset_from_index"], r["dataset_to_index"]] for r in self._rows],
                                       dtype=np.int64).reshape(-1, 2)
        self._columns = self._load_columns()
        if check_videos:
            for key in self.video_keys:
                self._check_video(key)
        self.stats: dict[str, Stats] = self._load_stats()

    # ------------------------------------------------------------------ validation
    def _check_rows(self) -> None:
        where = self.root / "meta" / "episodes"
        start = 0
        for r in self._rows:
            if (r["dataset_from_index"], r["dataset_to_index"]) != (start, start + r["length"]):
                raise DatasetError(where, f"episode {r['episode_index']} spans [{r['dataset_from_index']}, "
                                          f"{r['dataset_to_index']}), expected [{start}, {start + r['length']})")
            start += r["length"]
        if start != self.num_frames:
            raise DatasetError(self.root / "meta" / "info.json",
                               f"total_frames {self.num_frames} but episodes hold {start} frames")

    def _files(self, prefix: str) -> list[tuple[tuple[int, int], list[dict]]]:
        """Episodes grouped by their file `(chunk, file)` under `prefix` ("data" or "videos/<key>")."""
        groups: dict[tuple[int, int], list[dict]] = {}
        for r in self._rows:
            groups.setdefault((r[f"{prefix}/chunk_index"], r[f"{prefix}/file_index"]), []).append(r)
        return list(groups.items())

    def _load_columns(self) -> dict[str, np.ndarray]:
        keys = [k for k, f in self.features.items() if not is_video(f)]
        parts: dict[str, list[np.ndarray]] = {k: [] for k in keys}
        files = self._files("data")
        for n, ((chunk, file), rows) in enumerate(files):
            path = self.root / self.info["data_path"].format(chunk_index=chunk, file_index=file)
            table = read_parquet(path, digest=self._digest(path))
            missing = [k for k in keys if k not in table.column_names]
            if missing:
                raise DatasetError(path, f"missing columns {missing} listed in info.json features")
            needed = sum(r["length"] for r in rows)
            if len(table) < needed or (len(table) > needed and n < len(files) - 1):
                raise DatasetError(path, f"has {len(table)} rows, episodes reference {needed}")
            table = table.slice(0, needed)
            for k in keys:
                parts[k].append(to_numpy_column(table.column(k), self.features[k], path, k))
        columns = {k: np.concatenate(v) if v else np.zeros((0,), np.float32) for k, v in parts.items()}
        for k in ("index", "episode_index"):
            expected = np.arange(self.num_frames) if k == "index" else \
                np.repeat(np.arange(self.num_episodes), [r["length"] for r in self._rows])
            if k in columns and not np.array_equal(columns[k], expected):
                raise DatasetError(self.root / "data", f"column {k!r} disagrees with the episodes metadata")
        for arr in columns.values():
            arr.flags.writeable = False
        return columns

    def _check_video(self, key: str) -> None:
        files = self._files(f"videos/{key}")
        height, width, _ = self.features[key]["shape"]
        for n, ((chunk, file), rows) in enumerate(files):
            path = self._video_path(key, chunk, file)
            if not path.is_file():
                raise DatasetError(path, f"missing video file for {key!r}")
            check_size(path, self._digest(path))
            for r in rows:
                span = round((r[f"videos/{key}/to_timestamp"] - r[f"videos/{key}/from_timestamp"]) * self.fps)
                if span != r["length"]:
                    raise DatasetError(path, f"episode {r['episode_index']} covers {span} frames of {key!r}, "
                                             f"its length is {r['length']}")
            n_frames, h, w = probe_video(path)
            needed = max(round(r[f"videos/{key}/to_timestamp"] * self.fps) for r in rows)
            if (h, w) != (height, width):
                raise DatasetError(path, f"video is {h}x{w} (HxW), info.json says {height}x{width}")
            if n_frames < needed or (n_frames > needed and n < len(files) - 1):
                raise DatasetError(path, f"video has {n_frames} frames, episodes reference {needed}")

    def _load_stats(self) -> dict[str, Stats]:
        path = self.root / STATS_PATH
        if path.is_file():
            payload = path.read_bytes()
            check_bytes(path, payload, self._digest(path))
            try:
                stats = stats_from_json(json.loads(payload.decode()))
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
                raise DatasetError(path, f"corrupt JSON ({exc})") from None
            counts = [int(s["count"].reshape(-1)[0]) for s in stats.values() if "count" in s]
            if counts and all(c == self.num_frames for c in counts):
                return stats
        if self.num_episodes == 0:
            return {}
        # stats.json missing or ahead of info.json (interrupted save): rebuild from episode stats.
        rows = read_episodes(self.root, self.num_episodes, with_stats=True, digests=self._digests)
        per_episode = [stats_of_row(r, self.features) for r in rows]
        return {k: aggregate_stats([s[k] for s in per_episode]) for k in per_episode[0]}

    def _digest(self, path: Path) -> dict | None:
        return self._digests.get(path.relative_to(self.root).as_posix())

    def _video_path(self, key: str, chunk: int, file: int) -> Path:
        if not self.info.get("video_path"):
            raise DatasetError(self.root / "meta" / "info.json", f"video feature {key!r} but video_path is null")
        return self.root / self.info["video_path"].format(video_key=key, chunk_index=chunk, file_index=file)

    # ------------------------------------------------------------------ access
    def _check_episode(self, i: int) -> dict:
        if not 0 <= i < self.num_episodes:
            raise IndexError(f"episode {i} out of range [0, {self.num_episodes})")
        return self._rows[i]

    def column(self, key: str) -> np.ndarray:
        """Whole non-video column `(num_frames, *shape)` (read-only; shape (1,) features come as (N,))."""
        if key not in self._columns:
            raise KeyError(f"no column {key!r}; non-video columns: {sorted(self._columns)}")
        return self._columns[key]

    def episode(self, i: int) -> dict[str, np.ndarray]:
        """Non-video columns of episode `i`, each `(T, *shape)` (shape (1,) features as (T,))."""
        self._check_episode(i)
        lo, hi = self.episode_ranges[i]
        return {k: v[lo:hi].copy() for k, v in self._columns.items()}

    def episode_task(self, i: int) -> str:
        """The task string of episode `i`."""
        return self._check_episode(i)["tasks"][0]

    def episode_frames(self, i: int, key: str) -> np.ndarray:
        """Decoded frames of camera `key` in episode `i`: uint8 `(T, H, W, 3)`."""
        row = self._check_episode(i)
        if key not in self.video_keys:
            raise KeyError(f"{key!r} is not a video feature; video features: {self.video_keys}")
        path = self._video_path(key, row[f"videos/{key}/chunk_index"], row[f"videos/{key}/file_index"])
        start = round(row[f"videos/{key}/from_timestamp"] * self.fps)
        if path not in self._verified_videos:  # hashed once per file and dataset object
            check_file(path, self._digest(path))
            self._verified_videos.add(path)
        return decode_range(path, start, row["length"], self.fps)

    def __repr__(self) -> str:
        return (f"LeRobotDataset({str(self.root)!r}, episodes={self.num_episodes}, frames={self.num_frames}, "
                f"fps={self.fps}, videos={self.video_keys})")
