"""Chunk executors on hand-made chunks, RTC's soft mask and frozen prefix, RTI-DP warm starts, delay estimation."""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from armflow.policies import ActionChunker
from armflow.policies.executors import (DelayEstimator, make_executor, shifted, soft_mask, switch_discontinuity)
from armflow.policies.realtime import denoiser_evals, rtc_hooks, rtidp_hooks

_spec = importlib.util.spec_from_file_location("golden", Path(__file__).with_name("make_sampler_golden.py"))
golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(golden)

H, S, D = 8, 4, 2


def chunks(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(H, D)) for _ in range(n)]


def stream(executor, cs, d: int) -> np.ndarray:
    return np.concatenate([executor.commit(c, d) for c in cs])


def test_sync_is_the_receding_horizon():
    cs = chunks(4)
    ref = ActionChunker(S)
    expected = []
    for c in cs:
        ref.push(c)
        expected += [ref.pop() for _ in range(S)]
    np.testing.assert_array_equal(stream(make_executor("sync", H, S), cs, d=3), np.stack(expected))


def test_ensemble_with_no_delay_equals_act_temporal_ensembling():
    cs = chunks(5, seed=1)
    ref = ActionChunker(S, temporal_ensemble=0.3)
    expected = []
    for c in cs:
        ref.push(c)
        expected += [ref.pop() for _ in range(S)]
    np.testing.assert_allclose(stream(make_executor("ensemble", H, S, ensemble_k=0.3), cs, d=0), np.stack(expected))


@pytest.mark.parametrize("name", ["naive", "rtc"])
def test_async_with_zero_delay_equals_sync_and_delay_runs_the_previous_chunk(name):
    cs = chunks(3, seed=2)
    np.testing.assert_array_equal(stream(make_executor(name, H, S), cs, 0), stream(make_executor("sync", H, S), cs, 0))
    ex = make_executor(name, H, S)
    first, second = ex.commit(cs[0], 2), ex.commit(cs[1], 2)
    np.testing.assert_array_equal(first, cs[0][:S])  # the robot waited for the first chunk
    np.testing.assert_array_equal(second, np.concatenate([cs[0][S:S + 2], cs[1][2:S]]))
    assert ex.switches == [0, S + 2]


def test_delay_outside_rtc_bounds_is_refused():
    with pytest.raises(ValueError, match="d <= s"):
        make_executor("naive", H, S).commit(chunks(1)[0], S + 1)
    with pytest.raises(ValueError, match="expected one of"):
        make_executor("bogus", H, S)


def test_soft_mask_weights():
    w = soft_mask(16, 3, 8)
    np.testing.assert_array_equal(w[:3], 1.0)
    assert np.all(np.diff(w[3:8]) < 0) and 0 < w[7] < w[3] <= 1.0  # decays over the overlap
    np.testing.assert_array_equal(w[8:], 0.0)  # beyond the previous chunk's end
    with pytest.raises(ValueError):
        soft_mask(16, 9, 8)


def test_prefix_is_padded_with_the_last_real_action_never_zeros():
    c = np.arange(H * D, dtype=float).reshape(H, D) + 1.0
    p = shifted(c, 3)
    np.testing.assert_array_equal(p[: H - 3], c[3:])
    np.testing.assert_array_equal(p[H - 3:], np.repeat(c[-1:], 3, axis=0))


def test_delay_estimator_rules():
    est = DelayEstimator(ctrl_dt_s=0.05, d_max=4, window=3, prior_steps=1)
    assert est.steps == 1  # the prior before any measurement
    est.record(0.1)  # cold first inference: stands in (2 steps) only until a warm one exists
    assert est.steps == 2
    est.record(0.12)
    assert est.steps == 3  # ceil(120 / 50)
    est.record(0.04)
    assert est.steps == 3  # the recent maximum
    est.record(0.04), est.record(0.04)
    assert est.steps == 1  # the spike left the window (and the cold 2 never entered it)
    est.record(0.5, consumed_steps=2)  # the robot only ran 2 actions meanwhile (it waited): clamped
    assert est.steps == 2
    est.record(1.0)
    assert est.steps == 4  # never above d_max


def test_switch_discontinuity_separates_switches_from_within():
    a = np.zeros((8, 1))
    a[4:] = 1.0  # a jump at the switch into index 4
    a[2] = 0.25
    m = switch_discontinuity(a, [0, 4])
    assert m["switch_max"] == 1.0 and m["within_max"] == 0.25
    # the old plan was heading to 0.75 at the switch: the switch itself added only 0.25 of the jump
    m = switch_discontinuity(a, [0, 4], planned=[None, np.array([0.75])])
    assert m["switch_max"] == 1.0 and m["gap_max"] == m["gap_mean"] == 0.25


