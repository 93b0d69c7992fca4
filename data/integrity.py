"""Content hashes of dataset files, kept in `meta/info.json` under `armflow_checksums`.

LeRobot readers ignore unknown info.json keys, and info.json is the commit point, so the
hashes always describe the committed files. Layout:
`{"total_episodes": E, "total_frames": F, "files": {rel_path: {"size": bytes, "sha256": hex}}}`.
The totals say which commit the hashes belong to: another tool that appends to the
dataset and keeps the key leaves them behind info.json's totals, and then nothing is
verified (with a warning) rather than every file reported corrupt. Datasets without the
key (LeRobot's own, or written before armflow hashed) open unverified.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

from armflow.data.errors import DatasetError

CHECKSUMS_KEY = "armflow_checksums"
_BLOCK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def file_entry(path: Path) -> dict:
    """`{"size", "sha256"}` of the file at `path`."""
    return {"size": path.stat().st_size, "sha256": sha256_file(path)}


def committed_digests(info: dict, root: Path) -> dict[str, dict]:
    """`{rel_path: {"size", "sha256"}}` for the committed files, or {} when absent or stale."""
    block = info.get(CHECKSUMS_KEY)
    if not block:
        return {}
    totals = (block.get("total_episodes"), block.get("total_frames"))
    if totals != (info["total_episodes"], info["total_frames"]) or not isinstance(block.get("files"), dict):
        warnings.warn(f"{root / 'meta/info.json'}: {CHECKSUMS_KEY} describe {totals[0]} episodes / {totals[1]} "
                      f"frames but the dataset has {info['total_episodes']} / {info['total_frames']} (another "
                      f"tool changed it): file contents are not verified", stacklevel=3)
        return {}
    return block["files"]


def check_bytes(path: Path, payload: bytes, entry: dict | None) -> None:
    """DatasetError naming `path` when `payload` differs from its recorded size or sha256."""
    if entry is None:
        return
    if len(payload) != entry["size"]:
        raise DatasetError(path, f"corrupt: {len(payload)} bytes, meta/info.json {CHECKSUMS_KEY} records "
                                 f"{entry['size']}")
    got = hashlib.sha256(payload).hexdigest()
    if got != entry["sha256"]:
        raise DatasetError(path, f"corrupt: sha256 {got[:16]}... differs from {entry['sha256'][:16]}... recorded "
                                 f"in meta/info.json {CHECKSUMS_KEY} (the file changed after it was written)")


def check_size(path: Path, entry: dict | None) -> None:
    """Cheap check on open (videos): the size matches; the hash is checked on first decode."""
    if entry is not None and path.is_file() and path.stat().st_size != entry["size"]:
        raise DatasetError(path, f"corrupt: {path.stat().st_size} bytes, meta/info.json {CHECKSUMS_KEY} "
                                 f"records {entry['size']}")


def check_file(path: Path, entry: dict | None) -> None:
    """Full sha256 check of a file on disk (streamed)."""
    if entry is None:
        return
    check_size(path, entry)
    got = sha256_file(path)
    if got != entry["sha256"]:
        raise DatasetError(path, f"corrupt: sha256 {got[:16]}... differs from {entry['sha256'][:16]}... recorded "
                                 f"in meta/info.json {CHECKSUMS_KEY} (the file changed after it was written)")
