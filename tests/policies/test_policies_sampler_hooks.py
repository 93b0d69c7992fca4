"""The one sampler loop: golden outputs of the unhooked path, and one test per hook showing it acts."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from armflow.policies.sampler import SamplerHooks, weighted_composer

_spec = importlib.util.spec_from_file_location("golden", Path(__file__).with_name("make_sampler_golden.py"))
golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(golden)
FAMILIES = ("flow_mlp", "diffusion_mlp")


@pytest.mark.parametrize("case", list(golden.CASES))
def test_unhooked_samplers_equal_the_pre_refactor_golden_outputs_bit_for_bit(case):
    """Bit for bit against this CPU's fixture; on a CPU without one, within float rounding of the base fixture
    (kernels of another ISA round differently)."""
    own = golden.cpu_fixture()
    ref = np.load(own if own.exists() else golden.FIXTURE)
    if str(ref["torch_version"]) != torch.__version__:
        pytest.skip(f"fixture made with torch {ref['torch_version']}, running {torch.__version__}: regenerate it")
    base = np.load(golden.FIXTURE)
    for key, value in golden.outputs(case).items():
        np.testing.assert_allclose(value, base[key], rtol=1e-4, atol=1e-4, err_msg=key)
        if own.exists():
            assert np.array_equal(value, ref[key]), f"{key}: max |diff| {np.abs(value - ref[key]).max()}"


@pytest.mark.parametrize("case", FAMILIES)
def test_empty_hooks_are_the_fast_path(case):
    policy, obs, noise = golden.make_case(case)
    plain = policy.predict_chunk(obs, noise)
    for hooks in (SamplerHooks(), SamplerHooks(mcmc_steps=0, guidance=[])):
        assert torch.equal(policy.predict_chunk(obs, noise, hooks=hooks), plain)


def pull_to(target: float, weight: float, seen: list):
    """Guidance term: -weight * grad of |x_hat - target|^2 by autograd (needs gradients inside the term)."""

    def term(x, x_hat, k):
        seen.append(torch.is_grad_enabled())
        dist = ((x_hat - target) ** 2).sum()
        return -weight * torch.autograd.grad(dist, x_hat)[0]

    return term


@pytest.mark.parametrize("case", FAMILIES)
def test_guidance_pulls_chunks_toward_a_target_with_gradients_only_inside_the_term(case):
    policy, obs, noise = golden.make_case(case)
    target = 0.8  # normalised units; robot units = 2 * target (STATS span [-2, 2])
    seen: list = []
    with torch.inference_mode():  # as `armflow bench inference` and the rollouts call it
        plain = policy.predict_chunk(obs, noise)
        guided = policy.predict_chunk(obs, noise, hooks=SamplerHooks(guidance=[pull_to(target, 2.0, seen)]))
    dist = lambda a: float((a - 2 * target).abs().mean())
    assert dist(guided) < 0.5 * dist(plain), (dist(guided), dist(plain))
    assert seen and all(seen) and guided.grad_fn is None
    assert all(q.grad is None for q in policy.parameters()), "the net's forward ran without autograd"


@pytest.mark.parametrize("case", FAMILIES)
def test_noise_provider_supplies_the_initial_noise_and_given_noise_wins(case):
    policy, obs, noise = golden.make_case(case)
    calls = []
    hooks = SamplerHooks(noise=lambda cond: calls.append(cond.shape) or noise)
    assert torch.equal(policy.predict_chunk(obs, hooks=hooks), policy.predict_chunk(obs, noise))
    assert calls == [(3, policy.cond_dim)]
    other = torch.randn_like(noise)
    assert torch.equal(policy.predict_chunk(obs, other, hooks=hooks), policy.predict_chunk(obs, other))
    assert len(calls) == 1


@pytest.mark.parametrize("case", FAMILIES)
def test_score_composer_weights_select_and_mix_policies(case):
    p1, obs, noise = golden.make_case(case)
    torch.manual_seed(5)
    p2 = type(p1)(p1.cfg, p1.obs_spec, p1.action_dim, None).eval()  # another net, same type and action space
    p2.normalizer.load_state_dict(p1.normalizer.state_dict())
    with torch.no_grad():
        c1, c2 = p1.encode_obs(obs), p2.encode_obs(obs)
        members = [(p1.net, c1), (p2.net, c2)]
        mixed = {w: p1.sample(c1, noise, hooks=SamplerHooks(composer=weighted_composer(members, w)))
                 for w in ((1.0, 0.0), (0.0, 1.0), (0.5, 0.5))}
        assert torch.allclose(mixed[(1.0, 0.0)], p1.sample(c1, noise), atol=1e-5)
        assert torch.allclose(mixed[(0.0, 1.0)], p2.sample(c2, noise), atol=1e-5)
        assert (mixed[(0.5, 0.5)] - mixed[(1.0, 0.0)]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="weights"):
        weighted_composer(members, (1.0,))


@pytest.mark.parametrize("case", FAMILIES)
def test_reranker_picks_the_argmax_of_its_score_among_k_batched_candidates(case):
    policy, obs, _ = golden.make_case(case)
    k, target = 6, torch.tensor([1.5, -1.0])
    noise = torch.randn(3, k, golden.T_P, golden.D_A, generator=torch.Generator().manual_seed(3))
    seen = []

    def closest_first_action(obs_, cands):
        seen.append(tuple(cands.shape))
        return (-(cands[:, :, 0] - target).norm(dim=-1)).argmax(dim=1)

    hooks = SamplerHooks(reranker=closest_first_action, n_candidates=k)
    chosen = policy.predict_chunk(obs, noise, hooks=hooks)
    assert seen == [(3, k, golden.T_P, golden.D_A)]
    each = torch.stack([policy.predict_chunk(obs, noise[:, j]) for j in range(k)], dim=1)  # (B, K, T_p, D_a)
    best = (each[:, :, 0] - target).norm(dim=-1).argmin(dim=1)
    assert torch.allclose(chosen, each[torch.arange(3), best], atol=1e-5)
    assert len(set(best.tolist())) > 1 or (each[:, 0] != each[:, 1]).any()  # the candidates really differ
    with pytest.raises(ValueError, match="reranker"):
        SamplerHooks(n_candidates=4)


@pytest.mark.parametrize("case", FAMILIES)
def test_mcmc_steps_change_the_samples_and_keep_them_in_range(case):
    policy, obs, noise = golden.make_case(case)
    plain = policy.predict_chunk(obs, noise)
    torch.manual_seed(0)
    a = policy.predict_chunk(obs, noise, hooks=SamplerHooks(mcmc_steps=3))
    torch.manual_seed(0)
    b = policy.predict_chunk(obs, noise, hooks=SamplerHooks(mcmc_steps=3))
    assert torch.equal(a, b), "the corrector's noise comes from torch's RNG: reproducible under a seed"
    assert (a - plain).abs().max() > 1e-3 and a.abs().max() <= 2.0 + 1e-5
    with pytest.raises(ValueError, match="mcmc_steps"):
        SamplerHooks(mcmc_steps=-1)


def test_gaussian_policy_refuses_loop_hooks_but_takes_noise_and_reranker():
    from armflow.policies import make_policy

    policy = make_policy("gaussian", {"observation.state": (golden.D_S,)}, golden.D_A, golden.STATS,
                         n_obs_steps=golden.T_O, horizon=golden.T_P, n_action_steps=4).eval()
    _, obs, noise = golden.make_case("flow_mlp")
    with pytest.raises(ValueError, match="sampling loop"):
        policy.predict_chunk(obs, hooks=SamplerHooks(mcmc_steps=1))
    with pytest.raises(ValueError, match="rerank_level need a sampling loop"):  # early reranking: a loop's level
        policy.predict_chunk(obs, hooks=SamplerHooks(reranker=lambda o, c: torch.zeros(3, dtype=torch.long),
                                                     n_candidates=2, rerank_level=0))
    assert torch.equal(policy.predict_chunk(obs, hooks=SamplerHooks(noise=lambda c: noise)),
                       policy.predict_chunk(obs, noise))
    first = policy.predict_chunk(obs, hooks=SamplerHooks(reranker=lambda o, c: torch.zeros(3, dtype=torch.long),
                                                         n_candidates=2))
    assert torch.allclose(first, policy.predict_chunk(obs), atol=1e-6)  # zero noise: every candidate is the mean


def test_dsrl_policy_keeps_the_contract_noise_is_the_actors_standard_normal_draw():
    from armflow.policies.rl.dsrl import DSRLPolicy, expand_noise
    from armflow.policies.rl.nets import TanhGaussianActor

    base, obs, noise = golden.make_case("flow_mlp")
    torch.manual_seed(2)
    actor = TanhGaussianActor(base.cond_dim, golden.T_P * golden.D_A, 1.5, hidden=16)
    steered = DSRLPolicy(base, actor)
    with torch.no_grad():
        mu, _ = actor(base.encode_obs(obs), deterministic=True)
        drawn, _ = actor(base.encode_obs(obs), eps=noise.reshape(3, -1))
    mean_chunk = steered.predict_chunk(obs)
    assert torch.equal(mean_chunk, base.predict_chunk(obs, expand_noise(mu, golden.T_P, golden.D_A)))
    assert torch.equal(steered.predict_chunk(obs, torch.zeros_like(noise)), mean_chunk)
    # seeded evaluate/deploy draw policy.default_noise: a DSRL export acts with the actor's mean
    seeded = steered.default_noise(3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(steered.predict_chunk(obs, seeded), mean_chunk)
    given = steered.predict_chunk(obs, noise)
    assert torch.equal(given, steered.predict_chunk(obs, noise)), "deterministic given noise"
    assert torch.equal(given, base.predict_chunk(obs, expand_noise(drawn, golden.T_P, golden.D_A)))
    assert (given - mean_chunk).abs().max() > 1e-3
    with pytest.raises(ValueError, match="hooks.noise"):
        steered.predict_chunk(obs, hooks=SamplerHooks(noise=lambda c: noise))