@pytest.mark.parametrize("name", ["sync", "naive", "rtc", "ensemble"])
def test_executors_record_the_running_plan_at_each_switch(name):
    cs = chunks(3, seed=4)
    ex = make_executor(name, H, S)
    stream(ex, cs, d=2)
    assert ex.planned[0] is None and len(ex.planned) == len(ex.switches) == 3
    d = 0 if name == "sync" else 2
    if name != "ensemble":  # the previous chunk's action for the switch step
        np.testing.assert_array_equal(ex.planned[1], cs[0][S + d])
    else:  # the ensemble of the chunks running before the new one arrived (only cs[0] at step S + 2)
        np.testing.assert_allclose(ex.planned[1], cs[0][S + d])
    # RTC's weights hold the frozen prefix at 1 and scale the decay after it by the overlap weight
    w_full, w_half = soft_mask(H, 2, S), make_executor("rtc", H, S, rtc_overlap=0.5).weights(2)
    np.testing.assert_array_equal(w_half[:2], 1.0)
    np.testing.assert_allclose(w_half[2:], 0.5 * w_full[2:])


@pytest.mark.parametrize("case", ["flow_mlp", "diffusion_v_mlp"])
def test_rtc_reproduces_the_frozen_prefix(case):
    policy, obs, noise = golden.make_case(case)
    with torch.inference_mode():
        prev = policy.predict_chunk(obs, noise).numpy()
    s, d = 4, 2
    target = np.clip(np.stack([shifted(c, s) for c in prev]) + 0.5, -1.5, 1.5)  # not what the policy would do
    w = np.stack([soft_mask(policy.horizon, d, s)] * len(prev))
    z = torch.randn(noise.shape, generator=torch.Generator().manual_seed(3))
    calls = count_net_calls(policy)
    with torch.inference_mode():
        free = policy.predict_chunk(obs, z).numpy()
        n_free = len(calls)
        guided = policy.predict_chunk(obs, z, hooks=rtc_hooks(policy, target, w)).numpy()
    assert len(calls) == 2 * n_free  # inpainting adds no network evaluation
    err_guided, err_free = np.abs(guided[:, :d] - target[:, :d]).max(), np.abs(free[:, :d] - target[:, :d]).max()
    # flow lands on the frozen rows exactly; DDIM up to its x0 clamp at the high-noise levels
    assert err_guided < (1e-4 if case.startswith("flow") else 0.05) < 0.15 < err_free, (err_guided, err_free)
    # the overlap rows are pulled toward the target by their weight, beyond it the chunk stays free
    gap_free, gap_guided = (np.abs(c[:, d:s] - target[:, d:s]).mean() for c in (free, guided))
    assert gap_guided < gap_free
    with pytest.raises(ValueError, match=r"rtc weights.*\[0, 1\]"):
        rtc_hooks(policy, target, 2 * w)


def test_rtc_with_zero_weights_is_the_unguided_sample():
    policy, obs, noise = golden.make_case("flow_mlp")
    with torch.inference_mode():
        free = policy.predict_chunk(obs, noise)
        same = policy.predict_chunk(obs, noise, hooks=rtc_hooks(policy, np.zeros((3, 8, 2)), np.zeros((3, 8))))
    torch.testing.assert_close(same, free)


def count_net_calls(policy) -> list:
    """Counts denoiser evaluations (``Denoiser.denoise`` with FiLM hoisted, else the net's forward)."""
    calls, net = [], policy.net
    name = "denoise" if hasattr(net, "denoise") else "forward"
    orig = getattr(net, name)
    setattr(net, name, lambda *a, **k: (calls.append(1), orig(*a, **k))[1])
    return calls


@pytest.mark.parametrize("case", ["flow_mlp", "diffusion_mlp"])
def test_rtidp_warm_start_takes_fewer_denoiser_evaluations_and_keeps_the_gripper_binary(case):
    policy, obs, noise = golden.make_case(case)
    calls = count_net_calls(policy)
    with torch.inference_mode():
        prev = policy.predict_chunk(obs, noise)
        full = len(calls)
        warm_in = torch.as_tensor(np.stack([shifted(c, 4) for c in prev.numpy()]))
        warm_in[..., 1] = 0.3  # a half-open gripper value in the previous chunk
        hooks = rtidp_hooks(policy, warm_in, torch.zeros_like(noise), start_level=9, gripper_dim=1)
        x_start = hooks.noise(None)
        warm = policy.predict_chunk(obs, hooks=hooks)
    assert full == denoiser_evals(policy) == 10 and len(calls) - full == denoiser_evals(policy, 9) == 1
    assert torch.isfinite(warm).all() and warm.shape == prev.shape
    # z = 0: the start is the (normalised) warm chunk scaled to level 9; the gripper entered as +1 (closed), not 0.3
    grip_n = policy.normalizer.normalize("action", torch.ones(1, 1, 2))[..., 1]
    assert torch.all(torch.sign(x_start[..., 1]) == torch.sign(grip_n))
    with pytest.raises(ValueError, match="start_level"):
        rtidp_hooks(policy, warm_in, noise, start_level=10)


def test_rtc_refuses_a_gaussian_policy():
    from armflow.policies import make_policy

    policy = make_policy("gaussian", {"observation.state": (4,)}, 2, golden.STATS, horizon=8, n_obs_steps=2)
    with pytest.raises(ValueError, match="flow or diffusion"):
        rtc_hooks(policy, np.zeros((1, 8, 2)), np.zeros((1, 8)))
    assert math.isfinite(soft_mask(8, 0, 4).sum())
