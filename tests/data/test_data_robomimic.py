"""robomimic HDF5 import/export round trip."""

import json

import h5py
import numpy as np
import pytest

from armflow.data import DatasetError, LeRobotDataset, LeRobotWriter, export_robomimic, import_robomimic


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


# ---------------------------------------------------------------------------------------------------------
# robomimic's reader, written from its documented format: what `SequenceDataset(hdf5_path, obs_keys,
# dataset_keys)` does with its default arguments (load_next_obs=True, filter_by_attribute=None, SWMR open).
def read_like_robomimic(path, obs_keys, dataset_keys=("actions", "rewards", "dones"), filter_key=None):
    """{demo: {"obs": {k: (T, ...)}, "next_obs": {...}, <dataset key>: (T, ...)}} plus env_args, as robomimic
    reads them; raises (KeyError, ValueError, AssertionError) where robomimic would."""
    with h5py.File(path, "r", swmr=True, libver="latest") as f:
        env_args = json.loads(f["data"].attrs["env_args"])
        assert {"env_name", "type", "env_kwargs"} <= set(env_args), env_args
        if filter_key is not None:
            demos = [name.decode("utf-8") for name in np.array(f[f"mask/{filter_key}"][:])]
        else:
            demos = list(f["data"].keys())
        demos = [demos[i] for i in np.argsort([int(name[5:]) for name in demos])]  # "demo_<int>" only
        out = {}
        for demo in demos:
            n = int(f[f"data/{demo}"].attrs["num_samples"])
            item = {"obs": {k: f[f"data/{demo}/obs/{k}"][()] for k in obs_keys},
                    "next_obs": {k: f[f"data/{demo}/next_obs/{k}"][()] for k in obs_keys}}
            for k in dataset_keys:
                item[k] = f[f"data/{demo}/{k}"][()].astype("float32")
            for v in [*item["obs"].values(), *item["next_obs"].values(), *(item[k] for k in dataset_keys)]:
                assert len(v) == n, f"{demo}: {len(v)} rows, num_samples {n}"
            out[demo] = item
        assert int(f["data"].attrs["total"]) == sum(len(d["actions"]) for d in out.values()) or filter_key
    return out, env_args


NATIVE_KEYS = ["robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_opening", "object"]


def _write_lerobot(root, task, state_dim, lengths=(7, 5, 6), camera=True, env_dim=5):
    """A LeRobot dataset shaped like `armflow collect task=...` (state, camera, success, truncated, env state)."""
    rng = np.random.default_rng(1)
    feats = {"observation.state": {"dtype": "float32", "shape": (state_dim,), "names": None},
             "observation.environment_state": {"dtype": "float32", "shape": (env_dim,), "names": None},
             "action": {"dtype": "float32", "shape": (7,), "names": None},
             "next.reward": {"dtype": "float32", "shape": (1,), "names": None},
             "next.done": {"dtype": "bool", "shape": (1,), "names": None},
             "next.truncated": {"dtype": "bool", "shape": (1,), "names": None},
             "next.success": {"dtype": "bool", "shape": (1,), "names": None}}
    if camera:
        feats["observation.images.agentview"] = {"dtype": "video", "shape": (16, 16, 3),
                                                 "names": ["height", "width", "channels"]}
    with LeRobotWriter(root, 20, feats, robot_type="panda") as writer:
        for n in lengths:
            for t in range(n):
                frame = {"observation.state": rng.standard_normal(state_dim).astype(np.float32),
                         "observation.environment_state": rng.standard_normal(env_dim).astype(np.float32),
                         "action": rng.uniform(-1, 1, 7).astype(np.float32),
                         "next.reward": np.float32(t == n - 1), "next.done": t == n - 1,
                         "next.truncated": False, "next.success": t == n - 1}
                if camera:
                    frame["observation.images.agentview"] = np.full((16, 16, 3), 20 * t, np.uint8)
                writer.add_frame(frame)
            writer.save_episode(task)
    return LeRobotDataset(root)


