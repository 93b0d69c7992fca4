"""Every registered policy type through the same contract (state-only and with a camera)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from armflow.configs import ConfigError
from armflow.policies import POLICIES, PolicyLoadError, load_policy, make_policy

torch.set_num_threads(1)

D_S, D_A, T_O, T_P, H, W = 5, 3, 2, 8, 24, 32
A_MIN = np.array([-2.0, 0.0, 10.0])
A_MAX = np.array([2.0, 0.5, 10.0])  # last dim constant: must not divide by zero
SMALL = {"flow": dict(mlp_width=32, mlp_blocks=2, time_dim=16),
         "diffusion": dict(mlp_width=32, mlp_blocks=2, time_dim=16),
         "gaussian": dict(hidden_dim=32, n_layers=2)}
SPECS = {"state": {"observation.state": (D_S,)},
         "image": {"observation.state": (D_S,), "observation.images.front": (H, W, 3)}}


def stats() -> dict:
    return {"observation.state": {"min": -np.ones(D_S), "max": 3 * np.ones(D_S), "mean": np.zeros(D_S),
                                  "std": np.ones(D_S)},
            "observation.images.front": {"mean": np.full((3, 1, 1), 0.4), "std": np.full((3, 1, 1), 0.2),
                                         "min": np.zeros((3, 1, 1)), "max": np.ones((3, 1, 1))},
            "action": {"min": A_MIN, "max": A_MAX}}


def build(policy_type: str, spec_name: str, **extra):
    cfg = dict(SMALL[policy_type], n_obs_steps=T_O, horizon=T_P, n_action_steps=4, state_hidden_dim=32,
               state_feature_dim=16, image_channels=(8, 16), image_keypoints=4, image_feature_dim=8)
    cfg.update(extra)
    return make_policy(policy_type, SPECS[spec_name], D_A, stats(), **cfg)


def batch(spec_name: str, b: int = 4, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    out = {"observation.state": torch.randn(b, T_O, D_S, generator=g),
           "action": torch.as_tensor(A_MIN, dtype=torch.float32)
           + torch.rand(b, T_P, D_A, generator=g) * torch.as_tensor(A_MAX - A_MIN, dtype=torch.float32),
           "action_is_pad": torch.zeros(b, T_P, dtype=torch.bool)}
    if spec_name == "image":
        out["observation.images.front"] = torch.rand(b, T_O, 3, H, W, generator=g)
    return out


CASES = [(p, s) for p in POLICIES for s in SPECS]


@pytest.mark.parametrize("policy_type,spec_name", CASES)
def test_loss_backward_predict(policy_type, spec_name):
    torch.manual_seed(0)
    policy = build(policy_type, spec_name)
    assert policy.policy_type == policy_type
    assert (policy.n_obs_steps, policy.horizon, policy.n_action_steps, policy.action_dim) == (T_O, T_P, 4, D_A)
    assert policy.obs_spec == SPECS[spec_name]
    loss, metrics = policy.compute_loss(batch(spec_name))
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert all(isinstance(v, float) and np.isfinite(v) for v in metrics.values())
    loss.backward()
    grads = [p.grad for p in policy.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    chunk = policy.eval().predict_chunk(batch(spec_name))
    assert chunk.shape == (4, T_P, D_A) and not chunk.requires_grad
    lo, hi = torch.as_tensor(A_MIN).float(), torch.as_tensor(A_MAX).float()
    assert ((chunk >= lo - 1e-5) & (chunk <= hi + 1e-5)).all(), "predictions must be in robot units, in range"
    assert torch.allclose(chunk[..., 2], torch.tensor(10.0)), "constant action dim must come back exactly"


@pytest.mark.parametrize("policy_type,spec_name", CASES)
def test_save_load_round_trip_and_determinism(policy_type, spec_name, tmp_path):
    torch.manual_seed(1)
    policy = build(policy_type, spec_name).eval()
    obs, noise = batch(spec_name, b=3), torch.randn(3, T_P, D_A)
    out1, out2 = policy.predict_chunk(obs, noise), policy.predict_chunk(obs, noise)
    assert torch.equal(out1, out2), "predict_chunk must be deterministic given the noise"
    policy.save_pretrained(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"config.json", "model.safetensors"}
    loaded = load_policy(tmp_path)
    assert type(loaded) is type(policy) and loaded.obs_spec == policy.obs_spec
    assert torch.equal(loaded.predict_chunk(obs, noise), out1)
    if policy_type != "gaussian":
        other = policy.predict_chunk(obs, torch.randn(3, T_P, D_A))
        assert not torch.allclose(other, out1), "different noise should give a different chunk"


def test_uint8_channels_last_images_match_float_channels_first():
    policy = build("flow", "image").eval()
    obs = batch("image", b=2)
    img_u8 = (obs["observation.images.front"] * 255).round().to(torch.uint8)
    as_float = dict(obs, **{"observation.images.front": img_u8.float() / 255})
    as_u8_hwc = dict(obs, **{"observation.images.front": img_u8.permute(0, 1, 3, 4, 2).numpy()})
    noise = torch.randn(2, T_P, D_A)
    assert torch.allclose(policy.predict_chunk(as_float, noise), policy.predict_chunk(as_u8_hwc, noise), atol=1e-6)


@pytest.mark.parametrize("policy_type", list(POLICIES))
def test_padded_actions_are_masked_out_of_the_loss(policy_type):
    """Loss = mean of the per-element loss over non-padded steps only (padded steps may still be net inputs)."""
    policy = build(policy_type, "state")
    b1 = batch("state")
    b1["action_is_pad"][:, 5:] = True
    b2 = {k: v.clone() for k, v in b1.items()}
    b2["action"][:, 5:] = 123.0  # garbage behind the padding
    policy._elementwise_loss = lambda cond, actions_n: (actions_n ** 2, {})
    l1, m1 = policy.compute_loss(b1)
    l2, _ = policy.compute_loss(b2)
    a_n = policy.normalizer.normalize("action", b1["action"][:, :5])
    assert torch.allclose(l1, (a_n ** 2).mean()) and torch.allclose(l1, l2)
    assert m1["valid_frac"] == pytest.approx(5 / T_P)


def test_gaussian_loss_ignores_padded_actions():
    policy = build("gaussian", "state")
    b1 = batch("state")
    b1["action_is_pad"][:, 5:] = True
    b2 = {k: v.clone() for k, v in b1.items()}
    b2["action"][:, 5:] = 123.0
    assert torch.allclose(policy.compute_loss(b1)[0], policy.compute_loss(b2)[0])


def test_registry_and_config_errors():
    with pytest.raises(ValueError, match="valid"):
        make_policy("nope", SPECS["state"], D_A, stats())
    with pytest.raises(ConfigError, match="policy 'flow': unknown config key.*mlp_widht.*Did you mean 'mlp_width'"):
        make_policy("flow", SPECS["state"], D_A, stats(), mlp_widht=3)
    with pytest.raises(KeyError, match="action"):
        make_policy("flow", SPECS["state"], D_A, {"observation.state": stats()["observation.state"]})
    policy = build("flow", "state")
    with pytest.raises(KeyError, match="observation.state"):
        policy.predict_chunk({"observation.wrong": torch.zeros(1, T_O, D_S)})
    with pytest.raises(ValueError, match="T_o"):
        policy.predict_chunk({"observation.state": torch.zeros(1, T_O + 1, D_S)})


def test_load_errors(tmp_path):
    with pytest.raises(PolicyLoadError, match="config.json"):
        load_policy(tmp_path / "missing")
    build("flow", "state").save_pretrained(tmp_path / "ok")
    # corrupt weights
    bad = tmp_path / "ok"
    weights = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(weights[:100])
    with pytest.raises(PolicyLoadError, match="model.safetensors"):
        load_policy(bad)
    (bad / "model.safetensors").unlink()
    with pytest.raises(PolicyLoadError, match="no model.safetensors"):
        load_policy(bad)
    # config/weights mismatch: a wider net than the saved weights
    build("flow", "state").save_pretrained(tmp_path / "mm")
    meta = json.loads((tmp_path / "mm" / "config.json").read_text())
    meta["config"]["mlp_width"] = 48
    (tmp_path / "mm" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(PolicyLoadError, match="shape mismatch"):
        load_policy(tmp_path / "mm")
    (tmp_path / "mm" / "config.json").write_text("{not json")
    with pytest.raises(PolicyLoadError, match="corrupt JSON"):
        load_policy(tmp_path / "mm")


@pytest.mark.parametrize("scale", [1.0, 0.0])
def test_seeded_rollout_noise_is_the_policy_default_noise_with_its_exported_scale(scale):
    """evaluate/deploy draw each chunk's noise through policy.default_noise: an export with
    noise_scale=0 (FPO's zero-sampling) is evaluated and deployed zero-sampled, not with N(0, I)."""
    from armflow.workflows.rollout import PolicyRunner

    policy = build("flow", "state", noise_scale=scale)
    want = scale * torch.randn((1, T_P, D_A), generator=torch.Generator().manual_seed(7))
    runner = PolicyRunner(policy, 2)
    obs = {"observation.state": np.zeros((2, D_S), np.float32)}
    runner.start(obs, seeds=[7, 8])
    noise = runner.noise(np.arange(2))
    assert torch.equal(noise[0:1], want) and (scale == 0) == bool((noise == 0).all())
    runner.start(obs, seeds=[7], mask=np.array([True, False]))  # a new episode reseeds only its env
    assert torch.equal(runner.noise(np.array([0]))[0:1], want)


def test_gaussian_seeded_noise_is_its_mean():
    from armflow.workflows.rollout import PolicyRunner

    runner = PolicyRunner(build("gaussian", "state"), 2)
    runner.start({"observation.state": np.zeros((2, D_S), np.float32)}, seeds=[3, 4])
    assert not runner.noise(np.arange(2)).any()
