"""On-disk cache of reward answers: one small JSON file per key, written atomically.

Keys are hex digests (see ``vlm_openai.cache_key``), so a file name is safe and a rerun over the same
frames, prompt and model reads every answer back without a request. Only valid answers are stored:
a transient failure must be retried next time, not remembered.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


class DiskCache:
    """``get(key) -> dict | None`` and ``put(key, dict)`` under ``root/<key[:2]>/<key>.json``.

    Safe across threads and processes: a write goes to a temp file renamed into place, so a reader sees
    the whole old file, the whole new one or none. A corrupt file (disk full, manual edit) is a miss.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser()
        self.root.mkdir(parents=True, exist_ok=True)
        self.hits = 0
        self.misses = 0

    def _path(self, key: str) -> Path:
        if not key or not all(c in "0123456789abcdef" for c in key):
            raise ValueError(f"cache key {key!r}: expected a lowercase hex digest")
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        try:
            entry = json.loads(self._path(key).read_text())
        except (OSError, ValueError):
            self.misses += 1
            return None
        self.hits += 1
        return entry

    def put(self, key: str, entry: dict[str, Any]) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(entry, f)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def __len__(self) -> int:
        return sum(1 for _ in self.root.glob("??/*.json"))
