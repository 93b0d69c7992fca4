"""Lockstep ``armflow deploy`` through the real bridge gives ``armflow evaluate``'s episodes when evaluate runs
under the bridge's safety limits (``limits=auto``: ``armflow.control.sim_limits``): the same per-episode success,
length, return and safety clamps, and the same chunk after chunk, with and without a steering spec (V-GPS with an
untrained tiny critic). The policy asks for full-range actions, which the safety layer clamps, so the bare sim
(no limits) runs other episodes: the test fails if evaluate stops applying the layer as the servo does."""
import json

import numpy as np
import pytest
import torch

from armflow.control.client import BridgeClient
from armflow.control.launch import ServerProcess
from armflow.control.limits import LimitsError
from armflow.control.server import ServerConfig

pytestmark = pytest.mark.timeout(300)
SEED, EPISODES, STEPS = 100_000, 3, 16
ENV = {"max_episode_steps": STEPS}  # short episodes on both sides: served task and evaluated task


@pytest.fixture(scope="module")
def bridge(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("equiv")
    cfg = ServerConfig(robot="sim_panda", robot_options={"task": "lift", "env": ENV}, endpoint=f"ipc://{tmp}/lift",
                       lockstep=True)
    with ServerProcess(cfg) as sp:
        yield sp


@pytest.fixture(scope="module")
def policy():
    """An untrained flow policy for lift's state (8 + 10) whose actions span the full [-1, 1] range."""
    from armflow.policies import make_policy

    torch.manual_seed(0)
    unit = lambda d: {"min": -np.ones(d), "max": np.ones(d), "mean": np.zeros(d), "std": np.ones(d)}  # noqa: E731
    keys = {"observation.state": 8, "observation.environment_state": 10}
    stats = {**{k: unit(d) for k, d in keys.items()}, "action": unit(7)}
    return make_policy("flow", {k: (d,) for k, d in keys.items()}, 7, stats, horizon=8, n_action_steps=4,
                       mlp_width=32, mlp_blocks=1, state_hidden_dim=16, state_feature_dim=8, time_dim=8,
                       num_inference_steps=2).eval()


@pytest.fixture
def chunks(monkeypatch):
    """Every chunk ``PolicyRunner.predict`` returns (evaluate and deploy both predict through it), in order."""
    from armflow.workflows.rollout import PolicyRunner

    seen: list[np.ndarray] = []
    predict = PolicyRunner.predict

    def recording(self, *args, **kwargs):
        out = predict(self, *args, **kwargs)
        seen.append(np.array(out, copy=True))
        return out

    monkeypatch.setattr(PolicyRunner, "predict", recording)
    return seen


def _evaluate(policy, limits):
    from armflow.workflows.evaluate import evaluate_policy

    return evaluate_policy(policy, "lift", EPISODES, SEED, n_envs=1, n_workers=0, env_overrides=ENV, progress=False,
                           safety_limits=limits)["per_episode"]


def _deploy(bridge, policy):
    from armflow.workflows.deploy import deploy

    with BridgeClient(bridge.endpoint) as client:
        return deploy(client, policy, EPISODES, SEED)[0]["per_episode"]


@pytest.mark.parametrize("steering", [False, True], ids=["unsteered", "vgps"])
def test_lockstep_deploy_gives_evaluates_episodes_under_the_same_limits(bridge, policy, chunks, steering, tmp_path):
    if steering:
        from armflow.policies.steering import ChunkCritic, steer

        torch.manual_seed(3)
        critic = ChunkCritic.for_policy(policy, hidden=16).save_pretrained(tmp_path / "critic")
        policy = steer(policy, {"type": "vgps", "critic": str(critic), "K": 4})
    evaluated = _evaluate(policy, "auto")
    ev_chunks = chunks[:]
    chunks.clear()
    deployed = _deploy(bridge, policy)
    assert [(e["seed"], e["success"], e["length"]) for e in evaluated] == \
        [(d["seed"], d["success"], d["length"]) for d in deployed]
    # the same states, step for step: the env's reward summed over the episode, and the layer's clamps
    assert [e["return"] for e in evaluated] == pytest.approx([d["return"] for d in deployed], abs=1e-9)
    assert [e["clamps"] for e in evaluated] == [d["clamps"] for d in deployed]
    assert all(sum(d["clamps"].values()) > 0 for d in deployed)  # the layer changed every episode's actions
    assert len(ev_chunks) == len(chunks) == EPISODES * -(-STEPS // policy.n_action_steps)
    np.testing.assert_allclose(np.stack(ev_chunks), np.stack(chunks), rtol=0, atol=1e-6)
    chunks.clear()
    bare = _evaluate(policy, None)  # the bare sim ignores the arm's limits: other states from the first clamp on
    assert [e["return"] for e in bare] != pytest.approx([d["return"] for d in deployed], abs=1e-6)
    assert all("clamps" not in e for e in bare)


def test_evaluate_limits_name_errors_list_the_bundled_files():
    from armflow.control.sim_limits import SafetyLimitedEnv

    with pytest.raises(LimitsError, match=r"limits file .*bogus\.yaml not found; bundled limits: \[.*sim_task_lift"):
        SafetyLimitedEnv("lift", "bogus")


def test_evaluate_cli_limits_writes_the_clamps_and_names_a_bad_file(policy, tmp_path, capsys):
    from armflow.workflows.cli import main as run

    ckpt = policy.save_pretrained(tmp_path / "ckpt")
    common = [f"checkpoint={ckpt}", "episodes=2", "n_envs=1", "video_episodes=0",
              f"+task_overrides.max_episode_steps={STEPS}"]
    assert run(["evaluate", *common, "limits=auto", f"out={tmp_path / 'eval'}"]) == 0
    saved = json.loads((tmp_path / "eval" / "eval.json").read_text())["per_episode"]
    expected = _evaluate(policy, "auto")[:2]
    assert [(r["return"], r["clamps"]) for r in saved] == [(r["return"], r["clamps"]) for r in expected]
    assert run(["evaluate", *common, "limits=bogus", f"out={tmp_path / 'bad'}"]) != 0
    assert "bogus.yaml not found; bundled limits" in capsys.readouterr().err
