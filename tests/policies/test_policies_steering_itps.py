"""ITPS steering: the alignment math against hand computations and autograd, each strategy moves a tiny policy's
chunk toward the goal (and does not without the steering), clear errors for bad input, export round trip."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from armflow.policies import load_policy, make_policy
from armflow.policies.steering import steer
from armflow.policies.steering import itps_math as im

STATE, ENV = "observation.state", "observation.environment_state"
P0 = (0.5, 0.0, 0.2)
GOAL = (0.32, -0.22, 0.03)  # far from where an untrained policy's chunk goes from P0


def tiny(ptype="flow", action_dim=7, action_range=1.0):
    torch.manual_seed(0)
    spec = {STATE: (8,), ENV: (20,)}
    stats = {k: {"min": -np.ones(s[0]), "max": np.ones(s[0])} for k, s in spec.items()}
    stats["action"] = {"min": -action_range * np.ones(action_dim), "max": action_range * np.ones(action_dim)}
    extra = {} if ptype == "gaussian" else dict(mlp_width=32, mlp_blocks=1, time_dim=8, num_inference_steps=5)
    return make_policy(ptype, spec, action_dim, stats, horizon=16, n_action_steps=8, state_hidden_dim=16,
                       state_feature_dim=8, **extra).eval()


def obs(b=16):
    gen = torch.Generator().manual_seed(1)
    o = {STATE: torch.rand(b, 2, 8, generator=gen) * 0.2 - 0.1, ENV: torch.rand(b, 2, 20, generator=gen) * 2 - 1}
    o[STATE][..., :3] = torch.tensor(P0)
    return o


# ------------------------------------------------------------------------------------------------- math
def test_point_alignment_and_its_gradient_match_a_hand_computation():
    """Straight down at full speed from z = 0.2: p_t = (0.5, 0, 0.2 - 0.05 t); the goal 0.1 m to the side on the
    table is closest at t = 4 (z = 0), D = 0.1; dD/dp_4 = (0, -1, 0), so dD/da_s = 0.05 (0, -1, 0) for s <= 3."""
    a = torch.zeros(1, 8, 7)
    a[..., 2] = -1.0
    path = im.ee_path(torch.tensor([P0]), a, 0.05)
    torch.testing.assert_close(path[0, :, 2], 0.2 - 0.05 * torch.arange(1, 9.0))
    d, dpath = im.alignment(path, torch.tensor([[[0.5, 0.1, 0.0]]]))
    torch.testing.assert_close(d, torch.tensor([0.1]))
    grad = im.action_grad(dpath, 0.05, 7)
    expect = torch.zeros(1, 8, 7)
    expect[0, :4, 1] = -0.05
    torch.testing.assert_close(grad, expect)


def test_closed_form_gradients_equal_autograd_for_points_and_sketches():
    gen = torch.Generator().manual_seed(3)
    a = (torch.rand(4, 10, 7, generator=gen) * 2 - 1).requires_grad_(True)
    p0 = torch.tensor([P0] * 4)
    sketch = torch.tensor([[[0.5, 0.0, 0.15], [0.5, 0.1, 0.1], [0.4, 0.1, 0.05]]])
    for goal in (torch.tensor([[[0.45, 0.1, 0.05]]]), sketch):
        d, dpath = im.alignment(im.ee_path(p0, a, 0.05), goal)
        d.sum().backward()
        torch.testing.assert_close(im.action_grad(dpath, 0.05, 7), a.grad, atol=1e-6, rtol=1e-5)
        a.grad = None


def test_sketch_distance_is_dtw_by_hand():
    """Path (0,0,0), (1,0,0), (2,0,0) [shifted into the box by +p]; sketch (0,1,0), (2,1,0): the optimal warping
    pairs (0,0), (1,0) or (1,1), (2,1): costs 1, sqrt(2), 1 -> mean (2 + sqrt 2) / 3."""
    p = torch.tensor([0.3, -0.2, 0.1])
    path = (torch.tensor([[[0.0, 0, 0], [1, 0, 0], [2, 0, 0]]]) * 0.1) + p
    sketch = (torch.tensor([[[0.0, 1, 0], [2, 1, 0]]]) * 0.1) + p
    d, _ = im.alignment(path, sketch)
    torch.testing.assert_close(d, torch.tensor([(2 + 2 ** 0.5) / 3 * 0.1]))


def test_goal_chunk_reaches_a_point_after_n_reach_steps_and_holds():
    chunk = im.goal_chunk(torch.tensor([P0]), torch.tensor([[[0.5, 0.1, 0.1]]]), 16, 8, 0.05, 7)
    path = im.ee_path(torch.tensor([P0]), chunk, 0.05)
    torch.testing.assert_close(path[0, 7:], torch.tensor([[0.5, 0.1, 0.1]]).expand(9, 3), atol=1e-6, rtol=0)
    assert chunk[..., 3:].abs().max() == 0


# ------------------------------------------------------------------------------------------------- steering
@pytest.mark.parametrize("strategy,ptype", [("pr", "flow"), ("bi", "flow"), ("gd", "flow"), ("ss", "flow"),
                                            ("gd", "diffusion"), ("bi", "diffusion")])
def test_each_strategy_moves_the_chunk_toward_the_goal(strategy, ptype):
    policy, o = tiny(ptype), obs()
    noise = policy.default_noise(16, torch.Generator().manual_seed(0))
    params = {"type": "itps", "goal": list(GOAL), "strategy": strategy, "K": 32, "guidance": 60.0, "mcmc_steps": 2}
    steered = steer(policy, params)
    p0 = o[STATE][:, -1, :3]
    d_base = steered.distance(p0, policy.predict_chunk(o, noise)).mean()
    d_steered = steered.distance(p0, steered.predict_chunk(o, noise)).mean()
    # pr picks the best of the untrained net's own spread, bi only biases where sampling starts (the net's
    # remaining levels wander): smaller margins than guidance, which pushes every level
    margin = {"pr": 0.85, "bi": 0.9}.get(strategy, 0.7)
    assert d_steered < margin * d_base, (strategy, float(d_steered), float(d_base))
    diag = steered.diagnostics[-1]
    assert len(diag["alignment_m"]) == 16 and diag["hook_ms"] > 0
    if strategy in ("gd", "ss"):
        assert len(diag["guidance_norm"]) >= policy.num_inference_steps and diag["guidance_norm"][0] > 0
    if strategy == "pr":
        assert np.shape(diag["scores"]) == (16, 32) and len(diag["chosen"]) == 16


def test_zero_guidance_is_the_unsteered_policy_bit_for_bit():
    """The guided loop with w = 0 is the plain sampler, so the gap above is the steering's doing."""
    policy, o = tiny(), obs(4)
    noise = policy.default_noise(4, torch.Generator().manual_seed(0))
    steered = steer(policy, {"type": "itps", "goal": list(GOAL), "strategy": "gd", "guidance": 0.0})
    assert torch.equal(steered.predict_chunk(o, noise), policy.predict_chunk(o, noise))


