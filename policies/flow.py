"""Flow-matching policy (conditional flow matching / rectified flow).

Convention: ``x_tau = tau * a + (1 - tau) * eps``; tau = 0 is noise, tau = 1 is data. The net predicts
the velocity ``u = d x_tau / d tau = a - eps``; it sees ``t = tau * time_scale``.

- Training: tau ~ U(0, 1), eps ~ N(0, I), loss ``|u_hat - (a - eps)|^2``.
- Sampling: fixed-step Euler from tau = 0 to 1 (``num_inference_steps``); deterministic given the
  initial noise, so the noise is the only randomness (DSRL acts on it; FPO explores through it).
- FPO (McAllister et al. 2025): :meth:`FlowPolicy.cfm_loss_pairs` gives the per-pair eps-MSE,
  with the velocity converted to an eps prediction ``eps_hat = x_tau - tau * u_hat``.
"""
from __future__ import annotations

import torch

from .backbones import make_backbone
from .base import BasePolicy
from .config import FlowConfig
from .sampler import NO_HOOKS, SamplerHooks, guidance_sum, integrate, model_fn


class FlowPolicy(BasePolicy):
    """Velocity-prediction flow over normalised action chunks; ``self.net(x, tau * time_scale, cond)``."""

    policy_type = "flow"
    Config = FlowConfig

    def __init__(self, cfg: FlowConfig, obs_spec, action_dim: int, stats):
        super().__init__(cfg, obs_spec, action_dim, stats)
        self.net = make_backbone(cfg.backbone, cfg.horizon, self.action_dim, self.cond_dim, cfg.mlp_width,
                                 cfg.mlp_blocks, cfg.unet_dims, cfg.unet_kernel, cfg.time_dim)
        self.num_inference_steps = cfg.num_inference_steps
        self.time_scale = float(cfg.time_scale)
        taus = torch.arange(cfg.num_inference_steps, dtype=torch.float32) / cfg.num_inference_steps
        self.register_buffer("euler_t", taus * self.time_scale, persistent=False)

    def _elementwise_loss(self, cond, actions_n):
        b = actions_n.shape[0]
        eps = torch.randn_like(actions_n)
        tau = torch.rand(b, 1, 1, device=actions_n.device, dtype=actions_n.dtype)
        x_tau = tau * actions_n + (1 - tau) * eps
        u_hat = self.net(x_tau, tau.reshape(b) * self.time_scale, cond)
        return (u_hat - (actions_n - eps)) ** 2, {}

    def sample(self, cond: torch.Tensor, noise: torch.Tensor, net=None,
               hooks: SamplerHooks | None = None, select=None) -> torch.Tensor:
        """Euler ODE from ``noise`` (tau=0) to tau=1: (B, C), (B, T_p, D_a) -> normalised actions, clipped to [-1, 1].

        Hooks (:mod:`.sampler`): guidance adds g to the velocity; the corrector re-noises the clean-chunk estimate
        x_hat = x + (1 - tau) u to level tau: ``tau x_hat + (1 - tau) z``. ``select``: :func:`integrate`'s."""
        hooks, dt = hooks or NO_HOOKS, 1.0 / self.num_inference_steps
        model = model_fn(self.net if net is None else net, self.euler_t, cond, hooks.composer, hooks.n_candidates)

        def predict(x, k):
            u = model(x, k)
            if hooks.guidance:
                u = u + guidance_sum(hooks.guidance, x, torch.add(x, u, alpha=1 - k * dt), k)
            wanted = hooks.mcmc_steps or (select is not None and k == select[0])  # x_hat: corrector, early rerank
            return u, torch.add(x, u, alpha=1 - k * dt) if wanted else None

        x = integrate(noise, self.num_inference_steps, predict, lambda x, u, _, k: torch.add(x, u, alpha=dt),
                      lambda x_hat, k, z: k * dt * x_hat + (1 - k * dt) * z, hooks.mcmc_steps, hooks.start_level,
                      select)
        return x.clamp(-1.0, 1.0)

    def pair_velocity(self, cond: torch.Tensor, actions: torch.Tensor, tau: torch.Tensor, eps: torch.Tensor,
                      net=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Points ``x_tau = tau a + (1 - tau) eps`` and the net's velocities there, both (B, N, T_p, D_a),
        for normalised ``actions`` (B, T_p, D_a), ``tau`` (B, N) and ``eps`` (B, N, T_p, D_a)."""
        net = self.net if net is None else net
        b, n = tau.shape
        if tuple(eps.shape) != (b, n, self.horizon, self.action_dim):
            raise ValueError(f"eps has shape {tuple(eps.shape)}; expected (B={b}, N={n}, T_p={self.horizon}, "
                             f"D_a={self.action_dim})")
        tau4 = tau.reshape(b, n, 1, 1)
        x_tau = tau4 * actions.unsqueeze(1) + (1 - tau4) * eps
        u_hat = net(x_tau.reshape(b * n, self.horizon, self.action_dim), tau.reshape(b * n) * self.time_scale,
                    cond.repeat_interleave(n, dim=0)).reshape(b, n, self.horizon, self.action_dim)
        return x_tau, u_hat

    def cfm_loss_pairs(self, cond: torch.Tensor, actions: torch.Tensor, tau: torch.Tensor, eps: torch.Tensor,
                       net=None, velocity: torch.Tensor | None = None) -> torch.Tensor:
        """Per-pair eps-MSE (B, N) for normalised ``actions`` (B, T_p, D_a) at ``tau`` (B, N), ``eps`` (B, N, T_p, D_a).

        x_tau = tau a + (1 - tau) eps; u_hat = net(x_tau); eps_hat = x_tau - tau u_hat; loss = mean over (T_p, D_a)
        of (eps - eps_hat)^2. Exactly 0 when u_hat = a - eps. ``velocity``: u_hat already computed by
        :meth:`pair_velocity` for the same pairs (skips the forward pass).
        """
        if velocity is None:
            _, velocity = self.pair_velocity(cond, actions, tau, eps, net=net)
        # eps - eps_hat = eps - x_tau + tau u_hat = tau (u_hat - (a - eps))
        err = tau.reshape(*tau.shape, 1, 1) * (velocity - (actions.unsqueeze(1) - eps))
        return err.pow(2).mean(dim=(-2, -1))
