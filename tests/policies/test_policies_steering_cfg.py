"""CFG steering: condition dropout in training, w = 1 / w = 0 are the conditional / unconditional policy bit for
bit, guidance extrapolates between them, clear errors, export round trip."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from armflow.policies import load_policy, make_policy
from armflow.policies.steering import steer

KEY, COND = "observation.state", "observation.condition"


def conditioned(dropout=0.2, ptype="flow"):
    torch.manual_seed(0)
    stats = {KEY: {"min": -np.ones(3), "max": np.ones(3)}, COND: {"min": np.zeros(2), "max": np.ones(2)},
             "action": {"min": -np.ones(2), "max": np.ones(2)}}
    extra = dict(mlp_width=32, mlp_blocks=1, time_dim=8, num_inference_steps=3, condition_key=COND,
                 condition_dropout=dropout) if ptype != "gaussian" else {}
    return make_policy(ptype, {KEY: (3,), COND: (2,)}, 2, stats, horizon=6, n_action_steps=3, state_hidden_dim=16,
                       state_feature_dim=8, **extra).eval()


def obs(cond=None, b=2):
    o = {KEY: torch.randn(b, 2, 3, generator=torch.Generator().manual_seed(1))}
    if cond is not None:
        o[COND] = torch.tensor(cond, dtype=torch.float32).expand(b, 2, 2)
    return o


def test_w_one_is_the_conditional_policy_and_w_zero_the_unconditional_one():
    policy, noise = conditioned(), torch.randn(2, 6, 2)
    one = steer(policy, {"type": "cfg", "w": 1.0, "value": [1.0, 0.0]})
    assert COND not in one.obs_spec and KEY in one.obs_spec
    assert torch.equal(one.predict_chunk(obs(), noise), policy.predict_chunk(obs([1.0, 0.0]), noise))
    zero = steer(policy, {"type": "cfg", "w": 0.0, "value": [1.0, 0.0]})
    assert torch.equal(zero.predict_chunk(obs(), noise), policy.predict_chunk(obs([0.0, 0.0]), noise))
    own = steer(policy, {"type": "cfg", "w": 1.0})  # no value: the obs's own condition
    assert COND in own.obs_spec
    assert torch.equal(own.predict_chunk(obs([0.0, 1.0]), noise), policy.predict_chunk(obs([0.0, 1.0]), noise))


def test_guidance_extrapolates_the_velocity_from_unconditional_to_conditional():
    """One Euler step (flow): x_1 = x_0 + v, so the w-guided first step is v_u + w (v_c - v_u) exactly."""
    policy = conditioned()
    policy.num_inference_steps = 1
    policy.euler_t = policy.euler_t[:1]
    noise = torch.randn(2, 6, 2) * 0.01
    run = lambda w: policy.normalizer.normalize("action", steer(policy, {"type": "cfg", "w": w, "value": [1.0, 0.0]})  # noqa
                                                .predict_chunk(obs(), noise))
    u, c, g = run(0.0), run(1.0), run(3.0)
    inside = (g.abs() < 0.999) & (u.abs() < 0.999) & (c.abs() < 0.999)  # not clipped
    torch.testing.assert_close(g[inside], (u + 3.0 * (c - u))[inside], atol=1e-5, rtol=0)


def test_condition_dropout_zeroes_that_fraction_of_rows_in_training_only():
    policy = conditioned(dropout=0.3)
    batch = {COND: torch.ones(4000, 2, 2)}
    policy.train()
    kept = policy._drop_condition(batch)[COND].reshape(4000, -1)
    assert ((kept == 0).all(1) | (kept == 1).all(1)).all()
    assert abs(float((kept == 0).all(1).float().mean()) - 0.3) < 0.03
    policy.eval()
    assert policy._drop_condition(batch) is batch


def test_cfg_errors_and_export(tmp_path):
    with pytest.raises(ValueError, match="without condition dropout"):
        steer(conditioned(dropout=0.0), {"type": "cfg", "w": 2.0})
    with pytest.raises(ValueError, match="guidance needs a sampling loop"):
        steer(conditioned(ptype="gaussian"), {"type": "cfg", "w": 2.0})
    with pytest.raises(ValueError, match="steering.value=\\[1.0\\]: 1 values"):
        steer(conditioned(), {"type": "cfg", "value": [1.0]})
    with pytest.raises(ValueError, match="condition_dropout=0.5 must be in \\[0, 1\\) and needs a condition_key"):
        make_policy("flow", {KEY: (3,)}, 2, None, condition_dropout=0.5)
    steered = steer(conditioned(), {"type": "cfg", "w": 2.5, "value": [0.0, 1.0]})
    noise = torch.randn(2, 6, 2)
    loaded = load_policy(steered.save_pretrained(tmp_path / "export"))
    assert type(loaded).__name__ == "CFGPolicy" and loaded.spec.w == 2.5
    assert torch.equal(loaded.predict_chunk(obs(), noise), steered.predict_chunk(obs(), noise))
