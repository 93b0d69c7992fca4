"""pad_window and WindowDataset windows on hand-built episodes."""

import numpy as np
import pytest
import torch

from armflow.data import LeRobotDataset, LeRobotWriter, WindowDataset, pad_window
from armflow.data.synthetic import synthetic_image, write_synthetic_dataset

torch.set_num_threads(1)


def test_pad_window_inside_and_both_edges():
    values = np.arange(5)[:, None] * 10  # (5, 1)
    win, pad = pad_window(values, 1, 3)
    assert win[:, 0].tolist() == [10, 20, 30] and not pad.any()
    win, pad = pad_window(values, -2, 4)
    assert win[:, 0].tolist() == [0, 0, 0, 10] and pad.tolist() == [True, True, False, False]
    win, pad = pad_window(values, 3, 4)
    assert win[:, 0].tolist() == [30, 40, 40, 40] and pad.tolist() == [False, False, True, True]
    win, pad = pad_window(values[:1], -3, 7)
    assert win[:, 0].tolist() == [0] * 7 and pad.sum() == 6


def test_pad_window_rejects_empty():
    with pytest.raises(ValueError, match="empty"):
        pad_window(np.zeros((0, 2)), 0, 2)


def _hand_built(root):
    """Two episodes: state = [100 e + t], action = [-(100 e + t), 1]."""
    feats = {"observation.state": {"dtype": "float32", "shape": (1,), "names": None},
             "action": {"dtype": "float32", "shape": (2,), "names": None}}
    with LeRobotWriter(root, 10, feats) as w:
        for e, n in enumerate([3, 5]):
            for t in range(n):
                w.add_frame({"observation.state": np.float32(100 * e + t),
                             "action": np.array([-(100 * e + t), 1], np.float32)})
            w.save_episode("t")
    return LeRobotDataset(root)


def test_windows_end_and_start_at_current_frame_and_stay_in_episode(tmp_path):
    ds = WindowDataset(_hand_built(tmp_path / "ds"), n_obs_steps=2, horizon=4)
    assert len(ds) == 8
    item = ds[0]  # episode 0, t=0
    assert item["observation.state"].shape == (2, 1) and item["observation.state"].dtype == torch.float32
    assert item["observation.state"][:, 0].tolist() == [0, 0]
    assert item["action"][:, 0].tolist() == [0, -1, -2, -2]
    assert item["action_is_pad"].tolist() == [False, False, False, True]
    item = ds[3]  # episode 1, t=0: never sees episode 0
    assert item["observation.state"][:, 0].tolist() == [100, 100]
    assert item["action"][:, 0].tolist() == [-100, -101, -102, -103]
    assert not item["action_is_pad"].any()
    item = ds[6]  # episode 1, t=3
    assert item["observation.state"][:, 0].tolist() == [102, 103]
    assert item["action"][:, 0].tolist() == [-103, -104, -104, -104]
    assert item["action_is_pad"].tolist() == [False, False, True, True]
    assert item["action"].shape == (4, 2)


def test_windows_batch_through_dataloader(tmp_path):
    ds = WindowDataset(_hand_built(tmp_path / "ds"), n_obs_steps=3, horizon=2)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=8)))
    assert batch["observation.state"].shape == (8, 3, 1) and batch["action"].shape == (8, 2, 2)
    assert batch["action_is_pad"].dtype == torch.bool


