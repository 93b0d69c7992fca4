"""RewardModel -> batched RL reward: queries from next_obs, hold/skip of invalids, noise statistics, relabel."""
import json
import math

import numpy as np
import pytest

from armflow.data import LeRobotDataset
from armflow.data.synthetic import write_synthetic_dataset
from armflow.rewards.compose import Debounce
from armflow.rewards.fake import FunctionReward
from armflow.rewards.relabel import relabel_dataset
from armflow.rewards.rl import DetectorNoise, NoisyReward, RewardModelFn


def _next_obs(values, t_o=2, size=8):
    """Images whose last frame's pixel (0, 0, 0) is round(255 * value); state z = value."""
    n = len(values)
    images = np.zeros((n, t_o, size, size, 3), np.uint8)
    images[:, -1, 0, 0, 0] = np.round(255 * np.asarray(values))
    images[:, 0, 0, 0, 0] = 255  # the older frame says "success": reading it would be a bug
    state = np.zeros((n, t_o, 3), np.float32)
    state[:, -1, 2] = values
    return {"observation.images.front": images, "observation.state": state}


def _pixel(q):
    assert q.frames["front"].shape == (1, 8, 8, 3)
    return q.frames["front"][-1, 0, 0, 0] / 255.0


def test_reads_the_last_frame_and_state_of_each_env():
    seen = []
    model = FunctionReward(lambda q: seen.append((q.key, float(q.state[2]))) or _pixel(q))
    fn = RewardModelFn(model, ["front"], instruction="lift")
    info = {}
    reward = fn(None, np.zeros((3, 4, 7)), _next_obs([0.0, 0.6, 1.0]), info)
    assert reward.dtype == np.float64 and reward.shape == (3,)
    np.testing.assert_allclose(reward, [0.0, 153 / 255, 1.0])
    assert seen == [(0, 0.0), (1, pytest.approx(0.6)), (2, 1.0)]
    assert info["reward_valid"].tolist() == [True] * 3 and info["reward_model_version"] == "1"
    success = RewardModelFn(model, ["front"], output="success")(None, None, _next_obs([0.2, 0.7, 0.5]), {})
    assert success.tolist() == [0.0, 1.0, 1.0]
    with pytest.raises(KeyError, match="wrist"):
        RewardModelFn(model, ["wrist"])(None, None, _next_obs([0.0]), {})


def _flaky(bad_keys):
    return FunctionReward(_pixel, invalid_when=lambda q: q.key in bad_keys)


def test_hold_repeats_each_envs_last_valid_reward():
    bad: set = set()
    fn = RewardModelFn(_flaky(bad), ["front"], on_invalid="hold", hold_init=0.0)
    r1 = fn(None, None, _next_obs([0.2, 0.4, 0.6]), {})
    bad.update({1, 2})
    info = {"terminated": np.array([False, False, True]), "truncated": np.zeros(3, bool)}
    r2 = fn(None, None, _next_obs([1.0, 1.0, 1.0]), info)
    np.testing.assert_allclose(r2, [1.0, r1[1], r1[2]])
    assert info["reward_valid"].tolist() == [True, False, False]
    r3 = fn(None, None, _next_obs([1.0, 1.0, 1.0]), {})  # env 2's episode ended: nothing to hold from it
    np.testing.assert_allclose(r3, [1.0, r1[1], 0.0])
    assert fn.stats == {"queries": 9, "invalid": 4, "held": 4, "skipped": 0}


def test_skip_gives_nan_and_a_mask():
    fn = RewardModelFn(_flaky({0}), ["front"], on_invalid="skip")
    info = {}
    reward = fn(None, None, _next_obs([1.0, 0.4]), info)
    assert math.isnan(reward[0]) and reward[1] == pytest.approx(0.4, abs=1 / 255)
    assert info["reward_valid"].tolist() == [False, True] and fn.stats["skipped"] == 1
    with pytest.raises(ValueError, match="on_invalid"):
        RewardModelFn(_flaky(set()), ["front"], on_invalid="zero")


