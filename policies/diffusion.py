"""Diffusion policy: DDPM training with diffusers' ``DDPMScheduler``, DDIM inference.

Inference runs a fast path with the DDIM coefficients precomputed from diffusers' ``DDIMScheduler``
(same timesteps, same formula, ``use_clipped_model_output=False``; tested equal to ``scheduler.step``).
For one DDIM step from timestep t to t' (alpha = cumulative alpha-bar):

    x0    = clamp((x_t - sqrt(1 - a_t) eps) / sqrt(a_t), -1, 1)
    sigma = eta * sqrt((1 - a_t') / (1 - a_t) * (1 - a_t / a_t'))
    mean  = sqrt(a_t') x0 + sqrt(1 - a_t' - sigma^2) eps
    x_t'  = mean + sigma z

With ``prediction_type="v_prediction"`` the net predicts v = sqrt(a_t) eps - sqrt(1 - a_t) x0 and every
sampler converts it first, eps = sqrt(a_t) v + sqrt(1 - a_t) x_t, so the step formulas above are unchanged.

DPPO (Ren et al. 2024) treats each step as a Gaussian policy N(mean, max(sigma, min_std)^2) over the
last K' steps: :meth:`DiffusionPolicy.denoise_chain` / :meth:`DiffusionPolicy.chain_logprob`.
"""
from __future__ import annotations

import torch
from diffusers import DDIMScheduler, DDPMScheduler

from .backbones import make_backbone
from .base import BasePolicy
from .config import DiffusionConfig
from .sampler import NO_HOOKS, SamplerHooks, guidance_sum, integrate, model_fn

NOISE_CLAMP = 3.0  # DPPO: per-step exploration noise clamped to +-3


def _scheduler_kwargs(cfg: DiffusionConfig) -> dict:
    return dict(num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule,
                prediction_type=cfg.prediction_type, clip_sample=True)


