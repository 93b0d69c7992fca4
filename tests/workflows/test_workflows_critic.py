"""`armflow critic`: chunk transitions from recorded episodes, Cal-QL and IQL runs through the CLI, and the saved
critic steering the policy it was trained for in `armflow evaluate`."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from armflow.data import LeRobotDataset
from armflow.policies.steering import load_critic
from armflow.workflows.cli import main as run
from armflow.workflows.critic import chunk_transitions

from .test_workflows_steering import KEY, toy_policy


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("critic")
    _, ckpt = toy_policy(tmp)
    assert run(["evaluate", f"checkpoint={ckpt}", "task=toy2d", "episodes=6", "n_envs=3", "video_episodes=0",
                "+task_overrides.max_episode_steps=20", f"record={tmp / 'rec'}", f"out={tmp / 'eval'}"]) == 0
    return tmp, ckpt, json.loads((tmp / "eval" / "eval.json").read_text())


def test_chunk_transitions_cover_every_episode_at_chunk_boundaries(recorded):
    tmp, _, result = recorded
    ds = LeRobotDataset(tmp / "rec")
    tr = chunk_transitions(ds, (KEY,), t_o=2, t_a=3, gamma=0.5)
    lengths = [int(hi - lo) for lo, hi in ds.episode_ranges]
    assert len(tr["reward"]) == sum(-(-n // 3) for n in lengths) and tr["done"].sum() == ds.num_episodes
    assert tr["obs"][KEY].shape == (len(tr["reward"]), 2, 2) and tr["action"].shape == (len(tr["reward"]), 3, 2)
    assert tr["reward"].sum() == sum(r["success"] for r in result["per_episode"])
    ep0 = ds.episode(0)  # first transition: window padded with the first obs, the first T_a actions
    np.testing.assert_array_equal(tr["obs"][KEY][0], ep0[KEY][[0, 0]])
    np.testing.assert_array_equal(tr["action"][0], ep0["action"][:3])
    np.testing.assert_array_equal(tr["next_obs"][KEY][0], ep0[KEY][[2, 3]])
    first = -(-lengths[0] // 3)  # mc return of episode 0: discounted reward-to-go in chunks
    expect = [sum(tr["reward"][j] * 0.5 ** (j - i) for j in range(i, first)) for i in range(first)]
    np.testing.assert_allclose(tr["mc_return"][:first], expect)
    env = chunk_transitions(ds, (KEY,), t_o=2, t_a=3, gamma=0.5, reward="env")  # dense: summed next.reward
    ends = np.cumsum([-(-n // 3) for n in lengths])
    sums = np.split(env["reward"], ends[:-1])
    np.testing.assert_allclose(sorted(float(x.sum()) for x in sums), sorted(r["return"] for r in result["per_episode"]),
                               rtol=1e-5)


@pytest.mark.parametrize("method", ["calql", "iql"])
def test_critic_cli_trains_saves_and_steers_its_policy(recorded, method):
    tmp, ckpt, _ = recorded
    out = tmp / f"critic_{method}"
    assert run(["critic", f"dataset=[{tmp / 'rec'}]", f"checkpoint={ckpt}", f"method={method}", "steps=60",
                "batch_size=32", "hidden=16", "n_candidates=3", "log_every=20", f"out={out}"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == method and np.isfinite(summary["final"]["losses/total"])
    critic = load_critic(out / "critic")
    assert critic.cfg.method == method and critic.cfg.n_action_steps == 3
    meta = json.loads((out / "critic" / "config.json").read_text())
    assert meta["trained"]["policy"] == str(ckpt) and set(meta["normalizer"]) == {KEY, "action"}
    assert run(["evaluate", f"checkpoint={ckpt}", "task=toy2d", "episodes=2", "n_envs=2", "video_episodes=0",
                "steering.type=vgps", f"steering.critic={out / 'critic'}", "steering.K=3",
                f"out={tmp / f'steered_{method}'}"]) == 0


def test_critic_needs_a_dataset_with_the_policys_keys(recorded, capsys):
    tmp, ckpt, _ = recorded
    other = tmp / "wrong_keys"
    from armflow.data import LeRobotWriter

    with LeRobotWriter(other, fps=20, features={"observation.other": {"dtype": "float32", "shape": (2,), "names": None},
                                               "action": {"dtype": "float32", "shape": (2,), "names": None}}) as w:
        w.add_frame({"observation.other": np.zeros(2, np.float32), "action": np.zeros(2, np.float32)})
        w.save_episode(task="x")
    assert run(["critic", f"dataset={other}", f"checkpoint={ckpt}", "steps=1", f"out={tmp / 'bad'}"]) == 1
    err = capsys.readouterr().err
    assert str(other) in err and "observation.state" in err and "next.success" in err
    torch.manual_seed(0)


@pytest.mark.slow
def test_bench_vgps_runs_every_stage_at_toy_scale_and_resumes(tmp_path, capsys):
    args = ["bench", "vgps", "task=toy2d", "demos=2", "train_steps=20", "rollouts=3", "critic_steps=5", "Ks=[2]",
            "episodes=2", "n_envs=2", f"out={tmp_path}"]
    assert run(args) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1].removeprefix("BENCH_JSON: "))
    for key in ("base_success", "calql_k2_success", "calql_k2_gain", "iql_k2_success"):
        assert key in result
    assert LeRobotDataset(tmp_path / "rollouts").num_episodes == 3
    for d in ("critic_iql", "critic_iql_seed1", "critic_iql_seed2"):  # the default ensemble: 3 seeds per method
        assert (tmp_path / d / "critic" / "model.safetensors").is_file()
    assert (tmp_path / "vgps_iql_k2_ens3" / "eval.json").is_file()
    assert run(args) == 0  # every stage cached
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1].removeprefix("BENCH_JSON: ")) == result


@pytest.mark.slow
def test_bench_cfg_conditions_demos_on_the_lifted_cube_and_reports_alignment_per_w(tmp_path, capsys):
    """Toy scale (a few demos, a few training steps): the stages run, the condition column is the lifted cube."""
    from armflow.workflows.bench_cfg import CONDITION

    assert run(["bench", "cfg", "demos=4", "train_steps=10", "ws=[0.0,2.0]", "episodes=2", "n_envs=2",
                f"out={tmp_path}"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1].removeprefix("BENCH_JSON: "))
    assert sum(result["demos_per_cube"]) == 4 and {"cfg_w0_success", "cfg_w2_alignment"} <= set(result)
    ds = LeRobotDataset(tmp_path / "demos")
    for i in range(ds.num_episodes):
        ep = ds.episode(i)
        lifted = int(np.argmax(ep["observation.environment_state"][-1, [2, 12]]))
        assert (ep[CONDITION] == np.eye(2)[lifted]).all()
    meta = json.loads((tmp_path / "pretrain" / "checkpoint" / "config.json").read_text())
    assert meta["config"]["condition_key"] == CONDITION and meta["config"]["condition_dropout"] == 0.2


def test_bench_vgps_refuses_an_empty_ensemble(tmp_path, capsys):
    assert run(["bench", "vgps", "ensemble=0", f"out={tmp_path}"]) != 0
    assert "ensemble=0; expected >= 1" in capsys.readouterr().err
