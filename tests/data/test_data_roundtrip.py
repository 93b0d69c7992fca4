"""Write -> read round trips of LeRobotWriter / LeRobotDataset (state-only and video), append/resume."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from armflow.data import DatasetError, LeRobotDataset, LeRobotWriter
from armflow.data.synthetic import synthetic_features, synthetic_frame, synthetic_image, write_synthetic_dataset

IMG = (32, 48, 3)


def _check_episode(ds, e, length, image_shape=None):
    ep = ds.episode(e)
    for t in range(length):
        want = synthetic_frame(e, t, length, image_shape=None)
        np.testing.assert_array_equal(ep["observation.state"][t], want["observation.state"])
        np.testing.assert_array_equal(ep["action"][t], want["action"])
        assert ep["next.done"][t] == want["next.done"]
    np.testing.assert_array_equal(ep["frame_index"], np.arange(length))
    np.testing.assert_array_equal(ep["timestamp"], (np.arange(length) / ds.fps).astype(np.float32))
    assert np.all(ep["episode_index"] == e)
    if image_shape is not None:
        frames = ds.episode_frames(e, "observation.images.front")
        assert frames.shape == (length, *image_shape) and frames.dtype == np.uint8
        want = np.stack([synthetic_image(e, t, image_shape) for t in range(length)]).astype(int)
        err = np.abs(frames.astype(int) - want)
        assert err.mean() < 4.0 and np.percentile(err, 99) < 20, (err.mean(), err.max())


def test_state_only_round_trip(tmp_path):
    lengths = [5, 8, 3]
    write_synthetic_dataset(tmp_path / "ds", lengths)
    ds = LeRobotDataset(tmp_path / "ds")
    assert (ds.num_episodes, ds.num_frames, ds.fps, ds.robot_type) == (3, 16, 20, "synthetic")
    assert ds.tasks == ["lift the cube"] and ds.video_keys == []
    for e, n in enumerate(lengths):
        _check_episode(ds, e, n)
    np.testing.assert_array_equal(ds.column("index"), np.arange(16))
    pf = pq.ParquetFile(tmp_path / "ds/data/chunk-000/file-000.parquet")
    assert [pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)] == lengths
    state = ds.column("observation.state")
    np.testing.assert_allclose(ds.stats["observation.state"]["mean"], state.mean(0), rtol=1e-6)
    np.testing.assert_allclose(ds.stats["observation.state"]["std"], state.std(0), rtol=1e-5)
    np.testing.assert_array_equal(ds.stats["observation.state"]["min"], state.min(0))
    assert ds.stats["action"]["count"].tolist() == [16]


def test_video_round_trip(tmp_path):
    lengths = [6, 9, 7]
    write_synthetic_dataset(tmp_path / "ds", lengths, image_shape=IMG)
    ds = LeRobotDataset(tmp_path / "ds")
    assert ds.video_keys == ["observation.images.front"]
    for e, n in enumerate(lengths):
        _check_episode(ds, e, n, IMG)
    info = json.loads((tmp_path / "ds/meta/info.json").read_text())
    feat = info["features"]["observation.images.front"]
    assert feat["info"]["video.pix_fmt"] == "yuv420p" and feat["info"]["video.fps"] == 20
    img_stats = ds.stats["observation.images.front"]
    assert img_stats["mean"].shape == (3, 1, 1)
    assert np.all((img_stats["min"] >= 0) & (img_stats["max"] <= 1))
    want = np.concatenate([np.stack([synthetic_image(e, t, IMG) for t in range(n)]) for e, n in enumerate(lengths)])
    np.testing.assert_allclose(img_stats["mean"].ravel(), want.reshape(-1, 3).mean(0) / 255, atol=1e-9)


def test_video_timestamps_are_exact_and_keyframes_every_two(tmp_path):
    import av

    write_synthetic_dataset(tmp_path / "ds", [5, 4], image_shape=IMG)
    path = tmp_path / "ds/videos/observation.images.front/chunk-000/file-000.mp4"
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        packets = sorted((p.pts, p.is_keyframe) for p in c.demux(s) if p.pts is not None)
        time_base = s.time_base  # av >= 18.1.1 refuses stream attributes once the container is closed
    times = [pts * time_base for pts, _ in packets]
    assert times == [__import__("fractions").Fraction(k, 20) for k in range(9)]
    keys = [k for k, (_, key) in enumerate(packets) if key]
    assert set(keys) >= {0, 2, 4, 5, 7}  # every 2 frames within an episode, and at each episode start


def test_append_resume(tmp_path):
    root = tmp_path / "ds"
    write_synthetic_dataset(root, [4, 5], image_shape=IMG)
    write_synthetic_dataset(root, [6], image_shape=IMG, task="stack")
    ds = LeRobotDataset(root)
    assert ds.num_episodes == 3 and ds.tasks == ["lift the cube", "stack"]
    assert ds.episode_task(2) == "stack" and ds.episode(2)["task_index"].tolist() == [1] * 6
    for e, n in enumerate([4, 5, 6]):
        _check_episode(ds, e, n, IMG)
    assert ds.stats["observation.state"]["count"].tolist() == [15]


def test_append_with_other_features_is_refused(tmp_path):
    write_synthetic_dataset(tmp_path / "ds", [3])
    with pytest.raises(DatasetError, match="features differ"):
        LeRobotWriter(tmp_path / "ds", 20, synthetic_features(state_dim=4))
    with pytest.raises(DatasetError, match="fps"):
        LeRobotWriter(tmp_path / "ds", 30, synthetic_features())


@pytest.mark.parametrize("limits", [{"data_files_size_in_mb": 0.001, "video_files_size_in_mb": 0.001},
                                    {"max_frames_per_file": 5}])
def test_rolls_to_new_files_past_size_limit(tmp_path, limits):
    feats = synthetic_features(image_shape=IMG)
    with LeRobotWriter(tmp_path / "ds", 20, feats, **limits) as w:
        for e in range(3):
            for t in range(5):
                w.add_frame(synthetic_frame(e, t, 5, image_shape=IMG))
            w.save_episode("t")
    assert len(list((tmp_path / "ds/data/chunk-000").glob("*.parquet"))) == 3
    assert len(list((tmp_path / "ds/videos/observation.images.front/chunk-000").glob("*.mp4"))) == 3
    ds = LeRobotDataset(tmp_path / "ds")
    for e in range(3):
        _check_episode(ds, e, 5, IMG)


def test_add_frame_validation_names_key_expected_and_got(tmp_path):
    w = LeRobotWriter(tmp_path / "ds", 20, synthetic_features(image_shape=IMG))
    good = synthetic_frame(0, 0, 3, image_shape=IMG)
    with pytest.raises(ValueError, match=r"'observation.state' expected shape \(9,\), got \(8,\)"):
        w.add_frame({**good, "observation.state": np.zeros(8, np.float32)})
    with pytest.raises(ValueError, match=r"'observation.images.front' expected uint8 \(32, 48, 3\), got float32"):
        w.add_frame({**good, "observation.images.front": np.zeros(IMG, np.float32)})
    with pytest.raises(ValueError, match=r"'next.done' expected bool"):
        w.add_frame({**good, "next.done": 0.5})
    with pytest.raises(ValueError, match="missing \\['action'\\], unexpected \\['task'\\]"):
        w.add_frame({**{k: v for k, v in good.items() if k != "action"}, "task": "x"})
    with pytest.raises(ValueError, match="no frames"):
        w.save_episode("t")
    w.add_frame(good)
    w.clear_episode()
    w.finalize()
    assert LeRobotDataset(tmp_path / "ds").num_episodes == 0


def test_interrupted_save_leaves_orphans_that_readers_ignore_and_resume_drops(tmp_path):
    """A kill just before info.json of episode 2, as armflow saved before journaled commits (no hashes)."""
    root = tmp_path / "ds"
    write_synthetic_dataset(root, [4, 5], image_shape=IMG)
    info_before = json.loads((root / "meta/info.json").read_text())
    write_synthetic_dataset(root, [7], image_shape=IMG)  # its data/video/meta rows become orphans below
    info_before["data_files_size_in_mb"] = info_before["video_files_size_in_mb"] = 1e-6  # next save rolls
    info_before.pop("armflow_checksums")
    (root / "meta/info.json").write_text(json.dumps(info_before))
    ds = LeRobotDataset(root)
    assert ds.num_episodes == 2 and ds.stats["action"]["count"].tolist() == [9]  # stale stats.json rebuilt
    for e, n in enumerate([4, 5]):
        _check_episode(ds, e, n, IMG)
    write_synthetic_dataset(root, [3], image_shape=IMG)  # resume: truncates the orphans, then rolls
    ds = LeRobotDataset(root)
    assert ds.num_episodes == 3
    assert pq.ParquetFile(root / "data/chunk-000/file-000.parquet").metadata.num_rows == 9
    for e, n in enumerate([4, 5, 3]):
        _check_episode(ds, e, n, IMG)
