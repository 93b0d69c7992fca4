"""Read LeRobot 0.4.4's own datasets and compare what armflow writes against them, structurally."""

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from armflow.data import LeRobotDataset, LeRobotWriter

FIXTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "lerobot_v3"
pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"no fixtures at {FIXTURES}")


@pytest.mark.parametrize("name", ["state_only", "with_video"])
def test_reads_lerobot_fixture(name):
    ds = LeRobotDataset(FIXTURES / name)
    assert (ds.num_episodes, ds.num_frames, ds.fps, ds.robot_type) == (3, 33, 20, "panda")
    assert ds.tasks == ["lift the cube"]
    for e, n in enumerate([10, 11, 12]):
        ep = ds.episode(e)
        assert ep["observation.state"].shape == (n, 9) and ep["action"].shape == (n, 7)
        assert ep["next.reward"].shape == (n,)
        np.testing.assert_array_equal(ep["frame_index"], np.arange(n))
    assert ds.stats["action"]["mean"].shape == (7,)
    if name == "with_video":
        assert ds.stats["observation.images.front"]["mean"].shape == (3, 1, 1)
        frames = [ds.episode_frames(e, "observation.images.front") for e in range(3)]
        assert [f.shape for f in frames] == [(n, 48, 64, 3) for n in (10, 11, 12)]
        # The fixture's frames are uniform noise in [0, 255]: decoded means sit near 127.
        assert all(100 < f.mean() < 155 for f in frames)


def _write_like_fixture(root, with_video):
    features = {
        "observation.state": {"dtype": "float32", "shape": (9,), "names": None},
        "action": {"dtype": "float32", "shape": (7,), "names": None},
        "next.reward": {"dtype": "float32", "shape": (1,), "names": None},
    }
    if with_video:
        features["observation.images.front"] = {"dtype": "video", "shape": (48, 64, 3),
                                                "names": ["height", "width", "channels"]}
    rng = np.random.default_rng(0)
    with LeRobotWriter(root, 20, features, robot_type="panda") as w:
        for ep in range(3):
            for _ in range(10 + ep):
                frame = {"observation.state": rng.standard_normal(9).astype(np.float32),
                         "action": rng.standard_normal(7).astype(np.float32), "next.reward": np.float32(0)}
                if with_video:
                    frame["observation.images.front"] = (rng.random((48, 64, 3)) * 255).astype(np.uint8)
                w.add_frame(frame)
            w.save_episode("lift the cube")


def _schema(path):
    return [(f.name, str(f.type)) for f in pq.read_schema(path)]


@pytest.mark.parametrize("name", ["state_only", "with_video"])
def test_written_dataset_matches_fixture_structure(tmp_path, name):
    ref, ours = FIXTURES / name, tmp_path / name
    _write_like_fixture(ours, name == "with_video")
    ref_files = sorted(str(p.relative_to(ref)) for p in ref.rglob("*") if p.is_file())
    our_files = sorted(str(p.relative_to(ours)) for p in ours.rglob("*") if p.is_file())
    assert our_files == ref_files
    ref_info, our_info = (json.loads((d / "meta/info.json").read_text()) for d in (ref, ours))
    assert list(our_info) == list(ref_info) + ["armflow_checksums"]  # the one extra key (content hashes)
    assert our_info["features"] == ref_info["features"] or name == "with_video"
    for key, feat in ref_info["features"].items():
        ours_feat = our_info["features"][key]
        assert {k: v for k, v in ours_feat.items() if k != "info"} == {k: v for k, v in feat.items() if k != "info"}
        assert set(ours_feat.get("info", {})) == set(feat.get("info", {}))
    for k in ("codebase_version", "total_episodes", "total_frames", "total_tasks", "chunks_size", "fps",
              "splits", "data_path", "video_path", "robot_type"):
        assert our_info[k] == ref_info[k], k
    for rel in ("data/chunk-000/file-000.parquet", "meta/episodes/chunk-000/file-000.parquet", "meta/tasks.parquet"):
        assert _schema(ours / rel) == _schema(ref / rel), rel
    data_meta = [pq.read_schema(d / "data/chunk-000/file-000.parquet").metadata[b"huggingface"] for d in (ref, ours)]
    assert json.loads(data_meta[1])["info"] == json.loads(data_meta[0])["info"]
    ref_stats, our_stats = (json.loads((d / "meta/stats.json").read_text()) for d in (ref, ours))
    assert set(our_stats) == set(ref_stats)
    for key in ref_stats:
        assert list(our_stats[key]) == list(ref_stats[key])
        for stat in ref_stats[key]:
            assert np.shape(our_stats[key][stat]) == np.shape(ref_stats[key][stat]), (key, stat)
    ref_eps = pq.read_table(ref / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    our_eps = pq.read_table(ours / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    for r, o in zip(ref_eps, our_eps):
        same = [k for k in r if not k.startswith("stats/")]
        assert {k: o[k] for k in same} == {k: r[k] for k in same}


def test_append_to_lerobot_written_dataset(tmp_path):
    import shutil

    root = tmp_path / "ds"
    shutil.copytree(FIXTURES / "with_video", root)
    before = [LeRobotDataset(root).episode_frames(e, "observation.images.front") for e in range(3)]
    info = json.loads((root / "meta/info.json").read_text())
    defaults = ("timestamp", "frame_index", "episode_index", "index", "task_index")
    features = {k: v for k, v in info["features"].items() if k not in defaults}
    y, x = np.mgrid[0:48, 0:64]
    images = [np.stack([x * 3 + t, y * 4, np.full_like(x, 90)], -1).astype(np.uint8) for t in range(9)]
    with LeRobotWriter(root, 20, features) as w:
        for img in images:
            w.add_frame({"observation.state": np.zeros(9, np.float32), "action": np.ones(7, np.float32),
                         "next.reward": np.float32(1), "observation.images.front": img})
        assert w.save_episode("push") == 3
    ds = LeRobotDataset(root)
    assert (ds.num_episodes, ds.num_frames, ds.tasks) == (4, 42, ["lift the cube", "push"])
    for e in range(3):  # LeRobot's own episodes are untouched by the remux
        np.testing.assert_array_equal(ds.episode_frames(e, "observation.images.front"), before[e])
    err = np.abs(ds.episode_frames(3, "observation.images.front").astype(int) - np.stack(images).astype(int))
    assert err.mean() < 4
    assert ds.stats["action"]["count"].tolist() == [42]
