"""Sampler math: DDIM fast path vs diffusers, DPPO chain log-probs, FPO CFM pairs, Euler ODE, normaliser."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from armflow.policies import Normalizer, make_policy
from armflow.policies.backbones import step_contexts

torch.set_num_threads(1)

D_S, D_A, T_P = 4, 2, 8
STATS = {"observation.state": {"min": -np.ones(D_S), "max": np.ones(D_S)},
         "action": {"min": -np.ones(D_A), "max": np.ones(D_A)}}


def policy(kind: str, **cfg):
    torch.manual_seed(0)
    base = dict(n_obs_steps=1, horizon=T_P, n_action_steps=4, mlp_width=32, mlp_blocks=2, time_dim=16,
                state_hidden_dim=16, state_feature_dim=8)
    base.update(cfg)
    return make_policy(kind, {"observation.state": (D_S,)}, D_A, STATS, **base).eval()


def cond_of(p, b=5):
    return p.encode_obs({"observation.state": torch.randn(b, 1, D_S)})


@pytest.mark.parametrize("backbone", ["mlp", "unet"])
def test_ddim_fast_path_matches_diffusers(backbone):
    p = policy("diffusion", backbone=backbone, unet_dims=(8, 16), num_inference_steps=10)
    sched = DDIMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", clip_sample=True,
                          prediction_type="epsilon")
    sched.set_timesteps(10)
    with torch.no_grad():
        cond, noise = cond_of(p), torch.randn(5, T_P, D_A)
        ref = noise
        for t in sched.timesteps:
            eps = p.net(ref, torch.full((5,), float(t)), cond)
            ref = sched.step(eps, t, ref, eta=0.0).prev_sample
        fast = p.sample(cond, noise)
    assert torch.allclose(fast, ref, atol=2e-5), (fast - ref).abs().max()


def test_ddim_eta1_step_matches_diffusers_given_noise():
    p = policy("diffusion")
    sched = DDIMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", clip_sample=True)
    sched.set_timesteps(10)
    with torch.no_grad():
        cond, x, z = cond_of(p), torch.randn(5, T_P, D_A), torch.randn(5, T_P, D_A)
        for k in (0, 4, 9):
            t = sched.timesteps[k]
            eps = p.net(x, torch.full((5,), float(t)), cond)
            ref = sched.step(eps, t, x, eta=1.0, variance_noise=z).prev_sample
            mean, sigma = p._step_mean(p.net, x, k, cond, eta=1.0)
            assert torch.allclose(mean + sigma * z, ref, atol=2e-5)


def test_training_noise_is_diffusers_ddpm():
    p = policy("diffusion")
    ref = DDPMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", clip_sample=True)
    assert isinstance(p.train_scheduler, DDPMScheduler)
    assert torch.allclose(p.train_scheduler.alphas_cumprod, ref.alphas_cumprod)
    assert p.train_scheduler.config.prediction_type == "epsilon" and p.train_scheduler.config.clip_sample


@pytest.mark.parametrize("n_ft,eta", [(10, 1.0), (4, 1.0), (3, 0.5)])
def test_chain_logprob_equals_denoise_chain_and_normal(n_ft, eta):
    p = policy("diffusion")
    cond = cond_of(p)
    ft_net = p.net  # any net with the denoiser signature works; use the policy's own here
    torch.manual_seed(7)
    chain, logp = p.denoise_chain(cond, n_ft, min_std=0.1, net=ft_net, eta=eta)
    assert chain.shape == (5, n_ft + 1, T_P, D_A) and logp.shape == (5, n_ft, T_P, D_A)
    recomputed = p.chain_logprob(cond, chain, min_std=0.1, net=ft_net, eta=eta)
    assert torch.allclose(recomputed, logp, atol=1e-4), (recomputed - logp).abs().max()
    # Reference: torch.distributions.Normal with the step's mean and clipped std, one step at a time.
    k0 = 10 - n_ft
    with torch.no_grad():
        for i in range(n_ft):
            mean, sigma = p._step_mean(ft_net, chain[:, i], k0 + i, cond, eta)
            ref = torch.distributions.Normal(mean, sigma.clamp_min(0.1)).log_prob(chain[:, i + 1])
            assert torch.allclose(logp[:, i], ref, atol=1e-4)


def test_chain_logprob_has_gradients_and_min_std_matters():
    p = policy("diffusion")
    cond = cond_of(p)
    chain, _ = p.denoise_chain(cond, 4, min_std=0.1)
    lp = p.chain_logprob(cond, chain, min_std=0.1)
    lp.mean().backward()
    assert any(q.grad is not None and q.grad.abs().sum() > 0 for q in p.net.parameters())
    # Larger min_std lowers the density of the (near-mean) samples' peak.
    with torch.no_grad():
        assert p.chain_logprob(cond, chain, min_std=0.5).mean() < p.chain_logprob(cond, chain, min_std=0.1).mean()


def test_deterministic_chain_equals_sample():
    p = policy("diffusion")
    cond = cond_of(p)
    torch.manual_seed(11)
    chain, _ = p.denoise_chain(cond, 6, min_std=0.1, eta=0.0, deterministic=True)
    torch.manual_seed(11)
    noise = torch.randn(5, T_P, D_A)
    with torch.no_grad():
        assert torch.allclose(chain[:, -1], p.sample(cond, noise), atol=1e-5)


def test_stochastic_chain_noise_is_clamped_and_x0_bounded():
    p = policy("diffusion")
    cond = cond_of(p, b=64)
    chain, _ = p.denoise_chain(cond, 10, min_std=0.1, eta=1.0)
    with torch.no_grad():
        for i in range(10):
            mean, sigma = p._step_mean(p.net, chain[:, i], i, cond, 1.0)
            z = (chain[:, i + 1] - mean) / sigma.clamp_min(0.1)
            assert z.abs().max() <= 3.0 + 1e-4
    assert chain[:, -1].abs().max() <= 1.0 + 3 * 0.1 + 1e-4  # last step: clamped x0 + clamped noise * min_std


def test_cfm_loss_pairs_zero_for_exact_velocity_and_matches_loop():
    p = policy("flow")
    b, n = 3, 4
    cond, actions = cond_of(p, b), torch.rand(b, T_P, D_A) * 2 - 1
    tau, eps = torch.rand(b, n), torch.randn(b, n, T_P, D_A)
    with torch.no_grad():
        out = p.cfm_loss_pairs(cond, actions, tau, eps)
        assert out.shape == (b, n)
        for i in range(b):
            for j in range(n):
                x = tau[i, j] * actions[i] + (1 - tau[i, j]) * eps[i, j]
                u = p.net(x[None], (tau[i, j] * p.time_scale).reshape(1), cond[i:i + 1])[0]
                ref = ((eps[i, j] - (x - tau[i, j] * u)) ** 2).mean()
                assert torch.allclose(out[i, j], ref, atol=1e-5)

    class ExactVelocity(torch.nn.Module):
        """u(x_tau) = a - eps, recovered from the known pairs (an oracle net)."""

        def forward(self, x, t, c):
            return (actions.unsqueeze(1) - eps).reshape(b * n, T_P, D_A)

    assert torch.allclose(p.cfm_loss_pairs(cond, actions, tau, eps, net=ExactVelocity()), torch.zeros(b, n),
                          atol=1e-10)


def test_flow_sample_is_euler_with_given_noise():
    p = policy("flow", num_inference_steps=5)
    cond, noise = cond_of(p), torch.randn(5, T_P, D_A)
    with torch.no_grad():
        x = noise
        for k in range(5):
            x = x + 0.2 * p.net(x, torch.full((5,), k / 5 * p.time_scale), cond)
        assert torch.allclose(p.sample(cond, noise), x.clamp(-1, 1), atol=1e-5)


def test_step_contexts_match_forward():
    for kind, backbone in (("flow", "mlp"), ("flow", "unet")):
        net = policy(kind, backbone=backbone, unet_dims=(8, 16)).net
        x, t, c = torch.randn(3, T_P, D_A), torch.tensor([0.0, 7.0, 55.0]), torch.randn(3, 8)  # cond_dim = state_feature_dim
        ctx = step_contexts(net, t, c)
        with torch.no_grad():
            rows = torch.stack([net.denoise(x, ctx[i])[i] for i in range(3)])
            assert torch.allclose(rows, net(x, t, c), atol=1e-5)


def test_normalizer_round_trip_constant_dims_and_images():
    stats = {"a": {"min": [-2.0, 5.0, 0.0], "max": [2.0, 5.0, 10.0]},
             "observation.images.cam": {"mean": np.full((3, 1, 1), 0.5), "std": [[[0.25]], [[0.0]], [[0.1]]]}}
    norm = Normalizer({"a": (3,), "observation.images.cam": (3, 4, 4)}, stats)
    x = torch.tensor([[-2.0, 5.0, 0.0], [2.0, 5.0, 10.0], [0.0, 5.0, 5.0]])
    xn = norm.normalize("a", x)
    assert torch.allclose(xn[:, [0, 2]], torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]]))
    assert torch.equal(xn[:, 1], torch.zeros(3)), "constant dims are centred, not divided by ~0"
    assert torch.isfinite(norm.normalize("a", torch.tensor([0.0, 5.1, 0.0]))).all()
    assert torch.allclose(norm.unnormalize("a", xn), x)
    assert torch.equal(norm.unnormalize("a", torch.ones(1, 3))[0, 1], torch.tensor(5.0))
    img = torch.rand(2, 1, 3, 4, 4)
    assert torch.allclose(norm.unnormalize("observation.images.cam", norm.normalize("observation.images.cam", img)),
                          img, atol=1e-6)
    assert torch.isfinite(norm.normalize("observation.images.cam", img)).all()
    with pytest.raises(KeyError, match="valid"):
        norm.normalize("b", x)


def test_generic_net_path_matches_fast_path():
    """Samplers accept any net(x, t, cond) (e.g. an RL wrapper); results match the hoisted-FiLM fast path."""

    class Plain(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x, t, c):
            return self.inner(x, t, c)

    for kind in ("diffusion", "flow"):
        p = policy(kind)
        cond, noise = cond_of(p), torch.randn(5, T_P, D_A)
        with torch.no_grad():
            assert torch.allclose(p.sample(cond, noise, net=Plain(p.net)), p.sample(cond, noise), atol=1e-5)


def test_image_crops_random_in_training_centre_in_eval():
    from armflow.policies.encoders import crop_images

    x = torch.arange(2 * 3 * 10 * 10, dtype=torch.float32).reshape(2, 3, 10, 10)
    centre = crop_images(x, 0.8, random=False)
    assert centre.shape == (2, 3, 8, 8) and torch.equal(centre, x[:, :, 1:9, 1:9])
    torch.manual_seed(0)
    crops = crop_images(x, 0.8, random=True)
    assert crops.shape == (2, 3, 8, 8)
    for i in range(2):  # every crop is a contiguous window of its own image
        top, left = divmod(int(crops[i, 0, 0, 0] - x[i, 0, 0, 0]), 10)
        assert torch.equal(crops[i], x[i, :, top:top + 8, left:left + 8])
    assert torch.equal(crop_images(x, 1.0, random=True), x)
