"""Pure RL math against loop references and torch.distributions."""
import math

import numpy as np
import pytest
import torch

from armflow.policies.rl.nets import TanhGaussianActor, TwinQ, polyak_update
from armflow.policies.rl.ppo_math import (
    RewardScaler, asymmetric_trust_loss, denoise_discount, dppo_clip_schedule, gae, normalize, ppo_clip_loss)

torch.set_num_threads(1)


def _gae_loop(r, v, nv, term, trunc, gamma, lam):
    """Per-env episode-by-episode reference: walk each env backwards, restart at each episode end."""
    S, N = r.shape
    adv = np.zeros((S, N))
    for n in range(N):
        a_next = 0.0
        for t in reversed(range(S)):
            if term[t, n]:
                delta = r[t, n] - v[t, n]          # no bootstrap after a real terminal state
                a_next = 0.0
            elif trunc[t, n]:
                delta = r[t, n] + gamma * nv[t, n] - v[t, n]   # bootstrap from the final obs
                a_next = 0.0
            else:
                delta = r[t, n] + gamma * nv[t, n] - v[t, n]
            adv[t, n] = delta + gamma * lam * a_next
            a_next = adv[t, n]
    return adv


def test_gae_matches_loop_reference():
    rng = np.random.default_rng(0)
    S, N = 12, 5
    r, v, nv = (rng.normal(size=(S, N)) for _ in range(3))
    term = rng.random((S, N)) < 0.15
    trunc = (rng.random((S, N)) < 0.15) & ~term
    ref = _gae_loop(r, v, nv, term, trunc, 0.97, 0.9)
    T = lambda x: torch.as_tensor(x, dtype=torch.float64)
    adv, ret = gae(T(r), T(v), T(nv), torch.as_tensor(term), torch.as_tensor(trunc), 0.97, 0.9)
    np.testing.assert_allclose(adv.numpy(), ref, atol=1e-10)
    np.testing.assert_allclose(ret.numpy(), ref + v, atol=1e-10)


def test_gae_truncation_bootstraps_termination_does_not():
    r = torch.zeros(1, 2)
    v = torch.zeros(1, 2)
    nv = torch.ones(1, 2) * 10.0
    adv, _ = gae(r, v, nv, torch.tensor([[True, False]]), torch.tensor([[False, True]]), 0.9, 0.95)
    assert adv[0, 0].item() == 0.0
    assert adv[0, 1].item() == pytest.approx(9.0)


def test_ppo_clip_loss_matches_manual():
    ratio = torch.tensor([0.5, 0.9, 1.0, 1.1, 1.5, 2.0])
    adv = torch.tensor([1.0, -1.0, 2.0, 1.0, -2.0, 1.0])
    loss, info = ppo_clip_loss(ratio, adv, 0.2)
    manual = [max(-a * r, -a * min(max(r, 0.8), 1.2)) for r, a in zip(ratio.tolist(), adv.tolist())]
    assert loss.item() == pytest.approx(np.mean(manual))
    assert info["clipfrac"] == pytest.approx(3 / 6)
    # Per-element eps broadcast (DPPO): a wide eps on an element turns its clipping off.
    loss2, _ = ppo_clip_loss(ratio, adv, torch.tensor([10.0] * 6))
    assert loss2.item() == pytest.approx((-adv * ratio).mean().item())


def test_asymmetric_trust_region():
    ratio = torch.tensor([1.5, 1.5])
    adv = torch.tensor([1.0, -1.0])
    loss = asymmetric_trust_loss(ratio, adv, 0.2, 0.5)
    pos = -1.2
    neg = -(-1.5 - 0.25 / 1.0)
    assert loss.item() == pytest.approx((pos + neg) / 2)


def test_dppo_clip_schedule_and_discount():
    eps = dppo_clip_schedule(5, 0.001, 0.01)
    assert eps[0].item() == pytest.approx(0.001) and eps[-1].item() == pytest.approx(0.01)
    t = 2 / 4
    assert eps[2].item() == pytest.approx(0.001 + 0.009 * (math.exp(3 * t) - 1) / (math.exp(3) - 1), rel=1e-5)
    assert torch.all(eps[1:] > eps[:-1])
    d = denoise_discount(4, 0.9)
    np.testing.assert_allclose(d.numpy(), [0.9**3, 0.9**2, 0.9, 1.0], rtol=1e-6)


def test_reward_scaler_divides_by_running_return_std():
    rng = np.random.default_rng(1)
    rewards = rng.normal(3.0, 2.0, size=(50, 4))
    dones = rng.random((50, 4)) < 0.1
    scaler = RewardScaler(4, gamma=0.9)
    out = scaler(rewards, dones)
    ret, rets = np.zeros(4), []
    for t in range(50):
        ret = ret * 0.9 + rewards[t]
        rets.append(ret.copy())
        ret = np.where(dones[t], 0.0, ret)
    np.testing.assert_allclose(scaler.rms.var, np.var(np.concatenate(rets)), rtol=1e-3)
    np.testing.assert_allclose(out, rewards / math.sqrt(scaler.rms.var + 1e-8), rtol=1e-5)


def test_normalize():
    x = torch.randn(100) * 5 + 3
    y = normalize(x)
    assert abs(y.mean().item()) < 1e-5 and abs(y.std().item() - 1) < 1e-4


def test_tanh_gaussian_actor_logprob_and_bound():
    torch.manual_seed(0)
    actor = TanhGaussianActor(3, 4, bound=1.5, hidden=16)
    feat = torch.randn(64, 3)
    x, lp = actor(feat)
    assert x.abs().max().item() < 1.5
    mu, log_std = actor.net(feat).chunk(2, dim=-1)
    log_std = actor.LOG_STD_MIN + 0.5 * (actor.LOG_STD_MAX - actor.LOG_STD_MIN) * (torch.tanh(log_std) + 1)
    dist = torch.distributions.TransformedDistribution(
        torch.distributions.Normal(mu, log_std.exp()),
        [torch.distributions.TanhTransform(), torch.distributions.AffineTransform(0.0, 1.5)])
    x_in = x.clamp(-1.5 + 1e-4, 1.5 - 1e-4)
    ref = dist.log_prob(x_in).sum(-1)
    ok = (x.abs() < 1.49).all(-1)
    torch.testing.assert_close(lp[ok], ref[ok], atol=2e-3, rtol=1e-3)


def test_twin_q_and_polyak():
    torch.manual_seed(0)
    q, q_t = TwinQ(3, 2, hidden=8), TwinQ(3, 2, hidden=8)
    q1, q2 = q(torch.randn(5, 3), torch.randn(5, 2))
    assert q1.shape == (5,) and not torch.allclose(q1, q2)
    p_src = [p.clone() for p in q.parameters()]
    p_tgt = [p.clone() for p in q_t.parameters()]
    polyak_update(q_t, q, 0.25)
    for t, s, t0 in zip(q_t.parameters(), p_src, p_tgt):
        torch.testing.assert_close(t, 0.75 * t0 + 0.25 * s)
