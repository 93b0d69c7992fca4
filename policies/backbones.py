"""Denoiser backbones: ``net(x (B, T_p, D_a), t (B,) float, cond (B, C)) -> (B, T_p, D_a)``.

``t`` is a float "time" the policy chooses: the DDPM timestep index (0..T-1) for diffusion,
``tau * time_scale`` for flow. Both backbones embed it sinusoidally, then with an MLP.

- :class:`ResidualMLPDenoiser`: flattens the chunk; pre-norm residual blocks with FiLM conditioning.
- :class:`ConditionalUnet1D`: a 1-D temporal UNet over the horizon (Janner et al. / Chi et al. style)
  with FiLM-conditioned residual conv blocks.
"""
from __future__ import annotations

import math

import torch
from torch import nn


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """(B,) float -> (B, dim); frequencies span [1/max_period, 1] rad per unit of t."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=t.dtype, device=t.device) / half)
    angles = t.reshape(-1, 1) * freqs.reshape(1, -1)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class TimeEmbedding(nn.Module):
    """(B,) -> (B, dim): sinusoid then a small MLP."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.Mish(), nn.Linear(4 * dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(sinusoidal_embedding(t, self.dim))


def _time_vector(t: torch.Tensor | float, batch: int, like: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    return t.expand(batch) if t.ndim == 0 else t.reshape(batch)


class FiLM(nn.Module):
    """FiLM parameters from [mish(time embedding), mish(cond)], split into a time part and a cond part
    (the same linear map as one layer on the concatenation), so a K-step sampler for B samples runs
    K + B rows instead of K * B."""

    def __init__(self, time_dim: int, cond_dim: int, out_dim: int):
        super().__init__()
        self.lin_t = nn.Linear(time_dim, out_dim)
        self.lin_c = nn.Linear(cond_dim, out_dim, bias=False)


class FiLMResBlock(nn.Module):
    """h + W2 mish(W1 (LN(h) * scale + shift)); ``film_ctx(raw) -> (scale, shift)`` = (1 + gamma, beta),
    computed once per (t, cond) by :meth:`Denoiser.condition`."""

    def __init__(self, width: int, time_dim: int, cond_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.film = FiLM(time_dim, cond_dim, 2 * width)
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)
        self.act = nn.Mish()

    @staticmethod
    def film_ctx(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gamma, beta = raw.chunk(2, dim=-1)
        return 1.0 + gamma, beta

    def forward(self, h: torch.Tensor, ctx: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        scale, shift = ctx
        return h + self.fc2(self.act(self.fc1(torch.addcmul(shift, self.norm(h), scale))))


class Denoiser(nn.Module):
    """Split of ``forward`` so samplers can hoist the conditioning out of their step loop.

    ``condition(t (N,), cond (N, C)) -> ctx`` (per block a FiLM (scale, shift) pair, row i for sample i) and
    ``denoise(x (N, T_p, D_a), ctx)``; ``forward(x, t, cond) = denoise(x, condition(t, cond))``.
    A sampler computes the contexts of all K steps in one batched call (:func:`step_contexts`).
    """

    film_blocks: nn.ModuleList

    def film_parts(self, t: torch.Tensor, cond: torch.Tensor) -> tuple[list, list]:
        """Raw FiLM terms per block: time part (K, F) for t (K,), cond part (B, F) for cond (B, C)."""
        e_t, e_c = self.act(self.time_emb(t)), self.act(cond)
        return ([blk.film.lin_t(e_t) for blk in self.film_blocks], [blk.film.lin_c(e_c) for blk in self.film_blocks])

    def condition(self, t: torch.Tensor, cond: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per-sample conditioning: t (N,), cond (N, C) -> per block (scale, shift)."""
        parts_t, parts_c = self.film_parts(t, cond)
        return [blk.film_ctx(a + b) for blk, a, b in zip(self.film_blocks, parts_t, parts_c)]

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.denoise(x, self.condition(_time_vector(t, x.shape[0], x), cond))


class ResidualMLPDenoiser(Denoiser):
    """Flattened-chunk residual MLP. Step-loop params ~ n_blocks * 2 width^2 (+ in/out); FiLM params
    ~ n_blocks * 2 width (C + time_dim), evaluated once per chunk."""

    def __init__(self, horizon: int, action_dim: int, cond_dim: int, width: int = 256, n_blocks: int = 4,
                 time_dim: int = 128):
        super().__init__()
        self.horizon, self.action_dim = horizon, action_dim
        flat = horizon * action_dim
        self.time_emb = TimeEmbedding(time_dim)
        self.inp = nn.Linear(flat, width)
        self.film_blocks = nn.ModuleList(FiLMResBlock(width, time_dim, cond_dim) for _ in range(n_blocks))
        self.out_norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, flat)
        self.act = nn.Mish()

    def denoise(self, x: torch.Tensor, ctx: list[torch.Tensor]) -> torch.Tensor:
        b = x.shape[0]
        h = self.inp(x.reshape(b, -1))
        for block, film in zip(self.film_blocks, ctx):
            h = block(h, film)
        return self.out(self.act(self.out_norm(h))).reshape(b, self.horizon, self.action_dim)


def step_contexts(net: nn.Module, t_steps: torch.Tensor, cond: torch.Tensor) -> list[list]:
    """Conditioning of K sampler steps for a batch in one call: t_steps (K,), cond (B, C) -> K ctx lists."""
    parts_t, parts_c = net.film_parts(t_steps.to(cond.dtype), cond)
    # (K, 1, F) + (1, B, F) -> (K, B, F): every step's FiLM for every sample, one add per block.
    ctx = [blk.film_ctx(a.unsqueeze(1) + b.unsqueeze(0)) for blk, a, b in zip(net.film_blocks, parts_t, parts_c)]
    return [[(scale[i], shift[i]) for scale, shift in ctx] for i in range(t_steps.shape[0])]


class Conv1dBlock(nn.Sequential):
    """Conv1d -> GroupNorm -> Mish on (B, C, T)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, groups: int):
        super().__init__(nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2), nn.GroupNorm(groups, c_out), nn.Mish())


class CondResBlock1D(nn.Module):
    """Two conv blocks; FiLM (per-channel scale, bias) from the conditioning between them."""

    def __init__(self, c_in: int, c_out: int, time_dim: int, cond_dim: int, kernel: int, groups: int):
        super().__init__()
        self.block1 = Conv1dBlock(c_in, c_out, kernel, groups)
        self.block2 = Conv1dBlock(c_out, c_out, kernel, groups)
        self.film = FiLM(time_dim, cond_dim, 2 * c_out)
        self.skip = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    @staticmethod
    def film_ctx(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scale, bias = raw.unsqueeze(-1).chunk(2, dim=-2)  # (..., C_out, 1) each
        return scale, bias

    def forward(self, x: torch.Tensor, ctx: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        scale, bias = ctx
        h = torch.addcmul(bias, self.block1(x), scale)
        return self.block2(h) + self.skip(x)


class ConditionalUnet1D(Denoiser):
    """Temporal UNet over T_p: ``len(dims)`` levels, T_p halves between levels (T_p % 2^(levels-1) == 0)."""

    def __init__(self, horizon: int, action_dim: int, cond_dim: int, dims: tuple[int, ...] = (64, 128, 256),
                 kernel: int = 5, groups: int = 8, time_dim: int = 128):
        super().__init__()
        if horizon % (2 ** (len(dims) - 1)) != 0:
            raise ValueError(f"ConditionalUnet1D: horizon {horizon} must be divisible by 2^{len(dims) - 1} "
                             f"for unet_dims {tuple(dims)}")
        if any(d % groups for d in dims):
            raise ValueError(f"ConditionalUnet1D: every unet_dims entry {tuple(dims)} must divide by groups {groups}")
        self.horizon, self.action_dim = horizon, action_dim
        self.time_emb = TimeEmbedding(time_dim)
        self.act = nn.Mish()

        def res(c_in: int, c_out: int) -> CondResBlock1D:
            return CondResBlock1D(c_in, c_out, time_dim, cond_dim, kernel, groups)

        chans = [action_dim, *dims]
        blocks: list[CondResBlock1D] = []
        self.resample = nn.ModuleList()  # down-samplers then up-samplers, in forward order
        for i, (c_in, c_out) in enumerate(zip(chans[:-1], chans[1:])):
            blocks += [res(c_in, c_out), res(c_out, c_out)]
            last = i == len(dims) - 1
            self.resample.append(nn.Identity() if last else nn.Conv1d(c_out, c_out, 3, stride=2, padding=1))
        blocks += [res(dims[-1], dims[-1]), res(dims[-1], dims[-1])]  # mid
        for c_out, c_in in reversed(list(zip(dims[:-1], dims[1:]))):
            blocks += [res(2 * c_in, c_out), res(c_out, c_out)]
            self.resample.append(nn.ConvTranspose1d(c_out, c_out, 4, stride=2, padding=1))
        self.film_blocks = nn.ModuleList(blocks)
        self.n_levels = len(dims)
        self.final = nn.Sequential(Conv1dBlock(dims[0], dims[0], kernel, groups), nn.Conv1d(dims[0], action_dim, 1))

    def denoise(self, x: torch.Tensor, ctx: list[torch.Tensor]) -> torch.Tensor:
        blocks, n = self.film_blocks, self.n_levels
        h = x.transpose(1, 2)  # (B, D_a, T_p)
        skips = []
        for lvl in range(n):
            h = blocks[2 * lvl + 1](blocks[2 * lvl](h, ctx[2 * lvl]), ctx[2 * lvl + 1])
            skips.append(h)
            h = self.resample[lvl](h)
        i = 2 * n
        h = blocks[i + 1](blocks[i](h, ctx[i]), ctx[i + 1])
        # Skips are consumed deepest first; the finest one (level 0) is never concatenated.
        for j in range(n - 1):
            i = 2 * n + 2 + 2 * j
            h = torch.cat([h, skips.pop()], dim=1)
            h = blocks[i + 1](blocks[i](h, ctx[i]), ctx[i + 1])
            h = self.resample[n + j](h)
        return self.final(h).transpose(1, 2)


BACKBONES = ("mlp", "unet")


def make_backbone(name: str, horizon: int, action_dim: int, cond_dim: int, mlp_width: int, mlp_blocks: int,
                  unet_dims: tuple[int, ...], unet_kernel: int, time_dim: int) -> nn.Module:
    """Build a denoiser by name (``mlp`` or ``unet``)."""
    if name == "mlp":
        return ResidualMLPDenoiser(horizon, action_dim, cond_dim, mlp_width, mlp_blocks, time_dim)
    if name == "unet":
        return ConditionalUnet1D(horizon, action_dim, cond_dim, tuple(unet_dims), unet_kernel, time_dim=time_dim)
    raise ValueError(f"unknown backbone {name!r}; valid: {BACKBONES}")
