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
    win = WindowDataset(ds, n_obs_steps=2, horizon=3, cache_mb=0.001)
    item = win[4]  # episode 1, t=0
    img = item["observation.images.front"]
    assert img.shape == (2, 3, 16, 24) and img.dtype == torch.float32
    assert 0.0 <= img.min() and img.max() <= 1.0
    want = torch.from_numpy(synthetic_image(1, 0, shape)).permute(2, 0, 1).float() / 255
    assert torch.allclose(img[0], img[1]) and (img[1] - want).abs().mean() < 0.02
    item = win[2]  # episode 0, t=2
    want = torch.from_numpy(synthetic_image(0, 1, shape)).permute(2, 0, 1).float() / 255
    assert (item["observation.images.front"][0] - want).abs().mean() < 0.02
    assert len(win._cache) == 1  # the tiny cache budget keeps one decoded episode
    no_images = WindowDataset(ds, 2, 3, image_keys=[])
    assert "observation.images.front" not in no_images[0]
    state_only = WindowDataset(ds, 2, 3, keys=["observation.state"])
    assert list(state_only[0]) == ["observation.state", "action", "action_is_pad"]
    with pytest.raises(KeyError, match="'observation.nope' not in the dataset"):
        WindowDataset(ds, 2, 3, keys=["observation.nope"])
