"""Dataset errors: every problem with files on disk names the file first."""

from __future__ import annotations

import os


class DatasetError(Exception):
    """A dataset file is missing, corrupt or disagrees with `meta/info.json`.

    `path` is the offending file (or dataset root); the message says what is wrong.
    """

    def __init__(self, path: str | os.PathLike, message: str):
        self.path = str(path)
        self.message = message
        super().__init__(f"{self.path}: {message}")