def test_episode_end_resets_a_debounced_model():
    fn = RewardModelFn(Debounce(FunctionReward(_pixel), k=2), ["front"])
    assert fn(None, None, _next_obs([1.0, 1.0]), {}).tolist() == [0.0, 0.0]
    done = {"terminated": np.array([True, False]), "truncated": np.array([False, False])}
    assert fn(None, None, _next_obs([1.0, 1.0]), done).tolist() == [1.0, 1.0]
    assert fn(None, None, _next_obs([1.0, 1.0]), {}).tolist() == [0.0, 1.0]  # env 0 counts again from 0


def test_injected_noise_hits_the_asked_rates_and_is_seeded():
    n = 20000
    truth = (np.arange(n) % 2).astype(float)  # half positives
    noise = DetectorNoise(fn_rate=0.6, fp_rate=0.03, seed=3)
    noisy = noise(truth)
    fn_rate = np.mean(noisy[truth == 1] == 0)
    fp_rate = np.mean(noisy[truth == 0] == 1)
    assert abs(fn_rate - 0.6) < 4 * math.sqrt(0.6 * 0.4 / (n / 2))
    assert abs(fp_rate - 0.03) < 4 * math.sqrt(0.03 * 0.97 / (n / 2))
    assert noise.flipped == {"fn": int(np.sum((truth == 1) & (noisy == 0))), "fp": int(np.sum((truth == 0) & (noisy == 1)))}
    np.testing.assert_array_equal(DetectorNoise(0.6, 0.03, seed=3)(truth), noisy)
    # invalid rows are never flipped; the wrapper works on any batched reward function (privileged success)
    kept = DetectorNoise(1.0, 1.0)(np.array([1.0, 0.0, np.nan]), valid=np.array([False, False, False]))
    assert kept[:2].tolist() == [1.0, 0.0]
    privileged = NoisyReward(lambda o, a, no, info: info["success"].astype(float), noise_fn=1.0)
    assert privileged(None, None, None, {"success": np.array([True, False])}).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="noise_fp"):
        DetectorNoise(0.1, 1.5)


def test_adapter_noise_applies_to_valid_model_outputs():
    fn = RewardModelFn(FunctionReward(_pixel), ["front"], noise_fn=0.5, noise_fp=0.0, seed=0)
    out = np.concatenate([fn(None, None, _next_obs([1.0] * 500), {}) for _ in range(4)])
    assert 0.4 < np.mean(out == 0.0) < 0.6 and fn.flipped["fn"] == int(np.sum(out == 0.0))


def test_relabel_writes_a_new_dataset_and_leaves_the_source(tmp_path):
    src = write_synthetic_dataset(tmp_path / "src", episode_lengths=(5, 6), image_shape=(16, 16, 3),
                                  video_codec="mpeg4")
    # synthetic state[0] = 100 * episode + t: "success" from step 3 on, episode 1's step 4 unanswered
    model = FunctionReward(lambda q: float(q.state[0] % 100 >= 3), name="t_ge_3", version="7",
                           invalid_when=lambda q: q.key == (1, 3))
    summary = relabel_dataset(src, tmp_path / "dst", model, cameras=["front"])
    out, before = LeRobotDataset(tmp_path / "dst"), LeRobotDataset(src)
    assert out.num_episodes == 2 and out.num_frames == 11 and out.tasks == before.tasks
    ep0, ep1 = out.episode(0), out.episode(1)
    assert ep0["next.success"].tolist() == [False, False, True, True, True]  # row t judged on frame t + 1
    assert ep1["next.reward"].tolist() == [0.0, 0.0, 1.0, 0.0, 1.0, 1.0]  # row 3 kept the source's 0
    assert ep1["next.reward_valid"].tolist() == [True, True, True, False, True, True]
    np.testing.assert_array_equal(ep1["action"], before.episode(1)["action"])
    assert out.episode_frames(1, "observation.images.front").shape == (6, 16, 16, 3)
    assert "next.success" not in before.features  # the source is untouched
    meta = json.loads((tmp_path / "dst" / "meta" / "reward_relabel.json").read_text())
    assert meta["model_version"] == "7" and meta["invalid"] == summary["invalid"] == 1
    with pytest.raises(FileExistsError):
        relabel_dataset(src, tmp_path / "dst", model, cameras=["front"])
    with pytest.raises(KeyError, match="wrist"):
        relabel_dataset(src, tmp_path / "dst2", model, cameras=["wrist"])
