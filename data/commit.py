"""Journaled multi-file commits: what a save leaves on disk is valid for any LeRobot v3 reader.

LeRobot's own reader globs `data/*/*.parquet`, `meta/episodes/*/*.parquet` and the videos,
so a file replaced before `meta/info.json` makes the dataset invalid for it (rows past
`total_frames`). A save therefore writes every changed file complete under
`.tmp/commit/<same relative path>` (hidden from those globs), then the journal
`.tmp/commit/journal.json` listing them, then renames them into place with info.json last
and deletes the journal. The only inconsistent window left is that rename burst (a few
`os.replace` calls, tens of microseconds); a kill inside it leaves the journal, and the
next armflow open or append rolls the save forward (`recover`), with a warning naming
the files. Staged files without a journal are a save that had not reached its commit:
the next writer discards them (rolled back), readers ignore them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import warnings
from pathlib import Path

from armflow.data.errors import DatasetError

COMMIT_DIR = ".tmp/commit"
JOURNAL = "journal.json"


def fsync_dir(path: Path) -> None:
    """Persist renames in `path` (a power cut otherwise may forget them; a SIGKILL cannot)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_HOOK_HITS: dict[str, int] = {}  # test hook only: how often each stage was reached in this process


def kill_hook(stage: str) -> None:
    """Test hook: `ARMFLOW_TEST_KILL_AT=<stage>[:<n>]` SIGKILLs this process the n-th time (default 1st)
    it reaches `stage`, for kill-at-random tests of a real `armflow collect`.

    Stages: "staged" (every file of a save staged, no journal yet) and "renaming" (journal
    written, half of the renames done: the window this module's recovery exists for).
    """
    name, _, nth = os.environ.get("ARMFLOW_TEST_KILL_AT", "").partition(":")
    if name != stage:
        return
    _HOOK_HITS[stage] = _HOOK_HITS.get(stage, 0) + 1
    if _HOOK_HITS[stage] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)


class Commit:
    """One save's files, staged under `root/.tmp/commit` and renamed into place by `apply`."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.dir = self.root / COMMIT_DIR
        shutil.rmtree(self.dir, ignore_errors=True)  # a save that never reached its journal
        self.dir.mkdir(parents=True)
        self.files: list[str] = []

    def stage(self, rel: str) -> Path:
        """Path to write the new content of `root/rel` to (parents created); the order of calls is kept."""
        if rel in self.files:
            raise ValueError(f"Commit.stage: {rel!r} staged twice")
        self.files.append(rel)
        path = self.dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def apply(self, last: str) -> None:
        """Write the journal, then rename every staged file into place, `last` (info.json) last."""
        if last not in self.files:
            raise ValueError(f"Commit.apply: commit point {last!r} was not staged")
        order = [f for f in self.files if f != last] + [last]
        tmp = self.dir / (JOURNAL + ".tmp")
        with open(tmp, "w") as f:
            json.dump({"files": order}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.dir / JOURNAL)  # the commit point: from here the save rolls forward
        _roll_forward(self.root, order, hook=True)


def _roll_forward(root: Path, order: list[str], hook: bool = False) -> list[str]:
    """Rename the staged files still present into place; returns those moved by this call."""
    stage = root / COMMIT_DIR
    moved = []
    for folder in {(root / rel).parent for rel in order}:  # before the burst: it holds renames only
        folder.mkdir(parents=True, exist_ok=True)
    for i, rel in enumerate(order):
        if hook and i == len(order) // 2:
            kill_hook("renaming")
        src, dst = stage / rel, root / rel
        try:
            os.replace(src, dst)
        except FileNotFoundError:
            continue  # already moved (by us before a kill, or by a concurrent reader's recovery)
        moved.append(rel)
    for folder in {(root / rel).parent for rel in moved}:
        fsync_dir(folder)
    try:
        (stage / JOURNAL).unlink()
    except FileNotFoundError:
        pass
    return moved


def recover(root: str | os.PathLike) -> list[str]:
    """Finish a save that a kill interrupted after its journal; returns the files it moved.

    Warns naming them, so the reader knows the dataset was rolled forward on this open.
    """
    root = Path(root)
    journal = root / COMMIT_DIR / JOURNAL
    if not journal.is_file():
        return []
    try:
        order = json.loads(journal.read_text())["files"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise DatasetError(journal, f"corrupt commit journal ({exc}); it is written complete before "
                                    f"any rename, so this file was damaged after the save") from None
    try:
        moved = _roll_forward(root, order)
    except OSError as exc:
        raise DatasetError(journal, f"an interrupted save must be rolled forward but cannot be "
                                    f"({exc}); open the dataset once with write access") from None
    if moved:
        warnings.warn(f"{root}: rolled forward a save interrupted mid-commit (renamed into place: "
                      f"{', '.join(moved)})", stacklevel=3)
    return moved


def discard_uncommitted(root: str | os.PathLike) -> list[str]:
    """Delete staged files of a save that never reached its journal (writer only); returns them."""
    stage = Path(root) / COMMIT_DIR
    if (stage / JOURNAL).is_file():
        raise DatasetError(stage / JOURNAL, "discard_uncommitted called before recover")
    dropped = sorted(p.relative_to(stage).as_posix() for p in stage.rglob("*") if p.is_file()) \
        if stage.is_dir() else []
    shutil.rmtree(stage, ignore_errors=True)
    if dropped:
        warnings.warn(f"{root}: rolled back a save killed before its commit (discarded staged: "
                      f"{', '.join(dropped)})", stacklevel=3)
    return dropped
