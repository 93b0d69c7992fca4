"""Success classifier: checkpoint round trip and errors, the RewardModel contract, and its training math
(labels per episode, split by episode, threshold for a target FP rate, temperature, crops, metrics)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from armflow.rewards import RewardQuery
from armflow.rewards.classifier import ClassifierConfig, SuccessClassifier, sigmoid
from armflow.rewards.classifier_fit import (FitConfig, balanced_batch, episode_labels, fit, fit_temperature,
                                            random_crop, split_episodes, threshold_for_fp)
from armflow.rewards.metrics import calibration_bins, confusion, frame_success, roc_auc

SMALL = dict(image_size=(24, 24), channels=(4, 8, 8), spatial_features=2, hidden=16)


def tiny(cameras=("front",), **kw) -> SuccessClassifier:
    torch.manual_seed(0)
    return SuccessClassifier(ClassifierConfig(cameras=cameras, **{**SMALL, **kw}))


def frames(n: int, seed: int = 0, size: int = 24) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_save_load_round_trip_gives_identical_probs(tmp_path):
    model = tiny(("front", "wrist"), threshold=0.7, temperature=1.7)
    images = {"front": frames(5, 1), "wrist": frames(5, 2)}
    model.save(tmp_path / "ckpt")
    loaded = SuccessClassifier.load(tmp_path / "ckpt")
    assert np.array_equal(loaded.probs(images), model.probs(images))
    assert loaded.config == model.config and loaded.model_version == model.model_version
    saved = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert saved["cameras"] == ["front", "wrist"] and saved["image_size"] == [24, 24] and saved["threshold"] == 0.7
    assert saved["format"].startswith("armflow.success_classifier/")
    # a run dir of `armflow reward fit` (<out>/checkpoint) loads too
    model.save(tmp_path / "run" / "checkpoint")
    assert SuccessClassifier.load(tmp_path / "run").model_version == model.model_version


def test_load_errors_name_the_file_and_the_mismatch(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        SuccessClassifier.load(tmp_path / "nothing")
    tiny().save(tmp_path / "a")
    (tmp_path / "a" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        SuccessClassifier.load(tmp_path / "a")
    tiny(("front", "wrist")).save(tmp_path / "b")
    cfg = json.loads((tmp_path / "b" / "config.json").read_text())
    (tmp_path / "b" / "config.json").write_text(json.dumps({**cfg, "cameras": ["front"]}))
    with pytest.raises(ValueError, match=r"cameras \['front'\].*encoders.wrist"):
        SuccessClassifier.load(tmp_path / "b")
    (tmp_path / "b" / "config.json").write_text(json.dumps({**cfg, "image_size": [48, 48]}))
    with pytest.raises(ValueError, match="shape"):
        SuccessClassifier.load(tmp_path / "b")
    (tmp_path / "b" / "config.json").write_text(json.dumps({**cfg, "format": "something/9"}))
    with pytest.raises(ValueError, match="format"):
        SuccessClassifier.load(tmp_path / "b")


def test_score_is_a_reward_model_with_threshold_temperature_and_logit():
    model = tiny(threshold=0.5, temperature=2.0)
    imgs = frames(6, 3)
    queries = [RewardQuery(frames={"front": imgs[i - 1:i + 1] if i else imgs[0]}, key=i) for i in range(6)]
    results = model.score(queries)
    logits = model.logits({"front": imgs})  # the latest frame of each query is scored
    for i, r in enumerate(results):
        assert r.valid and r.key == i and r.backend == "classifier" and r.model_version == model.model_version
        assert r.evidence["logit"] == pytest.approx(logits[i])
        assert r.prob == pytest.approx(float(sigmoid(logits[i] / 2.0)))
        assert r.value == float(r.prob >= 0.5)
    strict = model.with_decision(threshold=1.0)
    assert all(r.value == 0.0 for r in strict.score(queries))


def test_bad_queries_name_the_model_cameras_and_shape():
    model = tiny(("front",))
    with pytest.raises(ValueError, match=r"camera 'front'.*\['front'\].*\['wrist'\]"):
        model.score([RewardQuery(frames={"wrist": frames(1)[0]})])
    with pytest.raises(ValueError, match=r"expected uint8 \(B, 24, 24, 3\)"):
        model.score([RewardQuery(frames={"front": frames(1, size=32)[0]})])


def test_registry_builds_the_classifier_and_checks_its_keys(tmp_path):
    from armflow.configs import ConfigError
    from armflow.rewards.registry import make_reward_model

    tiny().save(tmp_path / "c")
    model = make_reward_model("classifier", path=str(tmp_path / "c"), threshold=0.9)
    assert model.config.threshold == 0.9 and model.backend == "classifier"
    with pytest.raises(ConfigError, match="treshold"):
        make_reward_model("classifier", path=str(tmp_path / "c"), treshold=0.9)


def test_episode_labels_positives_after_success_negatives_before_and_in_failures():
    s = np.array([0, 0, 0, 0, 0, 1, 1, 1, 0, 1], bool)
    assert episode_labels(s, positive_frames=None, boundary_skip=2).tolist() == [0, 0, 0, -1, -1, 1, 1, 1, -1, 1]
    assert episode_labels(s, positive_frames=2, boundary_skip=0).tolist() == [0, 0, 0, 0, 0, -1, -1, 1, -1, 1]
    assert episode_labels(np.zeros(4, bool)).tolist() == [0, 0, 0, 0]


def test_split_by_episode_has_no_episode_in_both_splits_and_both_classes_in_each():
    outcomes = [bool(i % 3 == 0) for i in range(20)]
    train, val = split_episodes(outcomes, 0.25, seed=4)
    assert not set(train) & set(val) and sorted(train + val) == list(range(20))
    for split in (train, val):
        assert {outcomes[i] for i in split} == {True, False}
    assert split_episodes(outcomes, 0.25, seed=4) == (train, val)
    with pytest.raises(ValueError, match="val_fraction"):
        split_episodes(outcomes, 1.0)


def test_balanced_batches_hold_ratio_negatives_and_reach_every_negative():
    labels = torch.tensor([1.0] * 10 + [0.0] * 100)
    gen = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(60):
        idx = balanced_batch(labels, 35, 2.5, gen)
        assert len(idx) == 35 and int(labels[idx].sum()) == 10  # 35 / 3.5 positives, 25 negatives
        seen.update(idx[labels[idx] == 0].tolist())
    assert seen == set(range(10, 110))  # not a fixed subsample: every negative is drawn


def test_frame_success_labels_each_frame_with_the_state_it_shows():
    # row t's next.success is the state after its action = frame t+1; the reset frame is never a success
    assert frame_success(np.array([0, 0, 1, 1], bool)).tolist() == [False, False, False, True]
    assert frame_success(np.zeros(0, bool)).size == 0


@pytest.mark.parametrize("target", [0.0, 0.01, 0.05])
def test_threshold_hits_the_target_false_positive_rate(target):
    rng = np.random.default_rng(1)
    neg = rng.beta(2, 5, 5000)
    t = threshold_for_fp(neg, target, min_threshold=0.0)
    fp = np.mean(neg >= t)
    assert fp <= target
    # the lowest such threshold: one step below lets one more negative through
    below = np.sort(neg)[::-1][int(np.floor(target * len(neg)))]
    assert np.mean(neg >= below) > target and t == np.nextafter(below, np.inf)
    assert threshold_for_fp(neg, target, min_threshold=0.99) == 0.99


def test_temperature_fit_recovers_a_known_temperature():
    rng = np.random.default_rng(2)
    z = rng.normal(0, 6, 20000)
    y = rng.random(z.size) < sigmoid(z / 3.0)
    assert fit_temperature(z, y) == pytest.approx(3.0, rel=0.08)
    assert fit_temperature(np.array([-2.0, -1.0, 1.0, 3.0]), np.array([0, 0, 1, 1])) == 1.0  # separable: no fit


def test_random_crop_shifts_within_the_padded_frame():
    gen = torch.Generator().manual_seed(0)
    x = torch.from_numpy(frames(4, 5))
    assert torch.equal(random_crop(x, 0, gen), x)
    out = random_crop(x, 3, gen)
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(x.permute(0, 3, 1, 2).float(), (3,) * 4, mode="replicate").permute(0, 2, 3, 1)
    for b in range(4):  # every output is one 24x24 window of its padded input
        hits = [(dy, dx) for dy in range(7) for dx in range(7)
                if torch.equal(padded[b, dy:dy + 24, dx:dx + 24].to(torch.uint8), out[b])]
        assert hits


def test_fit_learns_a_separable_task_and_keeps_the_best_weights():
    rng = np.random.default_rng(0)
    bright = rng.integers(150, 256, (40, 24, 24, 3), dtype=np.uint8)
    dark = rng.integers(0, 100, (40, 24, 24, 3), dtype=np.uint8)
    x, y = np.concatenate([bright, dark]), np.r_[np.ones(40), np.zeros(40)]
    model = tiny()
    result = fit(model, ({"front": x}, y), ({"front": x[::4]}, y[::4]),
                 FitConfig(steps=40, batch_size=16, lr=3e-3, eval_every=10))
    assert [row["step"] for row in result["history"]] == [10, 20, 30, 40]
    assert result["best_val_loss"] == min(row["val/loss"] for row in result["history"])
    assert np.mean((model.probs({"front": x}) >= 0.5) == (y > 0)) == 1.0


def test_metrics_match_brute_force():
    rng = np.random.default_rng(3)
    s, y = rng.random(300).round(2), rng.random(300) < 0.3
    pairs = [(a > b) + 0.5 * (a == b) for a in s[y] for b in s[~y]]
    assert roc_auc(s, y) == pytest.approx(np.mean(pairs))
    c = confusion(s >= 0.5, y)
    assert c["fp"] == np.sum((s >= 0.5) & ~y) and c["fp_rate"] == pytest.approx(c["fp"] / np.sum(~y))
    assert c["precision"] == pytest.approx(c["tp"] / (c["tp"] + c["fp"]))
    cal = calibration_bins(np.array([0.05, 0.05, 0.95, 0.95]), np.array([0, 1, 1, 1]), bins=10)
    assert cal["count"][0] == 2 and cal["observed"][0] == 0.5 and cal["observed"][9] == 1.0
    assert cal["ece"] == pytest.approx((2 * 0.45 + 2 * 0.05) / 4)
