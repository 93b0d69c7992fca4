"""Typed policy configs (one dataclass per policy type; unknown keys raise in ``make_policy``).

Default sizes were chosen with ``armflow bench inference`` (batch 1, one CPU thread, 2-core box):
at batch 1 the cost of a sampler step is the step-loop weights streamed from cache plus ~30 small ops.
The residual MLP at width 256 x 4 blocks keeps ~0.6 M weights (2.3 MB, L2-sized) in the step loop
(FiLM projections are computed once per chunk, outside it), so flow-10 and DDIM-10 stay well under
their 5 ms / 20 ms targets; width 384-512 or ``backbone=unet`` (64, 128, 256) are more expressive
and several times slower at batch 1.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .backbones import BACKBONES
from .encoders import IMAGE_ENCODERS

# Config keys added after checkpoints were first written, with the value that rebuilds those checkpoints:
# a config.json without the key was written with this setting (``upgrade_config``).
LEGACY_VALUES = {"image_encoder": "resnet", "image_obs_steps": None}


@dataclass
class ObsConfig:
    """Windows and observation encoders, shared by every policy type."""

    n_obs_steps: int = 2  # T_o: observation frames per decision
    horizon: int = 16  # T_p: predicted chunk length
    n_action_steps: int = 8  # T_a: steps executed per chunk (receding horizon)
    state_hidden_dim: int = 256  # state MLP hidden width
    state_feature_dim: int = 128  # state features in cond
    # Image trunk per camera (encoders.IMAGE_ENCODERS): "conv" (CPU-sized, default), "resnet" (the first armflow
    # encoder), "resnet18" (GPU-sized; ignores image_channels)
    image_encoder: str = "conv"
    image_channels: tuple[int, ...] = (16, 32, 64)  # conv: layer widths (8x8/4 stem, 3x3/2, then 3x3/1); resnet: stages
    image_keypoints: int = 32  # spatial-softmax keypoints per camera
    image_feature_dim: int = 64  # features per camera per frame
    image_crop_ratio: float = 0.9  # train: random crops of this size fraction; eval: centre crop (1.0: off)
    image_weights: str | None = None  # local trunk weights (.safetensors or torch state dict) loaded at construction
    # Camera frames per decision, the latest of the T_o (null: all T_o). One frame halves the image cost of a
    # training step; the motion the second frame would show is in the state history (T_o frames)
    image_obs_steps: int | None = 1

    def __post_init__(self) -> None:
        self.image_channels = tuple(int(c) for c in self.image_channels)
        if not 1 <= self.n_action_steps <= self.horizon:
            raise ValueError(f"n_action_steps={self.n_action_steps} must be in [1, horizon={self.horizon}]")
        if self.image_encoder not in IMAGE_ENCODERS:
            raise ValueError(f"image_encoder={self.image_encoder!r}; valid: {IMAGE_ENCODERS}")
        if not self.image_channels or min(self.image_channels) < 1:
            raise ValueError(f"image_channels={self.image_channels} must be one or more positive widths")
        if not 0.0 < self.image_crop_ratio <= 1.0:
            raise ValueError(f"image_crop_ratio={self.image_crop_ratio} must be in (0, 1]")
        if self.n_obs_steps < 1:
            raise ValueError(f"n_obs_steps={self.n_obs_steps} must be >= 1")
        if self.image_obs_steps is not None and not 1 <= self.image_obs_steps <= self.n_obs_steps:
            raise ValueError(f"image_obs_steps={self.image_obs_steps} must be in [1, n_obs_steps={self.n_obs_steps}] "
                             "(or null: all of them)")


@dataclass
class DenoiserConfig(ObsConfig):
    """The denoiser network ``net(x, t, cond)``."""

    backbone: str = "mlp"  # one of BACKBONES
    mlp_width: int = 256  # residual MLP width
    mlp_blocks: int = 4  # residual MLP FiLM blocks
    unet_dims: tuple[int, ...] = (64, 128, 256)  # UNet channels per level
    unet_kernel: int = 5  # UNet temporal conv kernel
    time_dim: int = 128  # time embedding width
    num_inference_steps: int = 10  # DDIM steps (diffusion) / Euler steps (flow)
    # Scale of the initial noise when the caller gives none (predict_chunk, deployment): 1 samples the learned
    # distribution; 0 is "zero-sampling" (FPO++), the deterministic map of the noise mean; FPO exports 0
    noise_scale: float = 1.0
    # Classifier-free guidance (steering type cfg): an obs key holding a condition (a goal, which object; never all
    # zeros) that training replaces by zeros, the null condition, with probability condition_dropout, so the net
    # learns the unconditional velocity / eps too
    condition_key: str | None = None
    condition_dropout: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.noise_scale >= 0:
            raise ValueError(f"noise_scale={self.noise_scale} must be >= 0")
        if not 0.0 <= self.condition_dropout < 1.0 or (self.condition_dropout > 0 and not self.condition_key):
            raise ValueError(f"condition_dropout={self.condition_dropout} must be in [0, 1) and needs a condition_key "
                             f"(got {self.condition_key!r})")
        self.unet_dims = tuple(int(c) for c in self.unet_dims)
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone={self.backbone!r}; valid: {BACKBONES}")
        if self.num_inference_steps < 1:
            raise ValueError(f"num_inference_steps={self.num_inference_steps} must be >= 1")


@dataclass
class DiffusionConfig(DenoiserConfig):
    """DDPM training (epsilon or v prediction, clip_sample) + DDIM inference (diffusers schedulers)."""

    num_train_timesteps: int = 100  # DDPM steps
    beta_schedule: str = "squaredcos_cap_v2"
    # "epsilon": the net predicts the noise; "v_prediction": v = sqrt(a) eps - sqrt(1 - a) x0 (Salimans & Ho
    # 2022), which weights the high-noise steps where the mode is chosen like flow matching does
    prediction_type: str = "epsilon"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"prediction_type={self.prediction_type!r}; valid: ('epsilon', 'v_prediction')")
        if self.num_train_timesteps % self.num_inference_steps:
            raise ValueError(f"num_train_timesteps={self.num_train_timesteps} must be a multiple of "
                             f"num_inference_steps={self.num_inference_steps} (DDIM 'leading' spacing)")


@dataclass
class FlowConfig(DenoiserConfig):
    """Conditional flow matching, ``x_tau = tau a + (1 - tau) eps``; Euler ODE from tau=0 (noise) to 1."""

    time_scale: float = 100.0  # net sees t = tau * time_scale (same range as diffusion's timesteps)


@dataclass
class GaussianConfig(ObsConfig):
    """Unimodal baseline: MLP -> mean chunk, state-independent log-std."""

    hidden_dim: int = 512
    n_layers: int = 3
    init_std: float = 0.1  # initial std in normalised action units
    loss: str = "mse"  # "mse": MSE for the mean, NLL (mean detached) for the std; "nll": full Gaussian NLL

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.loss not in ("mse", "nll"):
            raise ValueError(f"loss={self.loss!r}; valid: ('mse', 'nll')")
        if not (self.init_std > 0 and math.isfinite(self.init_std)):
            raise ValueError(f"init_std={self.init_std} must be > 0")


def upgrade_config(cfg: dict) -> dict:
    """A checkpoint's ``config`` dict with keys that postdate it set to the values it was built with."""
    return {**{k: v for k, v in LEGACY_VALUES.items() if k not in cfg}, **cfg}