def test_set_goal_per_row_steers_each_row_to_its_own_goal():
    policy, o = tiny(), obs(2)
    steered = steer(policy, {"type": "itps", "strategy": "gd", "guidance": 40.0})
    goals = np.array([[0.3, 0.25, 0.05], [0.3, -0.25, 0.05]])
    steered.set_goal(goals, per_row=True)
    chunk = steered.predict_chunk(o, policy.default_noise(2, torch.Generator().manual_seed(0)))
    end_y = im.ee_path(o[STATE][:, -1, :3], chunk, 0.05)[:, :, 1].mean(1)
    assert end_y[0] > end_y[1]


# ------------------------------------------------------------------------------------------------- errors
def test_bad_input_gets_a_clear_error():
    policy = tiny()
    with pytest.raises(ValueError, match=r"point \[0.9, 0.0, 0.1\] is outside the workspace box x \[0.25, 0.75\]"):
        steer(policy, {"type": "itps", "goal": [0.9, 0.0, 0.1]})
    with pytest.raises(ValueError, match=r"point \[0.5, 0.0, -0.2\] is outside"):
        steer(policy, {"type": "itps", "goal": [[0.5, 0.0, 0.1], [0.5, 0.0, -0.2]]})
    with pytest.raises(ValueError, match=r"expected a point \[x, y, z\]"):
        steer(policy, {"type": "itps", "goal": [0.5, 0.0]})
    with pytest.raises(ValueError, match="strategy='xx'.*pr, bi, gd, ss"):
        steer(policy, {"type": "itps", "goal": list(GOAL), "strategy": "xx"})
    with pytest.raises(ValueError, match="action_dim is 2"):
        steer(tiny(action_dim=2), {"type": "itps", "goal": list(GOAL)})
    with pytest.raises(ValueError, match="position actions range over"):
        steer(tiny(action_range=2.5), {"type": "itps", "goal": list(GOAL)})
    with pytest.raises(ValueError, match="'gaussian'"):
        steer(tiny("gaussian"), {"type": "itps", "goal": list(GOAL)})