def test_export_reads_like_robomimic_sequence_dataset(tmp_path):
    ds = _write_lerobot(tmp_path / "ds", "lift", 18)
    path = export_robomimic(ds, tmp_path / "out.hdf5")
    keys = [*NATIVE_KEYS, "agentview_image"]
    demos, env_args = read_like_robomimic(path, keys)
    assert env_args == {"env_name": "armflow/lift-v0", "type": 2, "env_kwargs": {"cameras": ["agentview"]}}
    assert list(demos) == ["demo_0", "demo_1", "demo_2"]
    for i, (demo, item) in enumerate(demos.items()):
        state = ds.episode(i)["observation.state"]
        np.testing.assert_array_equal(item["obs"]["robot0_eef_pos"], state[:, 0:3])
        np.testing.assert_array_equal(item["obs"]["robot0_eef_quat"], state[:, [4, 5, 6, 3]])  # x y z w
        np.testing.assert_array_equal(item["obs"]["robot0_gripper_opening"], state[:, 7:8])
        np.testing.assert_array_equal(item["obs"]["object"], state[:, [8, 9, 10, 12, 13, 14, 11, 15, 16, 17]])
        image = item["obs"]["agentview_image"]
        assert image.dtype == np.uint8 and image.shape == (len(state), 16, 16, 3)
        for key in keys:  # next_obs[t] = obs[t + 1]; the last frame repeated
            np.testing.assert_array_equal(item["next_obs"][key][:-1], item["obs"][key][1:])
            np.testing.assert_array_equal(item["next_obs"][key][-1], item["obs"][key][-1])
        np.testing.assert_array_equal(item["dones"], np.arange(len(state)) == len(state) - 1)
    train, _ = read_like_robomimic(path, keys, filter_key="train")
    valid, _ = read_like_robomimic(path, keys, filter_key="valid")
    assert len(valid) == 1 and sorted([*train, *valid]) == sorted(demos) and not set(train) & set(valid)


def test_robosuite_export_names_an_env_robosuite_makes(tmp_path):
    ds = _write_lerobot(tmp_path / "ds", "robosuite/Can", 23, lengths=(4, 3), camera=False)
    path = export_robomimic(ds, tmp_path / "out.hdf5")
    demos, env_args = read_like_robomimic(path, ["robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos",
                                                 "object"])
    assert env_args["type"] == 1 and env_args["env_name"] == "PickPlaceCan"
    assert env_args["env_kwargs"]["robots"] == ["Panda"] and env_args["env_kwargs"]["control_freq"] == 20
    state = ds.episode(0)["observation.state"]
    obj = demos["demo_0"]["obs"]["object"]
    np.testing.assert_array_equal(obj[:, 3:7], state[:, [13, 14, 15, 12]])  # to-eef quat, x y z w
    np.testing.assert_array_equal(obj[:, 10:14], state[:, [20, 21, 22, 19]])
    np.testing.assert_array_equal(demos["demo_0"]["obs"]["robot0_gripper_qpos"], state[:, 7:9])


def test_unknown_layout_keeps_full_state(tmp_path):
    ds = _write_lerobot(tmp_path / "ds", "my real robot", 6, lengths=(3, 3), camera=False)
    demos, env_args = read_like_robomimic(export_robomimic(ds, tmp_path / "o.hdf5"), ["state"])
    np.testing.assert_array_equal(demos["demo_1"]["obs"]["state"], ds.episode(1)["observation.state"])
    assert env_args == {"env_name": "my real robot", "type": 2, "env_kwargs": {}}


def test_lerobot_hdf5_lerobot_round_trip_is_lossless(tmp_path):
    ds = _write_lerobot(tmp_path / "ds", "pick_either", 28)
    back = import_robomimic(export_robomimic(ds, tmp_path / "out.hdf5"), tmp_path / "back")
    assert (back.fps, back.robot_type, back.num_episodes, back.num_frames) == (20, "panda", 3, 18)
    assert {k: (f["dtype"], tuple(f["shape"])) for k, f in back.features.items()} == \
        {k: (f["dtype"], tuple(f["shape"])) for k, f in ds.features.items()}
    for i in range(ds.num_episodes):
        assert back.episode_task(i) == "pick_either"
        a, b = ds.episode(i), back.episode(i)
        assert sorted(a) == sorted(b)
        for key in a:
            assert a[key].dtype == b[key].dtype, key
            np.testing.assert_array_equal(b[key], a[key], err_msg=key)
        img_a, img_b = (d.episode_frames(i, "observation.images.agentview").astype(int) for d in (ds, back))
        assert np.abs(img_a - img_b).mean() < 4  # video codec loss only


