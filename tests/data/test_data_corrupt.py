"""Corrupt or mismatched files raise DatasetError naming the file and the problem."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from armflow.data import DatasetError, LeRobotDataset
from armflow.data.synthetic import write_synthetic_dataset

DATA = "data/chunk-000/file-000.parquet"
VIDEO = "videos/observation.images.front/chunk-000/file-000.mp4"


@pytest.fixture
def root(tmp_path):
    return write_synthetic_dataset(tmp_path / "ds", [5, 6], image_shape=(16, 16, 3))


def _drop_checksums(root):
    """A dataset as written before armflow recorded hashes: the deeper checks must still hold."""
    info = json.loads((root / "meta/info.json").read_text())
    info.pop("armflow_checksums")
    (root / "meta/info.json").write_text(json.dumps(info))


def _raises(root, file_part, message):
    with pytest.raises(DatasetError, match=message) as info:
        LeRobotDataset(root)
    assert info.value.path.endswith(file_part) and str(info.value).startswith(info.value.path)
    assert info.value.__cause__ is None or info.value.__suppress_context__


def test_missing_info(tmp_path):
    _raises(tmp_path, "meta/info.json", "missing")


def test_garbage_info(root):
    (root / "meta/info.json").write_text("{not json")
    _raises(root, "meta/info.json", "corrupt JSON")


def test_wrong_codebase_version(root):
    info = json.loads((root / "meta/info.json").read_text())
    (root / "meta/info.json").write_text(json.dumps({**info, "codebase_version": "v2.1"}))
    _raises(root, "meta/info.json", "codebase_version 'v2.1' unsupported")


def test_missing_parquet(root):
    (root / DATA).unlink()
    _raises(root, DATA, "missing parquet")


@pytest.mark.parametrize("hashed", [True, False])
def test_truncated_parquet(root, hashed):
    if not hashed:
        _drop_checksums(root)
    payload = (root / DATA).read_bytes()
    (root / DATA).write_bytes(payload[: len(payload) // 2])
    _raises(root, DATA, "corrupt: 3658 bytes, meta/info.json armflow_checksums records 7316" if hashed
            else "corrupt or truncated parquet")


def test_column_shape_disagrees_with_info(root):
    info = json.loads((root / "meta/info.json").read_text())
    info["features"]["observation.state"]["shape"] = [4]
    (root / "meta/info.json").write_text(json.dumps(info))
    _raises(root, DATA, r"column 'observation.state' is fixed_size_list<\w+: float>\[9\].*shape \[4\]")


def test_column_dtype_disagrees_with_info(root):
    table = pq.read_table(root / DATA)
    i = table.schema.get_field_index("action")
    table = table.set_column(i, "action", pa.array(table.column("action").to_pylist(), pa.list_(pa.float64(), 7)))
    pq.write_table(table, root / DATA)
    _drop_checksums(root)
    _raises(root, DATA, "column 'action' is fixed_size_list<\w+: double>")


def test_video_frame_count_disagrees(root):
    from armflow.data.video import EpisodeEncoder

    enc = EpisodeEncoder(root / VIDEO, "mpeg4", 20, 16, 16)
    for _ in range(7):
        enc.add(np.zeros((16, 16, 3), np.uint8))
    enc.close()
    _drop_checksums(root)
    _raises(root, VIDEO, "video has 7 frames, episodes reference 11")


def test_truncated_video(root):
    payload = (root / VIDEO).read_bytes()
    (root / VIDEO).write_bytes(payload[: len(payload) // 3])
    _raises(root, VIDEO, "video")


def test_missing_video(root):
    (root / VIDEO).unlink()
    _raises(root, VIDEO, "missing video")
