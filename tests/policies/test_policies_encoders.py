"""Image encoders: shapes, crops (random only in train mode), several cameras, local weights, old checkpoints."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from armflow.policies import PolicyLoadError, load_policy, make_policy
from armflow.policies.encoders import ImageEncoder, ObsEncoder, load_image_weights

torch.set_num_threads(1)

FIXTURE = Path(__file__).parent / "fixtures" / "legacy_image_flow"
CAMS = ("observation.images.agentview", "observation.images.wrist")
S, T_O, D_S, D_A = 32, 2, 4, 3
SMALL = dict(n_obs_steps=T_O, horizon=4, n_action_steps=2, mlp_width=16, mlp_blocks=1, time_dim=8,
             state_hidden_dim=16, state_feature_dim=8, image_keypoints=4, image_feature_dim=8)


def stats(cams=CAMS) -> dict:
    out = {"observation.state": {"min": -np.ones(D_S), "max": np.ones(D_S)},
           "action": {"min": -np.ones(D_A), "max": np.ones(D_A)}}
    out.update({c: {"mean": np.full((3, 1, 1), 0.5), "std": np.full((3, 1, 1), 0.25)} for c in cams})
    return out


def two_camera_policy(**cfg):
    spec = {"observation.state": (D_S,), **{c: (S, S, 3) for c in CAMS}}
    return make_policy("flow", spec, D_A, stats(), **{**SMALL, **cfg})


def obs_batch(b=3, seed=0, uint8=True):
    g = torch.Generator().manual_seed(seed)
    obs = {"observation.state": torch.randn(b, T_O, D_S, generator=g)}
    for c in CAMS:
        px = torch.randint(0, 256, (b, T_O, S, S, 3), generator=g, dtype=torch.uint8)  # env layout (H, W, 3)
        obs[c] = px if uint8 else px.permute(0, 1, 4, 2, 3).float() / 255.0
    return obs


@pytest.mark.parametrize("kind,channels,side", [("conv", (16, 32, 64), 84), ("conv", (8, 16), 24),
                                                 ("resnet", (8, 16), 24), ("resnet18", (16,), 64)])
def test_trunks_give_keypoint_features_of_the_configured_size(kind, channels, side):
    enc = ImageEncoder(kind, channels, n_keypoints=5, out_dim=7, crop_ratio=0.9).eval()
    x = torch.rand(6, 3, side, side)
    crops = enc.crop(x)
    assert crops.shape == (6, 3, round(0.9 * side), round(0.9 * side))
    feat = enc(crops)
    assert feat.shape == (6, 7) and torch.isfinite(feat).all()
    keypoints = enc.pool(enc.trunk(crops))
    assert keypoints.shape == (6, 10) and keypoints.abs().max() <= 1.0  # expected coordinates in [-1, 1]


def test_crops_are_random_in_train_mode_and_the_centre_in_eval_mode():
    enc = ImageEncoder("conv", (8, 16), crop_ratio=0.75)
    x = torch.arange(4 * 3 * 32 * 32, dtype=torch.float32).reshape(4, 3, 32, 32)
    enc.eval()
    assert torch.equal(enc.crop(x), x[:, :, 4:28, 4:28]) and torch.equal(enc.crop(x), enc.crop(x))
    enc.train()
    torch.manual_seed(0)
    a, b = enc.crop(x), enc.crop(x)
    assert a.shape == b.shape == (4, 3, 24, 24) and not torch.equal(a, b)
    u8 = (x % 256).to(torch.uint8)
    assert enc.crop(u8).dtype == torch.uint8  # cropped before the float conversion


def test_eval_mode_policy_is_deterministic_and_train_mode_augments():
    policy = two_camera_policy()
    obs, noise = obs_batch(), torch.randn(3, 4, D_A)
    policy.eval()
    a, b = policy.predict_chunk(obs, noise=noise), policy.predict_chunk(obs, noise=noise)
    assert torch.equal(a, b)
    policy.train()
    torch.manual_seed(1)
    with torch.no_grad():
        c1, c2 = policy.encode_obs(obs), policy.encode_obs(obs)
    assert not torch.allclose(c1, c2)  # a different random crop each call


def test_two_cameras_one_encoder_each_uint8_and_float_inputs_agree():
    policy = two_camera_policy().eval()
    assert set(policy.obs_encoder.encoders) == {"observation__state", *[c.replace(".", "__") for c in CAMS]}
    assert policy.cond_dim == 8 + 2 * 1 * 8  # state features + one latest frame x 8 features per camera
    noise = torch.randn(3, 4, D_A)
    u8, f32 = policy.predict_chunk(obs_batch(), noise=noise), policy.predict_chunk(obs_batch(uint8=False), noise=noise)
    assert u8.shape == (3, 4, D_A) and torch.allclose(u8, f32, atol=1e-5)
    obs = obs_batch()
    obs[CAMS[1]] = torch.zeros_like(obs[CAMS[1]])  # the wrist camera changes cond, the agentview part stays
    c0, c1 = policy.encode_obs(obs_batch()), policy.encode_obs(obs)
    # cond layout, keys sorted: agentview (8), wrist (8), state (8)
    assert torch.equal(c0[:, :8], c1[:, :8]) and torch.equal(c0[:, 16:], c1[:, 16:])
    assert not torch.allclose(c0[:, 8:16], c1[:, 8:16])


def test_image_obs_steps_reads_the_latest_frames():
    policy = two_camera_policy(image_obs_steps=1).eval()
    obs = obs_batch()
    changed = {k: v.clone() for k, v in obs.items()}
    for c in CAMS:
        changed[c][:, 0] = 0  # the older frame: unseen with image_obs_steps=1
    assert torch.equal(policy.encode_obs(obs), policy.encode_obs(changed))
    both = two_camera_policy(image_obs_steps=None).eval()
    assert both.cond_dim == 8 + 2 * T_O * 8 and not torch.equal(both.encode_obs(obs), both.encode_obs(changed))
    with pytest.raises(ValueError, match="image_obs_steps=3 must be in"):
        two_camera_policy(image_obs_steps=3)


def test_compute_loss_trains_every_image_encoder():
    policy = two_camera_policy().train()
    batch = {**obs_batch(b=4), "action": torch.rand(4, 4, D_A) * 2 - 1}
    loss, _ = policy.compute_loss(batch)
    loss.backward()
    for c in CAMS:
        stem = policy.obs_encoder.image_encoder(c).trunk[0].weight
        assert stem.grad is not None and stem.grad.abs().sum() > 0


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_local_trunk_weights_load_at_construction_only(tmp_path, suffix):
    from safetensors.torch import save_file

    torch.manual_seed(3)
    donor = ImageEncoder("resnet18")
    state = {f"backbone.{k}": v.clone() for k, v in donor.trunk.state_dict().items()}
    state["fc.weight"] = torch.zeros(10, 512)  # a classifier head in the file is ignored
    path = tmp_path / f"r18{suffix}"
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    spec = {"observation.state": (D_S,), CAMS[0]: (64, 64, 3)}
    policy = make_policy("flow", spec, D_A, stats(CAMS[:1]), **SMALL, image_encoder="resnet18", image_weights=str(path))
    trunk = policy.obs_encoder.image_encoder(CAMS[0]).trunk
    assert all(torch.equal(v, donor.trunk.state_dict()[k]) for k, v in trunk.state_dict().items())
    policy.save_pretrained(tmp_path / "ckpt")
    path.unlink()  # the checkpoint carries the weights: loading it needs no weights file
    loaded = load_policy(tmp_path / "ckpt")
    assert torch.equal(loaded.obs_encoder.image_encoder(CAMS[0]).trunk.conv1.weight, donor.trunk.conv1.weight)
    with pytest.raises(FileNotFoundError, match="image_weights="):
        make_policy("flow", spec, D_A, stats(CAMS[:1]), **SMALL, image_encoder="resnet18", image_weights=str(path))


def test_trunk_weights_of_another_architecture_are_refused(tmp_path):
    from safetensors.torch import save_file

    save_file(ImageEncoder("conv", (8, 16)).trunk.state_dict(), str(tmp_path / "conv.safetensors"))
    with pytest.raises(ValueError, match="no weights for"):
        load_image_weights(ImageEncoder("resnet18"), tmp_path / "conv.safetensors")
    save_file({"0.weight": torch.zeros(4, 3, 8, 8)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match=r"'0.weight' has shape \(4, 3, 8, 8\)"):
        load_image_weights(ImageEncoder("conv", (8, 16)), tmp_path / "bad.safetensors")


def test_checkpoint_written_before_image_encoder_existed_loads_and_predicts_the_same(tmp_path):
    """The fixture was saved by the encoder armflow had before issue 12 (config without image_encoder)."""
    from safetensors.torch import load_file

    assert "image_encoder" not in json.loads((FIXTURE / "config.json").read_text())["config"]
    policy = load_policy(FIXTURE)
    assert policy.cfg.image_encoder == "resnet" and policy.cfg.image_obs_steps is None
    want = load_file(str(FIXTURE / "expected.safetensors"))
    chunk = policy.predict_chunk({"observation.state": want["state"], "observation.images.front": want["image"]},
                                 noise=want["noise"])
    assert torch.allclose(chunk, want["chunk"], atol=1e-6)
    broken = tmp_path / "broken"
    shutil.copytree(FIXTURE, broken)
    meta = json.loads((broken / "config.json").read_text())
    meta["config"]["image_encoder"] = "conv"  # a config that disagrees with its weights
    (broken / "config.json").write_text(json.dumps(meta))
    with pytest.raises(PolicyLoadError, match="does not match"):
        load_policy(broken)


def test_bad_image_options_name_the_valid_choices():
    with pytest.raises(ValueError, match=r"image_encoder='vit'; valid: \('conv', 'resnet', 'resnet18'\)"):
        two_camera_policy(image_encoder="vit")
    with pytest.raises(ValueError, match="needs crops of at least 32x32"):
        ObsEncoder({CAMS[0]: (3, 24, 24)}, 2, image_encoder="resnet18")