def test_robomimic_lift_file_imports_in_armflow_robosuite_layout(tmp_path):
    src = tmp_path / "src.hdf5"
    _make_hdf5(src, with_images=False)
    rng = np.random.default_rng(2)
    with h5py.File(src, "a") as h5:
        for demo, n in (("demo_0", 6), ("demo_1", 4)):
            quat = rng.standard_normal((n, 4))
            h5.create_dataset(f"data/{demo}/obs/robot0_eef_quat", data=quat / np.linalg.norm(quat, axis=1,
                                                                                            keepdims=True))
            h5.create_dataset(f"data/{demo}/obs/robot0_gripper_qpos", data=rng.uniform(-0.04, 0.04, (n, 2)))
    ds = import_robomimic(src, tmp_path / "ds")
    assert ds.tasks == ["robosuite/Lift"] and ds.features["observation.state"]["shape"] == (19,)
    with h5py.File(src) as h5:
        state = ds.episode(0)["observation.state"]
        np.testing.assert_allclose(state[:, 3:7], h5["data/demo_0/obs/robot0_eef_quat"][()][:, [3, 0, 1, 2]],
                                   rtol=1e-6)  # w x y z, as armflow's robosuite env gives it
    export_robomimic(ds, tmp_path / "out.hdf5")
    with h5py.File(src) as a, h5py.File(tmp_path / "out.hdf5") as b:
        assert json.loads(b["data"].attrs["env_args"]) == json.loads(a["data"].attrs["env_args"])
        for key in ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "object"):
            np.testing.assert_allclose(b[f"data/demo_1/obs/{key}"][()], a[f"data/demo_1/obs/{key}"][()],
                                       rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_robosuite_makes_the_exported_env(tmp_path):
    robosuite = pytest.importorskip("robosuite")
    ds = _write_lerobot(tmp_path / "ds", "robosuite/Lift", 19, lengths=(3,), camera=False)
    _, env_args = read_like_robomimic(export_robomimic(ds, tmp_path / "o.hdf5"), [])
    assert env_args["env_kwargs"]["controller_configs"]["body_parts"]["right"]["type"] == "OSC_POSE"
    env = robosuite.make(env_args["env_name"], **env_args["env_kwargs"])
    obs = env.reset()
    assert obs["object-state"].shape == (10,) and obs["robot0_gripper_qpos"].shape == (2,)
    env.close()


@pytest.mark.slow
def test_real_robomimic_sequence_dataset_reads_export(tmp_path):
    pytest.importorskip("robomimic")
    import robomimic.utils.obs_utils as ObsUtils
    from robomimic.utils.dataset import SequenceDataset

    ds = _write_lerobot(tmp_path / "ds", "lift", 18)
    path = export_robomimic(ds, tmp_path / "out.hdf5")
    ObsUtils.initialize_obs_utils_with_obs_specs({"obs": {"low_dim": NATIVE_KEYS, "rgb": ["agentview_image"]}})
    for filter_key, frames in ((None, 18), ("train", None), ("valid", None)):
        seq = SequenceDataset(str(path), obs_keys=[*NATIVE_KEYS, "agentview_image"],
                              dataset_keys=("actions", "rewards", "dones"), filter_by_attribute=filter_key)
        assert frames is None or len(seq) == frames
        item = seq[len(seq) - 1]
        assert item["next_obs"]["object"].shape == (1, 10) and item["actions"].shape == (1, 7)


def test_split_layout_exports_named_keys_and_round_trips(tmp_path):
    """`armflow collect` now writes proprioception (8) and object state (10) apart: the export still names
    robomimic's keys (object from environment_state), and the import rebuilds both features exactly."""
    ds = _write_lerobot(tmp_path / "ds", "lift", 8, camera=False, env_dim=10)
    path = export_robomimic(ds, tmp_path / "out.hdf5")
    demos, _ = read_like_robomimic(path, NATIVE_KEYS)
    for i, item in enumerate(demos.values()):
        ep = ds.episode(i)
        state, env = ep["observation.state"], ep["observation.environment_state"]
        np.testing.assert_array_equal(item["obs"]["robot0_eef_quat"], state[:, [4, 5, 6, 3]])
        np.testing.assert_array_equal(item["obs"]["robot0_gripper_opening"], state[:, 7:8])
        np.testing.assert_array_equal(item["obs"]["object"], env[:, [0, 1, 2, 4, 5, 6, 3, 7, 8, 9]])
    back = import_robomimic(path, tmp_path / "back")
    assert back.features["observation.state"]["shape"] == (8,)
    for i in range(ds.num_episodes):
        for key in ("observation.state", "observation.environment_state", "action"):
            np.testing.assert_array_equal(back.episode(i)[key], ds.episode(i)[key])
