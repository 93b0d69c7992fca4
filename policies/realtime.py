"""The sampling side of real-time chunk execution, as hooks on the shared sampler (:mod:`.sampler`).

- :func:`rtc_hooks`: RTC (Black, Galliker, Levine 2025), inpainting the previous chunk's remaining actions y with
  PiGDM-style guidance. At each level, with x_hat(x) the denoiser's one-step clean-chunk estimate::

      g = w(tau) * J^T (W * (y - x_hat)),   J = d x_hat / d x   (a vector-Jacobian product)
      w(tau) = min(beta, (1 - tau) / (tau r^2)),   r^2 = (1 - tau)^2 / (tau^2 + (1 - tau)^2)

  W = :func:`armflow.policies.executors.soft_mask`. The net's forward pass at each level is run once, with
  gradients, by a composer that the guidance term shares, so the VJP costs one backward pass and no second
  forward. Flow adds g to the velocity; diffusion moves its x0 estimate by sqrt(1 - a_t) g (the sampler's
  convention), with tau = sqrt(a_t) / (sqrt(a_t) + sqrt(1 - a_t)), the flow time of the same signal-to-noise.
  ``vjp=False`` takes J = I (no backward pass; cheaper, weaker).
- :func:`rtidp_hooks`: RTI-DP (Duan, Yin, Kragic 2025) warm start as a noise provider: the previous chunk
  shifted by the executed steps, re-noised to level ``start_level`` and denoised from there (K - start_level
  denoiser evaluations instead of K). The gripper dimension is snapped to its nearest end (-1 open, +1 closed)
  before re-noising, so a half-way value never seeds a half-open grasp.
"""
from __future__ import annotations

import torch

from .base import ACTION_KEY
from .sampler import SamplerHooks

GRIPPER_OPEN, GRIPPER_CLOSED = -1.0, 1.0


def _check_family(policy, what: str) -> str:
    kind = getattr(policy, "policy_type", "?")
    if kind not in ("flow", "diffusion"):
        raise ValueError(f"{what} needs a flow or diffusion policy (a sampling loop); this checkpoint is {kind!r}")
    return kind


def level_tau(policy, k: int) -> float:
    """Flow time tau in [0, 1) of level k (0 = noise); for diffusion the flow time with the same SNR."""
    if policy.policy_type == "flow":
        return k / policy.num_inference_steps
    s1ma, sa = policy._fast[k][:2]
    return sa / (sa + s1ma)


def guidance_weight(tau: float, beta: float) -> float:
    """RTC's guidance weight min(beta, (1 - tau) / (tau r^2)); beta at tau = 0."""
    if tau <= 0.0:
        return float(beta)
    r2 = (1 - tau) ** 2 / (tau ** 2 + (1 - tau) ** 2)
    return float(min(beta, (1 - tau) / (tau * r2)))


class _SharedForward:
    """A composer that runs the net with gradients and keeps (x, output, k) for the guidance term of that level."""

    def __init__(self, policy, cond: torch.Tensor):
        self.policy, self.cond, self.cache = policy, cond, None
        times = policy.euler_t if policy.policy_type == "flow" else policy.ddim_t
        self.level_of = {float(t): k for k, t in enumerate(times)}

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(False), torch.enable_grad():
            xl = x.detach().clone().requires_grad_(True)
            out = self.policy.net(xl, t.detach().clone().expand(len(xl)), self.cond)
        self.cache = (xl, out, self.level_of[float(t)])
        return out.detach()

    def x_hat(self) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(x leaf, differentiable x_hat(x), level) of the last forward pass."""
        xl, out, k = self.cache
        if self.policy.policy_type == "flow":
            return xl, xl + (1 - level_tau(self.policy, k)) * out, k
        s1ma, sa = self.policy._fast[k][:2]
        eps = self.policy._to_eps(out, xl, sa, s1ma)
        return xl, (xl - s1ma * eps) / sa, k


def rtc_hooks(policy, obs, prefix: torch.Tensor, weights: torch.Tensor, beta: float = 5.0,
              vjp: bool = True) -> SamplerHooks:
    """Hooks that inpaint ``prefix`` (B, H, D_a) robot units (the previous chunk shifted by the executed steps,
    padded with its last action) with per-step weights ``weights`` (B, H) (0 rows: unguided)."""
    _check_family(policy, "executor=rtc")
    if beta <= 0:
        raise ValueError(f"rtc beta={beta} must be > 0 (the guidance-weight clip)")
    prefix = torch.as_tensor(prefix, dtype=torch.float32, device=policy.device)
    with torch.inference_mode(False):
        y = policy.normalizer.normalize(ACTION_KEY, prefix.clone()).clamp(-1.0, 1.0)
        w_mask = torch.as_tensor(weights, dtype=torch.float32, device=policy.device).clone()[..., None]
    if not vjp:
        def identity_term(x, x_hat, k):
            return guidance_weight(level_tau(policy, k), beta) * w_mask * (y - x_hat)
        return SamplerHooks(guidance=[identity_term])
    with torch.inference_mode(False), torch.no_grad():
        cond = policy.encode_obs(obs).clone()
    shared = _SharedForward(policy, cond)

    def rtc_term(x, x_hat, k):
        xl, xh, level = shared.x_hat()
        err = w_mask * (y - xh.detach())
        (g,) = torch.autograd.grad(xh, xl, grad_outputs=err)
        return guidance_weight(level_tau(policy, level), beta) * g

    return SamplerHooks(guidance=[rtc_term], composer=shared)


def snap_gripper(chunk: torch.Tensor, gripper_dim: int | None) -> torch.Tensor:
    """``chunk`` (B, H, D_a) robot units with the gripper dimension set to its nearest end (-1 or +1)."""
    if gripper_dim is None:
        return chunk
    out = chunk.clone()
    out[..., gripper_dim] = torch.where(chunk[..., gripper_dim] >= 0, GRIPPER_CLOSED, GRIPPER_OPEN)
    return out


def rtidp_hooks(policy, warm: torch.Tensor, z: torch.Tensor, start_level: int,
                gripper_dim: int | None = None) -> SamplerHooks:
    """Warm start: ``warm`` (B, H, D_a) robot units (the previous chunk shifted by the executed steps, padded with
    its last action), re-noised with ``z`` (B, H, D_a) to ``start_level`` (1 .. K - 1), denoised from there."""
    kind = _check_family(policy, "rtidp")
    k_levels = policy.num_inference_steps
    if not 1 <= start_level < k_levels:
        raise ValueError(f"rtidp start_level={start_level} must be in [1, num_inference_steps={k_levels})")
    warm = snap_gripper(torch.as_tensor(warm, dtype=torch.float32, device=policy.device), gripper_dim)
    a_n = policy.normalizer.normalize(ACTION_KEY, warm).clamp(-1.0, 1.0)
    z = torch.as_tensor(z, dtype=a_n.dtype, device=a_n.device)
    if kind == "flow":
        tau = start_level / k_levels
        x0 = tau * a_n + (1 - tau) * z
    else:
        s1ma, sa = policy._fast[start_level][:2]
        x0 = sa * a_n + s1ma * z
    return SamplerHooks(noise=lambda cond: x0, start_level=start_level)


def denoiser_evals(policy, start_level: int = 0) -> int:
    """Denoiser evaluations per chunk (no MCMC): K - start_level."""
    return policy.num_inference_steps - start_level
