"""armflow collect (failures, frames after success, the teleop success key), reward fit, reward eval and
bench reward end to end on tiny recorded lift datasets (real MuJoCo renders, 32x32)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from armflow.workflows.cli import main as cli_main

SMALL_FIT = ["steps=20", "eval_every=10", "batch_size=16", "channels=[8,8,8]", "spatial_features=2",
             "progress=false", "val_fraction=0.3"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from armflow.workflows.collect import collect_scripted

    root = tmp_path_factory.mktemp("reward") / "lift"
    info = collect_scripted("lift", root, 6, cameras=["agentview"], only_success=False, progress=False,
                            env_overrides={"image_size": 32}, failures=0.5, success_hold_steps=4)
    assert 0 < info["successes_saved"] < 6  # both classes (the seeded plan gives 3 failures of 6)
    return root


def test_collect_records_failures_and_frames_after_success(dataset):
    from armflow.data import LeRobotDataset

    ds = LeRobotDataset(dataset)
    assert ds.video_keys == ["observation.images.agentview"]
    for i in range(ds.num_episodes):
        ep = ds.episode(i)
        success, done = ep["next.success"].astype(bool), ep["next.done"].astype(bool)
        assert done[-1] and not done[:-1].any()  # one end per episode, after the hold frames
        if success.any():
            first = int(np.argmax(success))
            assert len(success) - first == 5 and success[first:].all()  # first success + 4 held frames
        else:
            assert len(success) == 100 and ep["next.truncated"][-1]  # a failure runs to the time limit


def test_collect_refuses_failures_it_would_drop(tmp_path):
    from armflow.workflows.collect import collect_scripted

    with pytest.raises(ValueError, match="only_success=false"):
        collect_scripted("lift", tmp_path / "x", 1, failures=0.5, progress=False)


def test_teleop_success_key_labels_frames_while_on():
    from armflow.hardware.teleop_session import run_teleop_episode
    from armflow.sim import make_env

    class Device:  # toggles the human success label on at step 2 and off at step 5, then saves
        def __init__(self):
            self.i = 0

        def read(self):
            self.i += 1
            events = {"success"} if self.i in (3, 6) else ({"save"} if self.i > 7 else set())
            return np.zeros(7), events

    labels = []
    result = run_teleop_episode(make_env("lift"), Device(), lambda *f: labels.append(f[-1]["success"]), seed=0,
                                realtime=False)
    assert result["outcome"] == "save" and labels == [False, False, True, True, True, False, False]


def test_reward_fit_and_eval_end_to_end(dataset, tmp_path, capsys):
    fit_dir, eval_dir = tmp_path / "fit", tmp_path / "eval"
    assert cli_main(["reward", "fit", f"dataset={dataset}", "cameras=[agentview]", *SMALL_FIT,
                     f"out={fit_dir}"]) == 0
    metrics = json.loads((fit_dir / "metrics.json").read_text())
    assert set(metrics["episodes_train"]).isdisjoint(metrics["episodes_val"])
    assert metrics["val"]["fp_rate"] <= 0.01 or metrics["threshold"] > 0.5  # the threshold answers the FP target
    assert (fit_dir / "scores.png").stat().st_size > 1000
    cfg = json.loads((fit_dir / "checkpoint" / "config.json").read_text())
    assert cfg["cameras"] == ["agentview"] and cfg["image_size"] == [32, 32]
    assert cfg["training"]["dataset"] == str(dataset) and cfg["training"]["train_frames"]["positive"] > 0

    assert cli_main(["reward", "eval", f"dataset={dataset}", f"checkpoint={fit_dir}", f"out={eval_dir}"]) == 0
    ev = json.loads((eval_dir / "metrics.json").read_text())
    overall = ev["overall"]
    assert ev["backend"] == "classifier" and ev["model_version"] == metrics["model_version"]
    assert list(ev["per_task"]) == ["lift"] and overall["episodes"] == 6 and overall["invalid"] == 0
    assert overall["positives"] + overall["negatives"] == ev["frames"]
    assert overall["tp"] + overall["fp"] + overall["fn"] + overall["tn"] == ev["frames"]
    for key in ("accuracy", "precision", "recall", "fp_rate", "fn_rate", "auc", "brier"):
        assert key in overall
    assert (eval_dir / "reliability.png").stat().st_size > 1000 and (eval_dir / "scores.png").exists()
    assert "[reward eval] classifier on" in capsys.readouterr().out


def test_reward_fit_unknown_camera_names_the_dataset_cameras(dataset, tmp_path, capsys):
    rc = cli_main(["reward", "fit", f"dataset={dataset}", "cameras=[frontview]", f"out={tmp_path / 'f'}"])
    err = capsys.readouterr().err
    assert rc == 1 and "frontview" in err and "agentview" in err


def test_reward_eval_unknown_backend_lists_the_registered_ones(dataset, tmp_path, capsys):
    rc = cli_main(["reward", "eval", f"dataset={dataset}", "backend=clasifier", f"out={tmp_path / 'e'}"])
    err = capsys.readouterr().err
    assert rc == 2 and "classifier" in err and "openai" in err


def test_bench_reward_tiny_emits_the_bench_json_keys(tmp_path, capsys):
    out = tmp_path / "bench"
    rc = cli_main(["bench", "reward", "train_episodes=6", "test_episodes=2", "image_size=32", "success_hold_steps=4",
                   "+fit.steps=10", "+fit.eval_every=5", "+fit.batch_size=16", "+fit.channels=[8,8,8]",
                   "+fit.val_fraction=0.3",
                   "warmup=1", "iters=3", "vlm_queries=8", "vlm_concurrency=4", "progress=false", f"out={out}"])
    assert rc == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("BENCH_JSON: ")
    res = json.loads(last.removeprefix("BENCH_JSON: "))
    for key in ("classifier_accuracy", "classifier_fp_rate", "classifier_frames_per_s", "vlm_concurrent_requests",
                "vlm_lost_or_mismatched", "vlm_cache_rerun_requests"):
        assert res[key] is not None, key
    assert 0.0 <= res["classifier_accuracy"] <= 1.0 and res["classifier_frames_per_s"] > 0
    assert res["vlm_lost_or_mismatched"] == 0 and res["vlm_cache_rerun_requests"] == 0
    assert res["episodes"] == 8 and res["test_frames"] > 0


def test_reward_fit_label_key_trains_on_another_label_column(dataset, tmp_path, capsys):
    """The flywheel: an improve dataset's `next.success` is the old detector's decision; `label_key=` names the
    column to learn from (in sim `improve.privileged_success`). Here a copy whose `next.success` is all false and
    whose real labels sit in `audit.success`: the default has no positives, the label key finds them."""
    from armflow.data import LeRobotDataset, LeRobotWriter

    src = LeRobotDataset(dataset)
    feats = {k: {"dtype": f["dtype"], "shape": tuple(f["shape"]), "names": f.get("names")}
             for k, f in src.features.items() if not k.startswith(("timestamp", "frame_index", "episode_index",
                                                                   "index", "task_index"))}
    feats["audit.success"] = {"dtype": "bool", "shape": (1,), "names": None}
    root = tmp_path / "relabelled"
    with LeRobotWriter(root, fps=src.fps, features=feats) as w:
        for i in range(src.num_episodes):
            ep = src.episode(i)
            frames = src.episode_frames(i, "observation.images.agentview")
            for t in range(len(frames)):
                row = {k: ep[k][t] for k in feats if k in ep and not k.startswith("observation.images.")}
                row["observation.images.agentview"] = frames[t]
                row["audit.success"], row["next.success"] = ep["next.success"][t], np.array([False])
                w.add_frame(row)
            w.save_episode(task="lift")
    assert cli_main(["reward", "fit", f"dataset={root}", "cameras=[agentview]", *SMALL_FIT,
                     f"out={tmp_path / 'default'}"]) == 1
    assert "positive" in capsys.readouterr().err
    assert cli_main(["reward", "fit", f"dataset={root}", "cameras=[agentview]", "label_key=audit.success",
                     *SMALL_FIT, f"out={tmp_path / 'keyed'}"]) == 0
    metrics = json.loads((tmp_path / "keyed" / "metrics.json").read_text())
    assert metrics["label_key"] == "audit.success" and metrics["train_frames"]["positive"] > 0
    assert cli_main(["reward", "fit", f"dataset={root}", "cameras=[agentview]", "label_key=nope",
                     f"out={tmp_path / 'bad'}"]) == 1
    assert "audit.success" in capsys.readouterr().err  # the error lists the bool columns
