"""compute_stats / aggregate_stats / image stats against plain numpy; no torch in the writer."""

import subprocess
import sys

import numpy as np

from armflow.data import aggregate_stats, compute_image_stats, compute_stats
from armflow.data.stats import STAT_NAMES


def test_compute_stats_matches_numpy():
    x = np.random.default_rng(0).standard_normal((50, 4)).astype(np.float32)
    s = compute_stats(x)
    assert list(s) == list(STAT_NAMES)
    np.testing.assert_allclose(s["mean"], x.astype(np.float64).mean(0), rtol=1e-9)
    np.testing.assert_allclose(s["std"], x.astype(np.float64).std(0), rtol=1e-6)
    np.testing.assert_allclose(s["q50"], np.median(x, 0), rtol=1e-6)
    assert s["count"].tolist() == [50] and s["min"].dtype == np.float64
    ints = compute_stats(np.arange(10))
    assert ints["min"].dtype == np.int64 and ints["max"].tolist() == [9] and ints["mean"].shape == (1,)


def test_aggregate_is_exact_for_moments():
    rng = np.random.default_rng(1)
    parts = [rng.normal(i, 1 + i, (n, 3)) for i, n in enumerate([5, 17, 9])]
    agg = aggregate_stats([compute_stats(p) for p in parts])
    full = np.concatenate(parts)
    np.testing.assert_allclose(agg["mean"], full.mean(0), rtol=1e-12)
    np.testing.assert_allclose(agg["std"], full.std(0), rtol=1e-12)
    np.testing.assert_array_equal(agg["min"], full.min(0))
    np.testing.assert_array_equal(agg["max"], full.max(0))
    assert agg["count"].tolist() == [31]


def test_image_stats_per_channel_in_unit_range():
    frames = np.random.default_rng(2).integers(0, 256, (4, 8, 6, 3), dtype=np.uint8)
    s = compute_image_stats(frames)
    assert all(v.shape == (3, 1, 1) for k, v in s.items() if k != "count") and s["count"].tolist() == [4]
    pixels = frames.reshape(-1, 3) / 255.0
    np.testing.assert_allclose(s["mean"].ravel(), pixels.mean(0), rtol=1e-12)
    np.testing.assert_allclose(s["std"].ravel(), pixels.std(0), rtol=1e-9)
    np.testing.assert_allclose(s["min"].ravel(), pixels.min(0))
    np.testing.assert_allclose(s["q50"].ravel(), np.quantile(pixels, 0.5, axis=0, method="inverted_cdf"))


def test_writer_and_reader_do_not_import_torch():
    code = ("import sys, armflow.data, armflow.data.lerobot, armflow.data.reader; "
            "assert 'torch' not in sys.modules and 'h5py' not in sys.modules, 'imported torch/h5py'")
    subprocess.run([sys.executable, "-c", code], check=True)