def test_no_goal_yet_samples_as_the_base_policy():
    """The viewer before its first click: the policy as trained, and the diagnostics say no goal."""
    policy, o = tiny(), obs(2)
    steered = steer(policy, {"type": "itps", "strategy": "ss"})
    noise = policy.default_noise(2, torch.Generator().manual_seed(0))
    assert torch.equal(steered.predict_chunk(o, noise), policy.predict_chunk(o, noise))
    assert steered.diagnostics[-1]["goal_m"] is None
    steered.set_goal(list(GOAL))
    steered.predict_chunk(o, noise)
    assert steered.diagnostics[-1]["goal_m"] == pytest.approx(list(GOAL))


# ------------------------------------------------------------------------------------------------- export
def test_spec_round_trips_through_save_pretrained_and_the_steering_registry(tmp_path):
    """save_pretrained -> the base (load_policy(steered=False)) + the export loader of the STEERING registry, which
    is what load_policy calls for a registered kind."""
    import json

    from armflow.policies.steering import load_steered_export

    policy, o = tiny(), obs(2)
    spec = {"type": "itps", "goal": [[0.5, 0.0, 0.15], [0.4, 0.1, 0.05]], "strategy": "ss", "guidance": 30.0,
            "mcmc_steps": 2, "max_dpos_m": 0.04}
    steered = steer(policy, spec)
    out = steered.save_pretrained(tmp_path / "itps")
    saved = json.loads((out / "config.json").read_text())["steering"]
    loaded = load_steered_export(saved["type"], out, load_policy(out, steered=False), saved)
    assert loaded.steering == steered.steering and loaded.steering["goal"] == ((0.5, 0.0, 0.15), (0.4, 0.1, 0.05))
    noise = policy.default_noise(2, torch.Generator().manual_seed(0))
    a = steered.predict_chunk(o, noise)
    torch.rand(3)  # ss's corrector re-noise is seeded by the noise, not by torch's global RNG
    assert torch.equal(steered.predict_chunk(o, noise), a)
    torch.testing.assert_close(loaded.predict_chunk(o, noise), a)


def test_load_policy_returns_the_itps_policy(tmp_path):
    steered = steer(tiny(), {"type": "itps", "goal": list(GOAL), "strategy": "pr", "K": 4})
    assert load_policy(steered.save_pretrained(tmp_path / "itps")).steering == steered.steering


def test_an_arm_already_at_the_point_is_not_steered():
    """From p_0 at the goal (the grasp), a chunk lifting away has D = 0 and a zero gradient: the lift is the
    policy's own."""
    p0, a = torch.tensor([[0.5, 0.1, 0.02]]), torch.zeros(1, 8, 7)
    a[..., 2] = 1.0
    d, dpath = im.alignment(im.ee_path(p0, a, 0.05), torch.tensor([[[0.5, 0.1, 0.02]]]), p0)
    assert float(d) == 0.0 and dpath.abs().max() == 0


def test_radius_makes_the_goal_a_ball():
    path = torch.tensor([[[0.5, 0.0, 0.1], [0.5, 0.0, 0.05]]])
    d, dpath = im.alignment(path, torch.tensor([[[0.5, 0.0, 0.02]]]), None, 0.02)
    torch.testing.assert_close(d, torch.tensor([0.01]))
    d, dpath = im.alignment(path, torch.tensor([[[0.5, 0.0, 0.02]]]), None, 0.04)
    assert float(d) == 0.0 and dpath.abs().max() == 0


def test_the_run_summary_reports_alignment_and_guidance_means():
    from armflow.workflows.steering import steering_summary

    policy, o = tiny(), obs(2)
    steered = steer(policy, {"type": "itps", "goal": list(GOAL), "strategy": "gd"})
    steered.predict_chunk(o, policy.default_noise(2, torch.Generator().manual_seed(0)))
    diag = steering_summary(steered, {"spec": steered.steering})["diagnostics"]
    assert diag["alignment_m_mean"] == pytest.approx(np.mean(steered.diagnostics[0]["alignment_m"]))
    assert diag["guidance_norm_mean"] > 0 and diag["chunk_calls"] == 1
