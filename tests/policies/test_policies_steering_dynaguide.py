"""DynaGuide steering: the goal score's gradient is the guidance term, guidance moves the sampled chunk's outcome
toward the positive goal (and away from the negative) against the unsteered sample on the same noise, w = 0 is the
base bit for bit, mismatched models and policies are refused, and an export round-trips."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from armflow.policies import load_policy, make_policy
from armflow.policies.steering import LatentDynamics, goal_score, steer

KEY, GAIN = "observation.state", 0.1  # toy transition: s' = s + GAIN * sum of the T_a executed actions


def toy_policy(ptype="flow", n_action_steps=3, action_max=1.0):
    torch.manual_seed(0)
    stats = {KEY: {"min": -np.ones(2), "max": np.ones(2)},
             "action": {"min": -np.full(2, action_max), "max": np.full(2, action_max)}}
    extra = dict(mlp_width=32, mlp_blocks=1, time_dim=8, num_inference_steps=4) if ptype != "gaussian" else {}
    return make_policy(ptype, {KEY: (2,)}, 2, stats, horizon=6, n_action_steps=n_action_steps, state_hidden_dim=16,
                       state_feature_dim=8, **extra).eval()


def toy_dynamics(policy, steps=400):
    """A dynamics model fitted to the toy transition (identity normalisers: normalised = robot units)."""
    torch.manual_seed(0)
    model = LatentDynamics.for_policy(policy, hidden=32, n_layers=2)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(steps):
        s, a = torch.rand(256, 2, 2) * 2 - 1, torch.rand(256, 3, 2) * 2 - 1
        z = s[:, -1] + GAIN * a.sum(1)
        loss = ((model(model.features({KEY: s}), a) - z) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return model.eval(), losses


def goals(tmp_path, model):
    from safetensors.numpy import save_file

    path = tmp_path / "goals.safetensors"
    save_file({f"goals/{KEY}": np.array([[0.6, 0.0]], np.float32),
               f"negatives/{KEY}": np.array([[-0.6, 0.0]], np.float32)}, str(path))
    return str(path)


def two_episodes(root):
    """Episodes of 5 frames whose state x is 10 * episode + t."""
    from armflow.data import LeRobotWriter

    feats = {KEY: {"dtype": "float32", "shape": (2,), "names": None},
             "action": {"dtype": "float32", "shape": (2,), "names": None}}
    with LeRobotWriter(root, fps=20, features=feats) as writer:
        for ep in range(2):
            for t in range(5):
                writer.add_frame({KEY: np.array([10 * ep + t, 0], np.float32), "action": np.zeros(2, np.float32)})
            writer.save_episode(task="x")
    return str(root)


def outcome(obs, chunk):  # the true toy transition of the executed prefix
    return obs[KEY][:, -1] + GAIN * chunk[:, :3].sum(1)


def test_the_dynamics_model_learns_the_toy_transition():
    policy = toy_policy()
    model, losses = toy_dynamics(policy)
    assert np.mean(losses[-20:]) < 0.05 * np.mean(losses[:5])
    s, a = torch.rand(512, 2, 2) * 2 - 1, torch.rand(512, 3, 2) * 2 - 1
    err = (model.predict({KEY: s}, a) - (s[:, -1] + GAIN * a.sum(1))).abs().max()
    assert err < 0.05  # the action's whole effect spans 0.6


@pytest.mark.parametrize("ptype", ["flow", "diffusion"])
def test_guidance_moves_the_outcome_toward_the_positive_goal(tmp_path, ptype):
    policy = toy_policy(ptype)
    model, _ = toy_dynamics(policy)
    path = goals(tmp_path, model)
    gen = torch.Generator().manual_seed(3)
    obs = {KEY: (torch.rand(32, 1, 2, generator=gen) * 0.2 - 0.1).expand(32, 2, 2).contiguous()}
    noise = torch.randn(32, 6, 2, generator=gen)
    base = policy.predict_chunk(obs, noise)
    spec = {"type": "dynaguide", "dynamics": str(model.save_pretrained(tmp_path / "dyn")), "goals": path,
            "negatives": path, "guidance": 4.0, "alpha": 0.5}
    assert torch.equal(steer(policy, {**spec, "guidance": 0.0}).predict_chunk(obs, noise), base)
    steered = steer(policy, spec)
    chunk = steered.predict_chunk(obs, noise)
    goal = torch.tensor([0.6, 0.0])
    d_base, d_steer = (outcome(obs, base) - goal).norm(dim=1), (outcome(obs, chunk) - goal).norm(dim=1)
    assert float(d_steer.mean()) < float(d_base.mean()) - 0.15, (d_base.mean(), d_steer.mean())
    assert float((d_steer < d_base).float().mean()) > 0.9
    diag = steered.diagnostics[-1]
    assert len(diag["guidance_norm"]) == 4 and min(diag["guidance_norm"]) > 0 and len(diag["goal_score"]) == 32
    assert diag["hook_ms"] > 0 and diag["latency_ms"] >= diag["hook_ms"]
    # the negative alone pushes away from it: outcomes move right of the unsteered ones
    away = steer(policy, {**spec, "goals": path, "negatives": ""}).predict_chunk(obs, noise)
    assert float(outcome(obs, away)[:, 0].mean()) > float(outcome(obs, base)[:, 0].mean())


def test_goal_score_gradient_matches_finite_differences():
    torch.manual_seed(1)
    z, pos, neg = torch.randn(3, 4, dtype=torch.float64, requires_grad=True), torch.randn(5, 4, dtype=torch.float64), \
        torch.randn(2, 4, dtype=torch.float64)
    (grad,) = torch.autograd.grad(goal_score(z, pos, neg, 0.7).sum(), z)
    eps, fd = 1e-6, torch.zeros_like(z)
    for i in range(3):
        for j in range(4):
            dz = torch.zeros_like(z)
            dz[i, j] = eps
            fd[i, j] = (goal_score(z + dz, pos, neg, 0.7) - goal_score(z - dz, pos, neg, 0.7))[i] / (2 * eps)
    torch.testing.assert_close(grad, fd, atol=1e-6, rtol=1e-5)


def test_dynaguide_refuses_mismatched_models_and_policies(tmp_path):
    policy = toy_policy()
    model, _ = toy_dynamics(policy, steps=1)
    path, dyn = goals(tmp_path, model), str(model.save_pretrained(tmp_path / "dyn"))
    spec = {"type": "dynaguide", "dynamics": dyn, "goals": path}
    with pytest.raises(ValueError, match=r"dyn/config.json: dynamics n_action_steps=3 but the policy has n_action_"):
        steer(toy_policy(n_action_steps=2), spec)
    with pytest.raises(ValueError, match=r"dyn/model.safetensors: dynamics normaliser action__offset|action__scale"):
        steer(toy_policy(action_max=2.0), spec)
    with pytest.raises(ValueError, match="guidance terms need a sampling loop"):
        steer(toy_policy("gaussian"), spec)
    with pytest.raises(ValueError, match="needs a dynamics model dir"):
        steer(policy, {"type": "dynaguide", "goals": path})
    data = two_episodes(tmp_path / "data")
    with pytest.raises(ValueError, match=r"steering.goals: episodes \[7\] are not in .*data \(2 episodes\)"):
        steer(policy, {**spec, "goals": data, "goal_episodes": [7]})
    ends = steer(policy, {**spec, "goals": data, "goal_frames": 2, "negatives": data, "negative_episodes": [1]})
    np.testing.assert_array_equal(ends.frames["goals"][KEY][:, 0], [3.0, 4.0, 13.0, 14.0])  # last 2 of each
    np.testing.assert_array_equal(ends.frames["negatives"][KEY][:, 0], [13.0, 14.0])


def test_export_round_trips_with_its_model_and_goal_frames(tmp_path):
    policy = toy_policy()
    model, _ = toy_dynamics(policy, steps=50)
    path = goals(tmp_path, model)
    steered = steer(policy, {"type": "dynaguide", "dynamics": str(model.save_pretrained(tmp_path / "dyn")),
                             "goals": path, "negatives": path, "guidance": 0.8, "alpha": 0.3})
    loaded = load_policy(steered.save_pretrained(tmp_path / "export"))
    assert type(loaded).__name__ == "DynaGuidePolicy" and loaded.spec.guidance == 0.8 and loaded.spec.alpha == 0.3
    assert loaded.steering["goals"].endswith("steering_goals.safetensors")
    obs, noise = {KEY: torch.zeros(2, 2, 2)}, torch.randn(2, 6, 2)
    torch.testing.assert_close(loaded.predict_chunk(obs, noise), steered.predict_chunk(obs, noise), atol=1e-6, rtol=0)
    assert type(load_policy(tmp_path / "export", steered=False)).__name__ == "FlowPolicy"
