"""robomimic HDF5 import/export round trip."""

import json

import h5py
import numpy as np
import pytest

from armflow.data import DatasetError, export_robomimic, import_robomimic


def _make_hdf5(path, lengths=(6, 4), with_images=True):
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as h5:
        data = h5.create_group("data")
        data.attrs["env_args"] = json.dumps({"env_name": "Lift", "type": 1, "env_kwargs": {"robots": ["Panda"]}})
        for i, n in enumerate(lengths):
            g = data.create_group(f"demo_{i}")
            g.attrs["num_samples"] = n
            g.create_dataset("obs/robot0_eef_pos", data=rng.standard_normal((n, 3)))
            g.create_dataset("obs/object", data=rng.standard_normal((n, 10)))
            if with_images:
                y, x = np.mgrid[0:16, 0:16]
                img = np.stack([np.stack([x * 8 + t, y * 8, np.full_like(x, 100)], -1) for t in range(n)])
                g.create_dataset("obs/agentview_image", data=img.astype(np.uint8))
            g.create_dataset("actions", data=rng.uniform(-1, 1, (n, 7)))
            g.create_dataset("rewards", data=(np.arange(n) == n - 1).astype(np.float64))
            g.create_dataset("dones", data=(np.arange(n) == n - 1).astype(np.int64))
            g.create_dataset("states", data=rng.standard_normal((n, 20)))
        data.attrs["total"] = sum(lengths)


def test_robomimic_round_trip(tmp_path):
    src, out = tmp_path / "src.hdf5", tmp_path / "out.hdf5"
    _make_hdf5(src)
    ds = import_robomimic(src, tmp_path / "ds", obs_keys=["robot0_eef_pos", "object"], fps=20)
    assert ds.num_episodes == 2 and ds.num_frames == 10 and ds.tasks == ["Lift"]
    assert ds.features["observation.state"]["shape"] == (13,)
    assert ds.video_keys == ["observation.images.agentview"]
    export_robomimic(ds, out)
    with h5py.File(src) as a, h5py.File(out) as b:
        assert json.loads(b["data"].attrs["env_args"]) == json.loads(a["data"].attrs["env_args"])
        assert b["data"].attrs["total"] == 10
        for demo in ("demo_0", "demo_1"):
            for key in ("obs/robot0_eef_pos", "obs/object", "actions", "rewards", "dones", "states"):
                np.testing.assert_allclose(b[f"data/{demo}/{key}"][()], a[f"data/{demo}/{key}"][()], rtol=1e-6,
                                           atol=1e-6, err_msg=f"{demo}/{key}")
            assert b[f"data/{demo}"].attrs["num_samples"] == a[f"data/{demo}"].attrs["num_samples"]
            img_a, img_b = (f[f"data/{demo}/obs/agentview_image"][()].astype(int) for f in (a, b))
            assert img_b.shape == img_a.shape and np.abs(img_b - img_a).mean() < 4


def test_missing_group_names_path_inside_file(tmp_path):
    src = tmp_path / "src.hdf5"
    _make_hdf5(src, with_images=False)
    with h5py.File(src, "a") as h5:
        del h5["data/demo_1/actions"]
    with pytest.raises(DatasetError, match="missing 'data/demo_1/actions' inside the HDF5 file") as info:
        import_robomimic(src, tmp_path / "ds")
    assert info.value.path == str(src)
    assert not (tmp_path / "ds" / "meta" / "info.json").exists()  # validated before writing anything
    with pytest.raises(DatasetError, match="missing 'data/demo_0/obs/nope'"):
        import_robomimic(src, tmp_path / "ds2", obs_keys=["nope"])
