"""Episode atomicity: a writer killed with SIGKILL at any moment leaves a valid dataset."""

import random
import signal
import subprocess
import sys
import time

import numpy as np

from armflow.data import LeRobotDataset
from armflow.data.synthetic import synthetic_frame, synthetic_image

SHAPE = (48, 64, 3)
CHILD = f"""
import sys
from armflow.data import LeRobotWriter
from armflow.data.synthetic import synthetic_features, synthetic_frame
w = LeRobotWriter(sys.argv[1], 20, synthetic_features(image_shape={SHAPE}),
                  data_files_size_in_mb=0.02, video_files_size_in_mb=0.1)
print("ready", flush=True)
while True:
    e = w.num_episodes
    n = 5 + e % 7
    for t in range(n):
        w.add_frame(synthetic_frame(e, t, n, image_shape={SHAPE}))
    print("saving", e, flush=True)
    w.save_episode("task")
    print("saved", e, flush=True)
"""


def _run_and_kill(script, root, rng, mode):
    """Start the writer, SIGKILL it; returns (last saved episode, last episode whose save began)."""
    proc = subprocess.Popen([sys.executable, str(script), str(root)], stdout=subprocess.PIPE, text=True)
    lines = [proc.stdout.readline()]  # "ready"
    assert lines[0].startswith("ready"), lines
    if mode == "mid_save":  # kill right after a save began: inside remux / parquet / metadata writes
        target = None
        while True:
            line = proc.stdout.readline()
            lines.append(line)
            if line.startswith("saving"):
                target = target if target is not None else int(line.split()[1]) + 2
                if int(line.split()[1]) >= target:
                    time.sleep(rng.uniform(0.0, 0.03))
                    break
    else:  # anywhere: mostly while frames are being encoded
        time.sleep(rng.uniform(0.05, 0.5))
    proc.send_signal(signal.SIGKILL)
    # read through the same buffered stream as readline() (communicate() would bypass its buffer)
    lines += proc.stdout.read().splitlines()
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    saved = [int(l.split()[1]) for l in lines if l.startswith("saved")]
    began = [int(l.split()[1]) for l in lines if l.startswith("saving")]
    return max(saved, default=-1), max(began, default=-1)


def _check_all_episodes(root, video_from=0):
    """Every episode's columns, and its decoded video from episode `video_from` on."""
    ds = LeRobotDataset(root)  # also checks every file's rows / frame counts against the metadata
    for e in range(ds.num_episodes):
        n = 5 + e % 7
        ep = ds.episode(e)
        want = np.stack([synthetic_frame(e, t, n)["observation.state"] for t in range(n)])
        np.testing.assert_array_equal(ep["observation.state"], want, err_msg=f"episode {e}")
        if e < video_from:
            continue
        frames = ds.episode_frames(e, "observation.images.front").astype(int)
        expected = np.stack([synthetic_image(e, t, SHAPE) for t in range(n)]).astype(int)
        assert np.abs(frames - expected).mean() < 4, f"episode {e} video"
    return ds


def test_sigkill_at_random_moments_keeps_finished_episodes(tmp_path):
    rng = random.Random(1234)
    script, root = tmp_path / "child.py", tmp_path / "ds"
    script.write_text(CHILD)
    for mode in ["anywhere", "mid_save", "anywhere", "mid_save", "mid_save"]:
        before = LeRobotDataset(root).num_episodes if (root / "meta/info.json").exists() else 0
        saved, began = _run_and_kill(script, root, rng, mode)
        ds = _check_all_episodes(root, video_from=before - 3)
        # every finished save is there; at most the one being saved when killed is extra
        assert saved + 1 <= ds.num_episodes <= max(began + 1, before), (mode, saved, began, ds.num_episodes)
    assert ds.num_episodes >= 8
    n_files = len(list((root / "data").rglob("*.parquet")))
    assert n_files > 1  # rolling to new files happened while being killed
    # resuming after the last kill drops every orphan and temp file
    from armflow.data import LeRobotWriter
    from armflow.data.synthetic import synthetic_features

    with LeRobotWriter(root, 20, synthetic_features(image_shape=SHAPE), data_files_size_in_mb=0.02,
                       video_files_size_in_mb=0.1) as w:
        e = w.num_episodes
        for t in range(5 + e % 7):
            w.add_frame(synthetic_frame(e, t, 5 + e % 7, image_shape=SHAPE))
        w.save_episode("task")
    assert not [p for p in root.rglob("*") if p.name.endswith(".tmp") or p.name == ".tmp"]
    ds = _check_all_episodes(root)
    assert ds.num_episodes == e + 1
