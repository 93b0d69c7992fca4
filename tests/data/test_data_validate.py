"""The independent LeRobot v3 checker: accepts LeRobot's own datasets, rejects each broken variant."""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from armflow.data.synthetic import write_synthetic_dataset
from armflow.data.validate import validate_lerobot_v3

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "lerobot_v3"
FIXTURE_SKIP = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"no fixtures at {FIXTURES}")
DATA = "data/chunk-000/file-000.parquet"
EPISODES = "meta/episodes/chunk-000/file-000.parquet"
VIDEO = "videos/observation.images.front/chunk-000/file-000.mp4"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("v") / "ds", [5, 6, 4], image_shape=(16, 16, 3))


@pytest.fixture
def root(pristine, tmp_path):
    import shutil

    return Path(shutil.copytree(pristine, tmp_path / "ds"))


def _edit_info(root, **changes):
    info = json.loads((root / "meta/info.json").read_text())
    info.update(changes)
    (root / "meta/info.json").write_text(json.dumps(info))


def _rewrite(path, fn):
    table = fn(pq.read_table(path))
    pq.write_table(table, path)


def _set(table, name, values):
    i = table.schema.get_field_index(name)
    return table.set_column(i, name, pa.array(values, table.schema.field(name).type))


def _extra_rows(root):  # what an old-style kill left: the data file replaced before info.json
    _rewrite(root / DATA, lambda t: pa.concat_tables([t, t.slice(len(t) - 4)]))


def _extra_episode_row(root):
    _rewrite(root / EPISODES, lambda t: pa.concat_tables([t, t.slice(len(t) - 1)]))


def _gap(root):
    _rewrite(root / EPISODES, lambda t: _set(t, "dataset_from_index",
                                             [0, 6, 11]))


def _episode_index_gap(root):
    _rewrite(root / EPISODES, lambda t: _set(t, "episode_index", [0, 1, 3]))


def _timestamps(root):
    _rewrite(root / DATA, lambda t: _set(t, "timestamp", pc.multiply(t.column("timestamp"), 2).to_pylist()))


def _data_file_ref(root):
    _rewrite(root / EPISODES, lambda t: _set(t, "data/file_index", [0, 0, 7]))


def _task_index(root):
    _rewrite(root / DATA, lambda t: _set(t, "task_index", [5] * len(t)))


def _stats_shape(root):
    stats = json.loads((root / "meta/stats.json").read_text())
    stats["action"]["mean"] = stats["action"]["mean"][:3]
    (root / "meta/stats.json").write_text(json.dumps(stats))


def _video_span(root):
    _rewrite(root / EPISODES, lambda t: _set(t, "videos/observation.images.front/to_timestamp",
                                             [0.25, 0.55, 0.9]))


BROKEN = {
    "extra data rows": (_extra_rows, "19 frames in data files, info says 15"),
    "extra episode row": (_extra_episode_row, "4 episode rows, info says 3"),
    "range gap": (_gap, "episode 1 spans [6, 11) with length 6, expected [5, 11)"),
    "episode index gap": (_episode_index_gap, "episode_index not contiguous"),
    "timestamps": (_timestamps, "timestamp differs from frame_index / fps"),
    "missing data file": (_data_file_ref, "episode 2 names data/chunk-000/file-007.parquet, which does not exist"),
    "task index": (_task_index, "task_index 5 outside"),
    "stats shape": (_stats_shape, "action.mean has shape (3,), expected (7,)"),
    "video span": (_video_span, "episode 2 covers 7.000 frames of 'observation.images.front', its length is 4"),
    "missing video": (lambda r: (r / VIDEO).unlink(), f"{VIDEO}: missing video file"),
    "short video": (lambda r: (r / VIDEO).write_bytes((r / VIDEO).read_bytes()[:300]), f"{VIDEO}: "),
    "codebase version": (lambda r: _edit_info(r, codebase_version="v2.1"), "codebase_version 'v2.1'"),
    "splits": (lambda r: _edit_info(r, splits={"train": "0:2"}), "splits.train '0:2'"),
    "total tasks": (lambda r: _edit_info(r, total_tasks=2), "1 tasks, info says 2"),
    "no tasks file": (lambda r: (r / "meta/tasks.parquet").unlink(), "meta/tasks.parquet: missing"),
    "no info": (lambda r: (r / "meta/info.json").unlink(), "meta/info.json: missing"),
    "video_path null": (lambda r: _edit_info(r, video_path=None), "video features but video_path is null"),
}


@FIXTURE_SKIP
@pytest.mark.parametrize("name", ["state_only", "with_video"])
def test_lerobot_written_fixtures_are_valid(name):
    assert validate_lerobot_v3(FIXTURES / name) == []


def test_armflow_written_dataset_is_valid(pristine):
    assert validate_lerobot_v3(pristine) == []


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_dataset_is_rejected(root, case):
    mutate, expected = BROKEN[case]
    mutate(root)
    problems = validate_lerobot_v3(root)
    assert any(expected in p for p in problems), problems
