"""Steering as data (armflow.policies.steering): the Policy contract kept, V-GPS reranking, the critic's round trip
and mismatch errors, the offline critic losses, GPC composition and steered exports."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from armflow.configs import ConfigError
from armflow.policies import load_policy, make_policy
from armflow.policies.steering import (ChunkCritic, GPCConfig, GPCPolicy, calql_loss, iql_loss, load_critic, pick_candidates, steer,
                                       summarise_diagnostics, td_target)

KEY = "observation.state"


def tiny(ptype="flow", seed=0, action_dim=2, horizon=6, lo=-1.0, steps=3):
    torch.manual_seed(seed)
    unit = lambda d, a: {"min": a * np.ones(d), "max": np.ones(d), "mean": np.zeros(d), "std": np.ones(d)}  # noqa
    stats = {KEY: unit(3, -1.0), "action": unit(action_dim, lo)}
    extra = {} if ptype == "gaussian" else dict(mlp_width=32, mlp_blocks=1, time_dim=8, num_inference_steps=steps)
    return make_policy(ptype, {KEY: (3,)}, action_dim, stats, horizon=horizon, n_action_steps=3, n_obs_steps=2,
                       state_hidden_dim=16, state_feature_dim=8, **extra).eval()


def obs(b=2, seed=1):
    return {KEY: torch.randn(b, 2, 3, generator=torch.Generator().manual_seed(seed))}


@pytest.fixture
def critic_dir(tmp_path):
    policy = tiny()
    torch.manual_seed(3)
    return policy, ChunkCritic.for_policy(policy, hidden=16).save_pretrained(tmp_path / "critic")


def test_vgps_keeps_the_policy_contract_and_is_deterministic_given_noise(critic_dir):
    policy, path = critic_dir
    steered = steer(policy, {"type": "vgps", "critic": str(path), "K": 4})
    for attr in ("n_obs_steps", "horizon", "n_action_steps", "obs_spec", "action_dim", "policy_type"):
        assert getattr(steered, attr) == getattr(policy, attr)
    noise = steered.default_noise(2, torch.Generator().manual_seed(0))
    assert noise.shape == (2, 4, 6, 2)
    a, b = steered.predict_chunk(obs(), noise), steered.predict_chunk(obs(), noise)
    assert a.shape == (2, 6, 2) and torch.equal(a, b)
    assert not torch.equal(a, steered.predict_chunk(obs(), steered.default_noise(2, torch.Generator().manual_seed(9))))
    flat = torch.randn(2, 6, 2)  # a (B, T_p, D_a) noise is also a deterministic function
    assert torch.equal(steered.predict_chunk(obs(), flat), steered.predict_chunk(obs(), flat))
    summary = summarise_diagnostics(steered.diagnostics)
    assert summary["chunk_calls"] == 5 and summary["chunks"] == 10 and len(summary["chosen_counts"]) == 4


def test_vgps_executes_the_argmax_of_a_hand_made_q(critic_dir):
    policy, path = critic_dir
    steered = steer(policy, {"type": "vgps", "critic": str(path), "K": 8})
    steered.score = lambda o, cands: -(cands[:, :, 0, 0] - 0.3).abs()  # Q: first action's x near 0.3
    noise = steered.default_noise(2, torch.Generator().manual_seed(4))
    chosen = steered.predict_chunk(obs(), noise)
    cands = policy.predict_chunk({KEY: obs()[KEY].repeat_interleave(8, 0)}, noise.reshape(16, 6, 2)).reshape(2, 8, 6, 2)
    best = (cands[:, :, 0, 0] - 0.3).abs().argmin(1)
    torch.testing.assert_close(chosen, cands[torch.arange(2), best], atol=1e-5, rtol=0)  # batch-size rounding
    assert steered.diagnostics[-1]["chosen"] == best.tolist()


@pytest.mark.parametrize("ptype", ["flow", "diffusion"])
def test_vgps_score_step_scores_early_estimates_and_finishes_the_picked_noise_as_the_base_would(ptype, tmp_path):
    policy = tiny(ptype, steps=4)
    torch.manual_seed(3)
    path = ChunkCritic.for_policy(policy, hidden=16).save_pretrained(tmp_path / "critic")
    steered = steer(policy, {"type": "vgps", "critic": str(path), "K": 8, "score_step": 1})
    seen = []
    steered.score = lambda o, cands: seen.append(cands.clone()) or -(cands[:, :, 0, 0] - 0.3).abs()
    noise = steered.default_noise(2, torch.Generator().manual_seed(4))
    chunk = steered.predict_chunk(obs(), noise)
    chosen = steered.diagnostics[-1]["chosen"]
    # the executed chunk is the base policy's own chunk from the picked candidate's noise (4 steps, not 1)
    torch.testing.assert_close(chunk, policy.predict_chunk(obs(), noise[torch.arange(2), chosen]), atol=1e-5, rtol=0)
    finished = policy.predict_chunk({KEY: obs()[KEY].repeat_interleave(8, 0)}, noise.reshape(16, 6, 2)).reshape(2, 8, 6, 2)
    assert not torch.allclose(seen[0], finished, atol=1e-3)  # the critic saw the step-1 estimates, not the chunks
    assert chosen == (seen[0][:, :, 0, 0] - 0.3).abs().argmin(1).tolist()
    full = steer(policy, {"type": "vgps", "critic": str(path), "K": 8, "score_step": 4})  # all steps: scores chunks
    full.score = lambda o, cands: -(cands[:, :, 0, 0] - 0.3).abs()
    torch.testing.assert_close(full.predict_chunk(obs(), noise), finished[torch.arange(2), (finished[:, :, 0, 0] - 0.3)
                               .abs().argmin(1)], atol=1e-5, rtol=0)
    for bad in (0, 5):
        with pytest.raises(ValueError, match=f"steering.score_step={bad}"):
            steer(policy, {"type": "vgps", "critic": str(path), "score_step": bad})


def test_softmax_picks_follow_softmax_of_q_over_beta():
    scores = torch.tensor([[0.0, 1.0, 2.0]]).repeat(20000, 1)
    picks = pick_candidates(scores, 0.5, torch.rand(20000, generator=torch.Generator().manual_seed(0)))
    freq = np.bincount(picks.numpy(), minlength=3) / 20000
    np.testing.assert_allclose(freq, torch.softmax(scores[0] / 0.5, 0).numpy(), atol=0.015)
    assert torch.equal(pick_candidates(scores[:2], 0.0), torch.tensor([2, 2]))


def test_critic_round_trip_and_mismatch_errors(critic_dir, tmp_path):
    policy, path = critic_dir
    critic = load_critic(path)
    cands = torch.randn(2, 5, 6, 2)
    torch.manual_seed(3)
    fresh = ChunkCritic.for_policy(policy, hidden=16)
    assert torch.equal(critic.score(obs(), cands), fresh.score(obs(), cands))
    cases = {"action_dim=2": tiny(action_dim=3), "horizon=6": tiny(horizon=8), "normaliser": tiny(lo=-2.0)}
    for expected, other in cases.items():
        with pytest.raises(ValueError, match="critic") as err:
            steer(other, {"type": "vgps", "critic": str(path)})
        assert str(path) in str(err.value) and (expected.split("=")[0] in str(err.value))
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_critic(tmp_path)


def test_bad_specs_fail_naming_the_key(critic_dir):
    policy, path = critic_dir
    with pytest.raises(ConfigError, match="valid: vgps, gpc"):
        steer(policy, {"type": "nope"})
    with pytest.raises(ConfigError, match="unknown config keys \\['k'\\].*Valid keys: critic, K, beta, score_step"):
        steer(policy, {"type": "vgps", "critic": str(path), "k": 4})
    with pytest.raises(ValueError, match="sampled policy"):
        steer(tiny("gaussian"), {"type": "vgps", "critic": str(path)})
    with pytest.raises(ValueError, match="sampling loop"):
        GPCPolicy(tiny("gaussian"), GPCConfig(("member",), (1.0, 0.0)), members=[tiny("gaussian")])


def _fit(loss_fn, params, steps=150):
    opt = torch.optim.Adam(params, lr=1e-2)
    first = None
    for _ in range(steps):
        loss, terms = loss_fn()
        first = terms["losses/total"] if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    return first, loss_fn()[1]["losses/total"]


def test_calql_and_iql_losses_decrease_on_a_tiny_batch():
    torch.manual_seed(0)
    policy = tiny()
    critic = ChunkCritic.for_policy(policy, hidden=16)
    feat, act = torch.randn(32, critic.obs_dim), torch.randn(32, critic.act_dim).clamp(-1, 1)
    ood = torch.rand(32 * 4, critic.act_dim) * 2 - 1
    reward, done, mc = (torch.rand(32) < 0.3).float(), (torch.rand(32) < 0.2).float(), torch.rand(32)
    y = td_target(reward, done, 0.9, torch.full((32,), 0.5))

    def calql():
        q_ood = critic.q_values(feat.repeat_interleave(4, 0), ood).reshape(2, 32, 4)
        return calql_loss(critic.q_values(feat, act), y, q_ood, mc, alpha=1.0)

    def iql():
        return iql_loss(critic.q_values(feat, act), critic.v.forward(feat), reward + mc, y, tau=0.7)

    for fn in (calql, iql):
        first, last = _fit(fn, critic.parameters())
        assert last < 0.5 * first, (fn.__name__, first, last)


def test_gpc_with_weights_one_zero_is_the_first_policy_bit_for_bit_and_exports_load(tmp_path):
    first, second = tiny(seed=0), tiny(seed=1)
    second.save_pretrained(tmp_path / "second")
    noise = torch.randn(2, 6, 2)
    mixed = steer(first, {"type": "gpc", "policies": [str(tmp_path / "second")], "weights": [1.0, 0.0]})
    assert torch.equal(mixed.predict_chunk(obs(), noise), first.predict_chunk(obs(), noise))
    half = steer(first, {"type": "gpc", "policies": [str(tmp_path / "second")], "weights": [0.5, 0.5]})
    out = half.predict_chunk(obs(), noise)
    assert not torch.equal(out, first.predict_chunk(obs(), noise))
    loaded = load_policy(half.save_pretrained(tmp_path / "export"))
    assert type(loaded).__name__ == "GPCPolicy" and torch.equal(loaded.predict_chunk(obs(), noise), out)
    assert json.loads((tmp_path / "export" / "config.json").read_text())["steering"]["type"] == "gpc"
    tiny(seed=2, action_dim=3).save_pretrained(tmp_path / "wide")
    with pytest.raises(ValueError, match="wide has action_dim=3 but the steered policy has 2"):
        steer(first, {"type": "gpc", "policies": [str(tmp_path / "wide")], "weights": [0.5, 0.5]})
    tiny(seed=3, lo=-2.0).save_pretrained(tmp_path / "other_stats")  # trained on other demos: other action stats
    with pytest.raises(ValueError, match="other_stats has another action normaliser"):
        steer(first, {"type": "gpc", "policies": [str(tmp_path / "other_stats")], "weights": [0.5, 0.5]})
    with pytest.raises(ValueError, match="need 2 weights"):
        steer(first, {"type": "gpc", "policies": [str(tmp_path / "second")], "weights": [1.0]})


def test_vgps_export_loads_steered_with_its_critic(critic_dir, tmp_path):
    policy, path = critic_dir
    steered = steer(policy, {"type": "vgps", "critic": str(path), "K": 4, "beta": 0.1})
    noise = steered.default_noise(2, torch.Generator().manual_seed(0))
    loaded = load_policy(steered.save_pretrained(tmp_path / "export"))
    assert type(loaded).__name__ == "VGPSPolicy" and loaded.spec.K == 4
    assert torch.equal(loaded.predict_chunk(obs(), noise), steered.predict_chunk(obs(), noise))
    assert type(load_policy(tmp_path / "export", steered=False)).__name__ == "FlowPolicy"


def test_vgps_ensemble_scores_the_mean_of_its_critics_and_exports_them_all(critic_dir, tmp_path):
    policy, path = critic_dir
    torch.manual_seed(7)
    other = ChunkCritic.for_policy(policy, hidden=16).save_pretrained(tmp_path / "critic_seed1")
    steered = steer(policy, {"type": "vgps", "critic": [str(path), str(other)], "K": 4})
    cands = torch.randn(2, 4, 6, 2)
    mean = (load_critic(path).score(obs(), cands) + load_critic(other).score(obs(), cands)) / 2
    torch.testing.assert_close(steered.score(obs(), cands), mean)
    assert not torch.allclose(mean, load_critic(path).score(obs(), cands))  # the second member counts
    single = steer(policy, {"type": "vgps", "critic": str(path), "K": 4})  # stacked heads == the critic's own score
    torch.testing.assert_close(single.score(obs(), cands), load_critic(path).score(obs(), cands))
    noise = steered.default_noise(2, torch.Generator().manual_seed(0))
    chosen = steered.predict_chunk(obs(), noise)
    assert steered.diagnostics[-1]["chosen"] == torch.tensor(steered.diagnostics[-1]["scores"]).argmax(1).tolist()
    loaded = load_policy(steered.save_pretrained(tmp_path / "export"))
    assert len(loaded.critics) == 2 and torch.equal(loaded.predict_chunk(obs(), noise), chosen)
    with pytest.raises(ValueError, match="steering.critic"):
        steer(policy, {"type": "vgps", "critic": [str(path), ""]})
    narrow = ChunkCritic.for_policy(policy, hidden=8).save_pretrained(tmp_path / "critic_narrow")
    with pytest.raises(ValueError, match="critic ensemble: .*critic_narrow has hidden=8"):  # heads run stacked
        steer(policy, {"type": "vgps", "critic": [str(path), str(narrow)]})
