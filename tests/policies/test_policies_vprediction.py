"""Diffusion with ``prediction_type="v_prediction"``: same DDIM sampler as diffusers, v-targets in training."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from armflow.policies import make_policy

torch.set_num_threads(1)

D_S, D_A, T_P = 4, 2, 8
STATS = {"observation.state": {"min": -np.ones(D_S), "max": np.ones(D_S)},
         "action": {"min": -np.ones(D_A), "max": np.ones(D_A)}}


def v_policy(**cfg):
    torch.manual_seed(0)
    base = dict(n_obs_steps=1, horizon=T_P, n_action_steps=4, mlp_width=32, mlp_blocks=2, time_dim=16,
                state_hidden_dim=16, state_feature_dim=8, prediction_type="v_prediction")
    base.update(cfg)
    return make_policy("diffusion", {"observation.state": (D_S,)}, D_A, STATS, **base).eval()


def reference(kind):
    return kind(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", clip_sample=True,
                prediction_type="v_prediction")


def test_v_prediction_ddim_sampler_matches_diffusers():
    p = v_policy()
    sched = reference(DDIMScheduler)
    sched.set_timesteps(p.num_inference_steps)
    with torch.no_grad():
        cond = p.encode_obs({"observation.state": torch.randn(5, 1, D_S)})
        noise = torch.randn(5, T_P, D_A)
        ref = noise
        for t in sched.timesteps:
            ref = sched.step(p.net(ref, torch.full((5,), float(t)), cond), t, ref, eta=0.0).prev_sample
        fast, generic = p.sample(cond, noise), p.sample(cond, noise, net=lambda x, t, c: p.net(x, t, c))  # plain net(x, t, cond)
    assert torch.allclose(fast, ref, atol=2e-5), (fast - ref).abs().max()
    assert torch.allclose(generic, ref, atol=2e-5), (generic - ref).abs().max()
    chain, _ = p.denoise_chain(cond, 3, min_std=0.1, eta=0.0, deterministic=True)  # DPPO's path, no noise
    torch.manual_seed(1)  # denoise_chain draws its own x_K: compare step by step instead
    x = torch.randn(5, T_P, D_A)
    for k in range(p.num_inference_steps):
        mean, _ = p._step_mean(p.net, x, k, cond, eta=0.0)
        t = sched.timesteps[k]
        ref = sched.step(p.net(x, torch.full((5,), float(t)), cond), t, x, eta=0.0).prev_sample
        assert torch.allclose(mean, ref, atol=2e-5)
        x = ref
    assert chain.shape == (5, 4, T_P, D_A)


def test_v_prediction_loss_targets_the_velocity():
    p = v_policy()
    assert p.train_scheduler.config.prediction_type == "v_prediction"
    actions = torch.rand(6, T_P, D_A) * 2 - 1
    noise, t = torch.randn_like(actions), torch.randint(0, 100, (6,))
    v = reference(DDPMScheduler).get_velocity(actions, noise, t)
    a = reference(DDPMScheduler).alphas_cumprod[t].reshape(-1, 1, 1)
    assert torch.allclose(v, a.sqrt() * noise - (1 - a).sqrt() * actions, atol=1e-6)


    class ZeroNet(torch.nn.Module):  # predicts v = 0, so the loss is the mean squared target
        def forward(self, x, t, cond):
            return torch.zeros_like(x)

    p.net = ZeroNet()
    obs = torch.randn(6, 1, D_S)
    torch.manual_seed(3)
    loss, _ = p.compute_loss({"observation.state": obs, "action": actions})
    torch.manual_seed(3)  # the same draws as _elementwise_loss: noise, then timesteps
    noise = torch.randn_like(actions)
    t = torch.randint(0, 100, (6,))
    v = reference(DDPMScheduler).get_velocity(actions, noise, t)
    assert torch.allclose(loss, (v ** 2).mean(), atol=1e-5)
    assert not torch.allclose(loss, (noise ** 2).mean(), atol=1e-3)


def test_unknown_prediction_type_is_rejected():
    with pytest.raises(ValueError, match="prediction_type"):
        v_policy(prediction_type="sample")
