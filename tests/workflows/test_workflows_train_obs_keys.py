"""`armflow train` on datasets with extra observation features (issue 11: datasets from anywhere train)."""
import json

import numpy as np
import pytest
import yaml

from armflow.data import LeRobotWriter
from armflow.data.synthetic import synthetic_features, synthetic_frame
from armflow.policies import load_policy
from armflow.workflows.cli import main


@pytest.fixture(scope="module")
def extra_feature_dataset(tmp_path_factory):
    """State + privileged `observation.environment_state`, as lerobot's writer or a robomimic import leave it."""
    root = tmp_path_factory.mktemp("extra") / "dataset"
    feats = synthetic_features(state_dim=9)
    feats["observation.environment_state"] = {"dtype": "float32", "shape": (5,), "names": None}
    with LeRobotWriter(root, 20, feats, robot_type="panda") as writer:
        for ep, length in enumerate((12, 14)):
            for t in range(length):
                frame = synthetic_frame(ep, t, length)
                frame["observation.environment_state"] = np.full(5, ep + t / 10, np.float32)
                writer.add_frame(frame)
            writer.save_episode("lift the cube")
    return root


def _train(dataset, out, *extra):
    return main(["train", f"dataset={dataset}", "steps=4", "batch_size=8", "log_every=2", "save_every=4",
                 "policy.n_obs_steps=2", f"out={out}", *extra])


def test_default_obs_keys_are_every_observation_feature_stated_in_the_config(extra_feature_dataset, tmp_path):
    assert _train(extra_feature_dataset, tmp_path / "run") == 0
    policy = load_policy(tmp_path / "run" / "checkpoint")
    assert policy.obs_spec == {"observation.state": (9,), "observation.environment_state": (5,)}
    cfg = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert cfg["obs_keys"] == ["observation.state", "observation.environment_state"]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 4 and np.isfinite(summary["final_loss"])


def test_named_obs_keys_leave_out_privileged_state(extra_feature_dataset, tmp_path):
    assert _train(extra_feature_dataset, tmp_path / "run", "obs_keys=[observation.state]") == 0
    assert set(load_policy(tmp_path / "run" / "checkpoint").obs_spec) == {"observation.state"}


def test_unknown_obs_key_is_a_clear_error(extra_feature_dataset, tmp_path, capsys):
    assert _train(extra_feature_dataset, tmp_path / "run", "obs_keys=[observation.images.wrist]") == 2
    err = capsys.readouterr().err
    assert "observation.images.wrist" in err and "observation.environment_state" in err and "Traceback" not in err


def test_obs_std_floor_keeps_a_barely_varying_feature_from_swamping_the_input():
    """A flat cube's orientation had std ~1e-3 in the demos: 1 degree of yaw at deployment was 19 std. The floor
    bounds that (vector features only; actions and images keep their stats)."""
    import numpy as np
    import torch

    from armflow.policies import make_policy
    from armflow.workflows.train import floor_obs_stats

    stats = {"observation.state": {"mean": np.zeros(2), "std": np.array([1e-3, 0.5]), "min": np.array([0.0, -1.0]),
                                   "max": np.array([1e-3, 1.0])},
             "action": {"mean": np.zeros(2), "std": np.full(2, 1e-3), "min": -np.ones(2), "max": np.ones(2)}}
    floored = floor_obs_stats(stats, {"observation.state": (2,)}, 0.02)
    assert np.allclose(floored["observation.state"]["std"], [0.02, 0.5])
    assert np.allclose(floored["observation.state"]["max"] - floored["observation.state"]["min"], [0.04, 2.0])
    assert floored["action"] is stats["action"] and floor_obs_stats(stats, {}, 0.0) is stats
    x = torch.tensor([[0.017, 0.0]])
    z = {}
    for name, st in (("raw", stats), ("floored", floored)):
        policy = make_policy("flow", obs_spec={"observation.state": (2,)}, action_dim=2, stats=st)
        z[name] = policy.normalizer.normalize("observation.state", x)[0, 0].item()
    assert abs(z["raw"]) > 10 and abs(z["floored"]) < 1