def test_image_windows(tmp_path):
    shape = (16, 24, 3)
    ds = LeRobotDataset(write_synthetic_dataset(tmp_path / "ds", [4, 3], image_shape=shape))
    win = WindowDataset(ds, n_obs_steps=2, horizon=3)
    item = win[4]  # episode 1, t=0
    img = item["observation.images.front"]
    assert img.shape == (2, 3, 16, 24) and img.dtype == torch.float32
    assert 0.0 <= img.min() and img.max() <= 1.0
    want = torch.from_numpy(synthetic_image(1, 0, shape)).permute(2, 0, 1).float() / 255
    assert torch.allclose(img[0], img[1]) and (img[1] - want).abs().mean() < 0.02
    item = win[2]  # episode 0, t=2
    want = torch.from_numpy(synthetic_image(0, 1, shape)).permute(2, 0, 1).float() / 255
    assert (item["observation.images.front"][0] - want).abs().mean() < 0.02
    no_images = WindowDataset(ds, 2, 3, image_keys=[])
    assert "observation.images.front" not in no_images[0]
    state_only = WindowDataset(ds, 2, 3, keys=["observation.state"])
    assert list(state_only[0]) == ["observation.state", "action", "action_is_pad"]
    with pytest.raises(KeyError, match="'observation.nope' not in the dataset"):
        WindowDataset(ds, 2, 3, keys=["observation.nope"])


def _video_dataset(tmp_path, lengths=(4, 3, 5), shape=(16, 24, 3)):
    return LeRobotDataset(write_synthetic_dataset(tmp_path / "ds", list(lengths), image_shape=shape))


def test_frames_are_decoded_once_when_built_never_per_item(tmp_path):
    ds = _video_dataset(tmp_path)
    calls = []
    decode = ds.episode_frames
    ds.episode_frames = lambda i, key: calls.append(i) or decode(i, key)
    win = WindowDataset(ds, n_obs_steps=2, horizon=3)
    assert sorted(calls) == [0, 1, 2]  # each episode once
    items = [win[i] for i in range(len(win))] + [win[i] for i in range(len(win))]
    assert sorted(calls) == [0, 1, 2] and len(items) == 2 * ds.num_frames
    want = torch.from_numpy(synthetic_image(2, 4, (16, 24, 3))).permute(2, 0, 1).float() / 255
    assert (win[ds.num_frames - 1]["observation.images.front"][-1] - want).abs().mean() < 0.02


def test_uint8_items_are_the_float_items_times_255(tmp_path):
    ds = _video_dataset(tmp_path)
    as_float, as_u8 = WindowDataset(ds, 2, 3), WindowDataset(ds, 2, 3, uint8_images=True)
    for i in (0, 5, len(as_float) - 1):
        u8 = as_u8[i]["observation.images.front"]
        assert u8.dtype == torch.uint8 and u8.shape == (2, 3, 16, 24)
        assert torch.equal(u8.float() / 255.0, as_float[i]["observation.images.front"])
        assert torch.equal(as_u8[i]["action"], as_float[i]["action"])


def test_frames_over_the_budget_fail_before_decoding_and_name_what_to_do(tmp_path):
    from armflow.data.window import FramesBudgetError

    ds = _video_dataset(tmp_path)
    ds.episode_frames = lambda i, key: pytest.fail("decoded although the frames cannot fit")
    needed = ds.num_frames * 16 * 24 * 3 / 2 ** 20
    with pytest.raises(FramesBudgetError) as err:
        WindowDataset(ds, 2, 3, cache_mb=needed / 2)
    msg = str(err.value)
    assert str(ds.root) in msg and f"{needed:.0f} MiB" in msg and f"cache_mb={needed / 2:g}" in msg
    assert "raise cache_mb" in msg and "fewer cameras" in msg
    assert len(WindowDataset(ds, 2, 3, image_keys=[], cache_mb=0.0)) == ds.num_frames  # no cameras: no budget


def test_dataloader_workers_give_the_single_process_batches(tmp_path):
    from armflow.workflows.train import infinite_batches, resolve_num_workers

    win = WindowDataset(_video_dataset(tmp_path, lengths=(6, 5, 7)), 2, 3, uint8_images=True)
    single, workers = infinite_batches(win, 4, seed=3, num_workers=0), infinite_batches(win, 4, seed=3, num_workers=2)
    for _ in range(6):  # more than one epoch (18 windows, 4 batches per epoch)
        a, b = next(single), next(workers)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resolve_num_workers(3, 1) == 3 and 0 <= resolve_num_workers("auto", 1) <= 4
