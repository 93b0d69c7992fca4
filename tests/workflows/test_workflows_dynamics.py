"""`armflow dynamics`: samples at every frame of every episode, the CLI learns a toy transition (loss falls, the
held-out error far below "nothing changes"), the saved model steers its policy through `armflow evaluate`, and a
dataset or policy that does not fit is refused naming the file and key."""
from __future__ import annotations

import json

import numpy as np
import pytest

from armflow.data import LeRobotDataset, LeRobotWriter
from armflow.policies.steering import load_dynamics, steer
from armflow.workflows.cli import main as run
from armflow.workflows.dynamics import dynamics_samples

from .test_workflows_steering import KEY, toy_policy

GAIN = 0.05  # toy transition: s_{t+1} = s_t + GAIN * a_t


def toy_dataset(root, episodes=30, length=30, action_dim=2, seed=0):
    rng = np.random.default_rng(seed)
    feats = {KEY: {"dtype": "float32", "shape": (2,), "names": None},
             "action": {"dtype": "float32", "shape": (action_dim,), "names": None}}
    with LeRobotWriter(root, fps=20, features=feats) as writer:
        for _ in range(episodes):
            s = rng.uniform(-0.5, 0.5, 2).astype(np.float32)
            for _ in range(length):
                a = np.concatenate([rng.uniform(0.1, 0.5, 1), rng.uniform(-0.3, 0.3, action_dim - 1)])
                a = a.astype(np.float32)
                writer.add_frame({KEY: s, "action": a})
                s = (s + GAIN * a[:2]).astype(np.float32)
            writer.save_episode(task="toy")
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dynamics")
    policy, ckpt = toy_policy(tmp)
    data = toy_dataset(tmp / "data")
    out = tmp / "run"
    assert run(["dynamics", f"dataset={data}", f"checkpoint={ckpt}", "steps=600", "batch_size=64", "hidden=64",
                "n_layers=2", "lr=0.003", "log_every=100", "val_fraction=0.25", f"out={out}"]) == 0
    return tmp, policy, ckpt, data, out


def test_samples_cover_every_frame_with_windows_chunks_and_the_frame_t_a_later(tmp_path):
    ds = LeRobotDataset(toy_dataset(tmp_path / "d", episodes=2, length=5))
    s = dynamics_samples(ds, (KEY,), t_o=2, t_a=3, episodes=[0, 1])
    assert s["obs"][KEY].shape == (10, 2, 2) and s["action"].shape == (10, 3, 2) and s["target"][KEY].shape == (10, 2)
    ep = ds.episode(0)
    np.testing.assert_array_equal(s["obs"][KEY][0], ep[KEY][[0, 0]])
    np.testing.assert_array_equal(s["action"][3], ep["action"][[3, 4, 4]])  # the last action repeated past the end
    np.testing.assert_array_equal(s["target"][KEY][1], ep[KEY][4])
    np.testing.assert_array_equal(s["target"][KEY][4], ep[KEY][4])


def test_dynamics_cli_learns_the_toy_transition(trained):
    tmp, policy, ckpt, _, out = trained
    summary = json.loads((out / "summary.json").read_text())
    final = summary["final"]
    assert final["losses/mse"] < 0.2 * summary["first_mse"]
    assert final["eval/val_mse"] < 0.1 * final["eval/val_mse_static"], final
    model = load_dynamics(out / "dynamics")
    assert model.cfg.n_action_steps == 3 and tuple(model.cfg.embed_keys) == (KEY,)
    meta = json.loads((out / "dynamics" / "config.json").read_text())
    assert meta["trained"]["policy"] == str(ckpt) and set(meta["normalizer"]) == {KEY, "action"}


def test_trained_model_steers_its_policy_in_evaluate(trained):
    tmp, _, ckpt, data, out = trained
    assert run(["evaluate", f"checkpoint={ckpt}", "task=toy2d", "episodes=2", "n_envs=2", "video_episodes=0",
                "steering.type=dynaguide", f"steering.dynamics={out / 'dynamics'}", f"steering.goals={data}",
                "steering.goal_episodes=[0,1]", "steering.guidance=2.0", f"out={tmp / 'eval'}"]) == 0
    result = json.loads((tmp / "eval" / "eval.json").read_text())
    assert result["steering"]["spec"]["type"] == "dynaguide" and result["steering"]["spec"]["guidance"] == 2.0
    assert result["steering"]["diagnostics"]["hook_ms_p50"] > 0


def test_dynamics_refuses_data_and_models_that_do_not_fit(trained, capsys):
    tmp, policy, ckpt, _, out = trained
    wide = toy_dataset(tmp / "wide", episodes=2, length=4, action_dim=3)
    assert run(["dynamics", f"dataset={wide}", f"checkpoint={ckpt}", "steps=1", f"out={tmp / 'bad'}"]) == 1
    err = capsys.readouterr().err
    assert f"{wide}/meta/info.json" in err and "features['action'].shape = (3,)" in err and "(2,)" in err
    other, _ = toy_policy(tmp, name="other")
    other.n_action_steps = 2
    with pytest.raises(ValueError, match="config.json: dynamics n_action_steps=3 but the policy has n_action_steps=2"):
        steer(other, {"type": "dynaguide", "dynamics": str(out / "dynamics"), "goals": str(tmp / "data")})


def test_bench_steering_reports_dynaguide_latency(tmp_path, capsys):
    assert run(["bench", "steering", "iters=2", "warmup=1", "Ks=[2]", f"out={tmp_path}"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1].removeprefix("BENCH_JSON: "))
    assert result["dynaguide_p50_ms"] > 0
    assert result["dynaguide_ratio"] == pytest.approx(result["dynaguide_p50_ms"] / result["base_p50_ms"])
