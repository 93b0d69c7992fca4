"""`armflow convert src=PATH dst=PATH` through the console entry: both directions, the format read from the
path, a progress bar over episodes, and a clear error naming the path for anything else."""
import re

import h5py
import numpy as np
import pytest

from armflow.data import LeRobotDataset
from armflow.data.synthetic import write_synthetic_dataset
from armflow.workflows.cli import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def lerobot_root(tmp_path):
    return write_synthetic_dataset(tmp_path / "ds", episode_lengths=(5, 6, 4), state_dim=9, task="lift the cube")


def test_convert_both_ways_keeps_the_arrays(tmp_path, capsys, lerobot_root):
    hdf5 = tmp_path / "demos.hdf5"
    code, out, err = run_cli(capsys, "convert", f"src={lerobot_root}", f"dst={hdf5}", f"out={tmp_path / 'r1'}")
    assert code == 0 and "lerobot" in out and "3/3" in err  # tqdm's total is the episode count
    with h5py.File(hdf5) as f:
        assert sorted(f["data"]) == ["demo_0", "demo_1", "demo_2"] and "next_obs" in f["data/demo_0"]
        assert sorted(f["mask"]) == ["train", "valid"]
    code, out, err = run_cli(capsys, "convert", f"src={hdf5}", f"dst={tmp_path / 'back'}", f"out={tmp_path / 'r2'}")
    assert code == 0 and "3/3" in err
    a, b = LeRobotDataset(lerobot_root), LeRobotDataset(tmp_path / "back")
    assert b.tasks == a.tasks and b.fps == a.fps
    for i in range(a.num_episodes):
        for key, values in a.episode(i).items():
            np.testing.assert_array_equal(b.episode(i)[key], values, err_msg=key)


@pytest.mark.parametrize("src, dst, expected", [
    ("notes.zarr", "x.hdf5", "src=.*notes.zarr: expected a LeRobot v3 root"),
    ("missing.hdf5", "x", "src=.*missing.hdf5: no such robomimic HDF5 file"),
    ("DS", "DS", "dst=.*ds: expected a new LeRobot root"),
    ("DS", "new", "are both lerobot: convert goes between LeRobot and robomimic"),
])
def test_convert_refuses_what_it_cannot_read_or_write(tmp_path, capsys, lerobot_root, src, dst, expected):
    (tmp_path / "notes.zarr").mkdir()
    paths = {name: str(lerobot_root) if name == "DS" else str(tmp_path / name) for name in (src, dst)}
    code, _, err = run_cli(capsys, "convert", f"src={paths[src]}", f"dst={paths[dst]}", f"out={tmp_path / 'r'}")
    assert code == 1
    assert re.search(expected, err), err


def test_convert_needs_src_and_dst(tmp_path, capsys):
    code, _, err = run_cli(capsys, "convert", f"dst={tmp_path / 'x.hdf5'}", f"out={tmp_path / 'r'}")
    assert code == 2 and "src is required" in err
