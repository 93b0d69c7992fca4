"""Real (short) training: bimodal toy (generative policies keep both modes, Gaussian collapses to the mean),
loss falls on synthetic demos, EMA and the LR schedule."""
from __future__ import annotations

import pytest
import torch

from armflow.policies import EMA, cosine_with_warmup, make_policy

torch.set_num_threads(1)

TOY_STATS = {"observation.state": {"min": [0.0], "max": [0.0]},  # constant obs: the policy must be multimodal
             "action": {"min": [-1.0, -1.0], "max": [1.0, 1.0]}}
TOY_CFG = dict(n_obs_steps=1, horizon=4, n_action_steps=1, state_hidden_dim=16, state_feature_dim=8)
TOY_NET = {"flow": dict(mlp_width=64, mlp_blocks=2, time_dim=32),
           "diffusion": dict(mlp_width=64, mlp_blocks=2, time_dim=32),
           "gaussian": dict(hidden_dim=64, n_layers=2)}
MODE = 0.6


def bimodal_batch(n: int, g: torch.Generator) -> dict:
    """2-D actions at +(0.6, 0.6) or -(0.6, 0.6) with equal probability, the same obs every time."""
    sign = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    actions = sign[:, None, None] * MODE + 0.03 * torch.randn(n, 4, 2, generator=g)
    return {"observation.state": torch.zeros(n, 1, 1), "action": actions,
            "action_is_pad": torch.zeros(n, 4, dtype=torch.bool)}


def train_toy(policy_type: str, steps: int) -> torch.Tensor:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    policy = make_policy(policy_type, {"observation.state": (1,)}, 2, TOY_STATS, **TOY_CFG, **TOY_NET[policy_type])
    opt = torch.optim.Adam(policy.parameters(), lr=3e-3)
    for _ in range(steps):
        loss, _ = policy.compute_loss(bimodal_batch(128, g))
        opt.zero_grad()
        loss.backward()
        opt.step()
    policy.eval()
    n = 400
    noise = None if policy_type == "gaussian" else torch.randn(n, 4, 2)
    chunks = policy.predict_chunk({"observation.state": torch.zeros(n, 1, 1)}, noise)
    return chunks.mean(dim=(1, 2))  # (n,) one scalar per sampled chunk


@pytest.mark.parametrize("policy_type", ["flow", "diffusion"])
def test_generative_policies_reproduce_both_modes(policy_type):
    m = train_toy(policy_type, steps=250)
    pos, neg = (m > MODE - 0.15).float().mean(), (m < -MODE + 0.15).float().mean()
    between = (m.abs() < 0.3).float().mean()
    assert pos > 0.25 and neg > 0.25, (pos, neg)
    assert between < 0.15, between


def test_gaussian_baseline_collapses_to_the_mean():
    m = train_toy("gaussian", steps=250)
    assert m.abs().max() < 0.3, "a unimodal Gaussian regresses to the average of the two modes"


def test_loss_falls_on_synthetic_demos():
    """Actions are a fixed linear function of the state window: a learnable, non-trivial mapping."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    d_s, d_a, t_o, t_p = 6, 3, 2, 8
    mix = torch.randn(t_o * d_s, t_p * d_a, generator=g) / (t_o * d_s) ** 0.5
    stats = {"observation.state": {"min": [-3.0] * d_s, "max": [3.0] * d_s},
             "action": {"min": [-3.0] * d_a, "max": [3.0] * d_a}}
    policy = make_policy("flow", {"observation.state": (d_s,)}, d_a, stats, n_obs_steps=t_o, horizon=t_p,
                         n_action_steps=4, mlp_width=64, mlp_blocks=2, time_dim=32)
    opt = torch.optim.AdamW(policy.parameters(), lr=2e-3)
    sched = cosine_with_warmup(opt, warmup_steps=10, total_steps=150)
    ema = EMA(policy, decay=0.99)
    losses = []
    for _ in range(150):
        state = torch.randn(64, t_o, d_s, generator=g)
        actions = (state.flatten(1) @ mix).reshape(64, t_p, d_a).clamp(-3, 3)
        loss, metrics = policy.compute_loss({"observation.state": state, "action": actions,
                                             "action_is_pad": torch.zeros(64, t_p, dtype=torch.bool)})
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        ema.update()
        losses.append(metrics["loss"])
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.5 * first, (first, last)
    # EMA weights differ from the live ones but stay close; the EMA model runs the same contract.
    live = torch.cat([p.flatten() for p in policy.parameters()])
    avg = torch.cat([p.flatten() for p in ema.model.parameters()])
    assert not torch.equal(live, avg) and (live - avg).norm() < 0.5 * live.norm()
    assert ema.model.predict_chunk({"observation.state": torch.zeros(2, t_o, d_s)}).shape == (2, t_p, d_a)


def test_ema_update_rule_and_state_dict():
    lin = torch.nn.Linear(2, 1)
    ema = EMA(lin, decay=0.5)
    before = ema.model.weight.detach().clone()
    with torch.no_grad():
        lin.weight.add_(1.0)
    d = ema.current_decay()
    assert d == pytest.approx(min(0.5, 1 / 10))
    ema.update()
    assert torch.allclose(ema.model.weight, d * before + (1 - d) * lin.weight)
    other = EMA(torch.nn.Linear(2, 1), decay=0.5)
    other.load_state_dict(ema.state_dict())
    assert torch.equal(other.model.weight, ema.model.weight) and other.n_updates == 1
    assert not any(p.requires_grad for p in ema.model.parameters())


def test_cosine_with_warmup_shape():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = cosine_with_warmup(opt, warmup_steps=4, total_steps=20, min_lr_ratio=0.1)
    lrs = []
    for _ in range(25):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] < lrs[1] < lrs[3] < lrs[4] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[4:20], lrs[5:21]))
    assert lrs[20] == pytest.approx(0.1) and lrs[24] == pytest.approx(0.1)
