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


# ---------------------------------------------------------------- silent corruption (issue 10)
def _garble(path, offset, n=64, seed=0):
    payload = bytearray(path.read_bytes())
    payload[offset:offset + n] = np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(payload))


@pytest.fixture
def big(tmp_path):
    return write_synthetic_dataset(tmp_path / "big", [200, 200], image_shape=(16, 16, 3))


def _garble_state_page(root):
    """64 garbage bytes inside observation.state's pages, placed where plain pyarrow (no CRC
    check) reads the file without complaint and returns changed values: the audit's silent case."""
    path = root / DATA
    clean_bytes = path.read_bytes()
    clean = pq.read_table(path).column("observation.state").to_pylist()
    chunk = pq.ParquetFile(path).metadata.row_group(0).column(0)
    start = chunk.dictionary_page_offset or chunk.data_page_offset  # the dictionary holds the values
    for offset in range(start + 24, start + chunk.total_compressed_size - 64, 8):
        path.write_bytes(clean_bytes)
        _garble(path, offset)
        try:
            if pq.read_table(path).column("observation.state").to_pylist() != clean:
                return
        except (pa.ArrowException, OSError):
            continue
    pytest.fail("no offset gives a silent corruption")


def test_garbage_bytes_in_a_data_page_are_caught_by_the_recorded_hash(big):
    _garble_state_page(big)
    _raises(big, DATA, "corrupt: sha256 .* differs from .* recorded in meta/info.json armflow_checksums")


def test_garbage_bytes_without_hashes_are_caught_by_page_checksums(big):
    _drop_checksums(big)  # e.g. the hashes were stripped by another tool: the page CRCs still hold
    _garble_state_page(big)
    _raises(big, DATA, "corrupt or truncated parquet .*CRC")


def test_append_refuses_to_carry_corrupted_rows_into_a_new_hash(big):
    from armflow.data import LeRobotWriter
    from armflow.data.synthetic import synthetic_features, synthetic_frame

    _garble_state_page(big)
    with pytest.raises(DatasetError, match="sha256") as info:
        with LeRobotWriter(big, 20, synthetic_features(image_shape=(16, 16, 3))) as writer:
            for t in range(5):
                writer.add_frame(synthetic_frame(2, t, 5, image_shape=(16, 16, 3)))
            writer.save_episode("lift the cube")
    assert info.value.path.endswith(DATA)
    assert json.loads((big / "meta/info.json").read_text())["total_episodes"] == 2  # nothing committed


@pytest.mark.parametrize("rel", ["meta/episodes/chunk-000/file-000.parquet", "meta/tasks.parquet", "meta/stats.json"])
def test_metadata_files_are_verified(big, rel):
    path = big / rel
    payload = bytearray(path.read_bytes())
    payload[len(payload) // 2] ^= 0x01  # one flipped bit
    path.write_bytes(bytes(payload))
    _raises(big, rel, "corrupt")


def test_video_corruption_is_caught_on_first_decode(big):
    ds_ok = LeRobotDataset(big)
    _garble(big / VIDEO, (big / VIDEO).stat().st_size // 2)  # same size: open stays cheap and passes
    ds = LeRobotDataset(big)
    with pytest.raises(DatasetError, match="sha256") as info:
        ds.episode_frames(1, "observation.images.front")
    assert info.value.path.endswith(VIDEO)
    assert ds_ok.num_episodes == 2


def test_datasets_without_hashes_still_open(big):
    _drop_checksums(big)
    assert LeRobotDataset(big).num_frames == 400


def test_hashes_left_behind_by_another_tool_warn_and_are_skipped(big):
    info = json.loads((big / "meta/info.json").read_text())
    info["armflow_checksums"]["total_frames"] = 123  # as if another writer appended and kept the key
    (big / "meta/info.json").write_text(json.dumps(info))
    with pytest.warns(UserWarning, match="not verified"):
        assert LeRobotDataset(big).num_episodes == 2