class DiffusionPolicy(BasePolicy):
    """Epsilon-prediction diffusion over normalised action chunks; ``self.net(x, t, cond)`` with t the timestep."""

    policy_type = "diffusion"
    Config = DiffusionConfig

    def __init__(self, cfg: DiffusionConfig, obs_spec, action_dim: int, stats):
        super().__init__(cfg, obs_spec, action_dim, stats)
        self.net = make_backbone(cfg.backbone, cfg.horizon, self.action_dim, self.cond_dim, cfg.mlp_width,
                                 cfg.mlp_blocks, cfg.unet_dims, cfg.unet_kernel, cfg.time_dim)
        self.train_scheduler = DDPMScheduler(**_scheduler_kwargs(cfg))
        self.infer_scheduler = DDIMScheduler(**_scheduler_kwargs(cfg))
        self.infer_scheduler.set_timesteps(cfg.num_inference_steps)
        self.num_inference_steps = cfg.num_inference_steps
        self.v_prediction = cfg.prediction_type == "v_prediction"
        self._register_ddim_coefficients()

    def _register_ddim_coefficients(self) -> None:
        """Per inference step k (timesteps descending): a_t, a_t', DDIM variance. Not saved (derived)."""
        sched = self.infer_scheduler
        ac = sched.alphas_cumprod.double()
        ts = sched.timesteps.long()
        step = sched.config.num_train_timesteps // sched.num_inference_steps
        prev = ts - step
        a_t = ac[ts]
        a_prev = torch.where(prev >= 0, ac[prev.clamp_min(0)], torch.as_tensor(float(sched.final_alpha_cumprod)))
        var = (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)
        for name, value in {"ddim_t": ts.double(), "ddim_sqrt_a": a_t.sqrt(), "ddim_sqrt_1ma": (1 - a_t).sqrt(),
                            "ddim_a_prev": a_prev, "ddim_var": var}.items():
            self.register_buffer(name, value.float(), persistent=False)
        # Python floats for the eta=0 hot loop (no tensor indexing per step).
        self._fast = [(float((1 - a_t[k]).sqrt()), float(a_t[k].sqrt()), float(a_prev[k].sqrt()),
                       float((1 - a_prev[k]).sqrt())) for k in range(len(ts))]

    # ----------------------------------------------------------------- training
    def _elementwise_loss(self, cond, actions_n):
        b = actions_n.shape[0]
        noise = torch.randn_like(actions_n)
        t = torch.randint(0, self.train_scheduler.config.num_train_timesteps, (b,), device=actions_n.device)
        x_t = self.train_scheduler.add_noise(actions_n, noise, t)
        target = self.train_scheduler.get_velocity(actions_n, noise, t) if self.v_prediction else noise
        return (self.net(x_t, t.float(), cond) - target) ** 2, {}

    def _to_eps(self, out: torch.Tensor, x: torch.Tensor, sqrt_a, sqrt_1ma) -> torch.Tensor:
        """The net's output at x_t -> its noise prediction (v-prediction: eps = sqrt(a) v + sqrt(1 - a) x_t)."""
        return sqrt_a * out + sqrt_1ma * x if self.v_prediction else out

    # ----------------------------------------------------------------- deterministic sampler (DDIM eta=0)
    def sample(self, cond: torch.Tensor, noise: torch.Tensor, net=None,
               hooks: SamplerHooks | None = None, select=None) -> torch.Tensor:
        """cond (B, C), initial noise (B, T_p, D_a) -> normalised actions (B, T_p, D_a), DDIM eta=0.

        The final step lands on a' = 1, so the result is the clamped x0 prediction: inside [-1, 1]. Hooks
        (:mod:`.sampler`): guidance moves the x0 estimate by sqrt(1 - a_t) g (eps - sqrt(a_t) g); the corrector
        re-noises the x0 estimate to level t: ``sqrt(a_t) x0 + sqrt(1 - a_t) z``. ``select``: :func:`integrate`'s."""
        hooks = hooks or NO_HOOKS
        model = model_fn(self.net if net is None else net, self.ddim_t, cond, hooks.composer, hooks.n_candidates)

        def predict(x, k):
            s1ma, sa = self._fast[k][:2]
            eps = self._to_eps(model(x, k), x, sa, s1ma)
            x0 = lambda e: torch.add(x, e, alpha=-s1ma).div_(sa).clamp_(-1.0, 1.0)
            if hooks.guidance:
                eps = eps - sa * guidance_sum(hooks.guidance, x, x0(eps), k)  # moves x0 by s1ma * g
            return eps, x0(eps)

        def update(x, eps, x0, k):
            sa_prev, s1ma_prev = self._fast[k][2:]
            return torch.add(x0.mul_(sa_prev), eps, alpha=s1ma_prev)

        return integrate(noise, self.num_inference_steps, predict, update,
                         lambda x0, k, z: self._fast[k][1] * x0 + self._fast[k][0] * z, hooks.mcmc_steps,
                         hooks.start_level, select)

    # ----------------------------------------------------------------- DPPO entry points
    def _step_mean(self, net, x, k, cond, eta: float):
        """Mean and (unclipped) std of DDIM step(s) k from x. k: int, or LongTensor (N,) matching x's rows."""
        t = self.ddim_t[k]
        return self._ddim_mean(x, net(x, t.expand(x.shape[0]) if t.ndim == 0 else t, cond), k, eta)

    def _ddim_mean(self, x, out, k, eta: float):
        """DDIM step(s) k from x given the net's output there -> (mean, unclipped std)."""
        shape = (-1, 1, 1) if torch.is_tensor(k) else ()
        sa, s1ma = self.ddim_sqrt_a[k].reshape(shape), self.ddim_sqrt_1ma[k].reshape(shape)
        eps = self._to_eps(out, x, sa, s1ma)
        a_prev, var = self.ddim_a_prev[k].reshape(shape), self.ddim_var[k].reshape(shape)
        x0 = ((x - s1ma * eps) / sa).clamp(-1.0, 1.0)
        sigma = eta * var.sqrt()
        mean = a_prev.sqrt() * x0 + (1 - a_prev - sigma ** 2).clamp_min(0.0).sqrt() * eps
        return mean, sigma

    def _check_ft(self, n_ft_steps: int) -> int:
        if not 1 <= n_ft_steps <= self.num_inference_steps:
            raise ValueError(f"n_ft_steps={n_ft_steps} must be in [1, num_inference_steps={self.num_inference_steps}]")
        return self.num_inference_steps - n_ft_steps

    @torch.no_grad()
    def denoise_chain(self, cond: torch.Tensor, n_ft_steps: int, min_std: float, net=None, eta: float = 1.0,
                      deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample the DDIM chain (rollout, no grad); the last K' steps are a Gaussian policy for DPPO.

        1. x_K ~ N(0, I); steps 0..K-K'-1 with the frozen ``self.net`` (std eta*sigma; none if deterministic).
        2. steps K-K'..K-1 with ``net`` (default ``self.net``): std = max(eta*sigma, min_std); noise z clamped
           to +-3; predicted x0 clamped to +-1; deterministic: x_next = mean (log-prob still reported).
        Returns chain (B, K'+1, T_p, D_a) (chain[:, 0] enters the fine-tuned segment, chain[:, -1] is the
        action) and logprob (B, K', T_p, D_a), elementwise log N(chain[:, i+1]; mean_i, std_i^2).
        """
        k0 = self._check_ft(n_ft_steps)
        x = torch.randn(cond.shape[0], self.horizon, self.action_dim, device=cond.device, dtype=cond.dtype)
        frozen = model_fn(self.net, self.ddim_t[:k0], cond) if k0 else None
        ft = model_fn(self.net if net is None else net, self.ddim_t[k0:], cond)
        chain, logps = [], []

        def update(x, out, _, k):
            if k >= k0 and not chain:
                chain.append(x)
            mean, sigma = self._ddim_mean(x, out, k, 0.0 if deterministic and k < k0 else eta)
            std = sigma.clamp_min(min_std) if k >= k0 else sigma
            x = mean if deterministic else mean + std * torch.randn_like(x).clamp_(-NOISE_CLAMP, NOISE_CLAMP)
            if k >= k0:
                logps.append(torch.distributions.Normal(mean, std).log_prob(x))
                chain.append(x)
            return x

        integrate(x, self.num_inference_steps, lambda x, k: (frozen(x, k) if k < k0 else ft(x, k - k0), None), update)
        return torch.stack(chain, dim=1), torch.stack(logps, dim=1)

    def chain_logprob(self, cond: torch.Tensor, chain: torch.Tensor, min_std: float, net=None,
                      eta: float = 1.0) -> torch.Tensor:
        """Elementwise log-probs (B, K', T_p, D_a) of the chain's K' transitions under ``net`` (with grad).

        All K' transitions go through ``net`` in one batched call. ``eta`` must match ``denoise_chain``'s.
        """
        b, n1 = chain.shape[:2]
        n_ft = n1 - 1
        k0 = self._check_ft(n_ft)
        net_ft = self.net if net is None else net
        ks = torch.arange(k0, k0 + n_ft, device=chain.device).repeat(b)  # (B*K',), batch-major
        x = chain[:, :-1].reshape(b * n_ft, self.horizon, self.action_dim)
        cond_rep = cond.repeat_interleave(n_ft, dim=0)
        mean, sigma = self._step_mean(net_ft, x, ks, cond_rep, eta)
        std = sigma.clamp_min(min_std)
        logp = -0.5 * ((chain[:, 1:].reshape_as(x) - mean) / std) ** 2 - std.log() - 0.5 * torch.log(
            torch.tensor(2 * torch.pi, dtype=x.dtype, device=x.device))
        return logp.reshape(b, n_ft, self.horizon, self.action_dim)
