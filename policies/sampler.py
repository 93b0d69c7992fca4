"""One sampling loop with hook points (``../shared/design/steering.md``, "One sampler, five hook points").

A policy family runs :func:`integrate` over normalised chunks x (N, T_p, D_a) with per-level functions
``predict(x, k) -> (out, x_hat)`` (flow velocity / diffusion eps after composer and guidance; x_hat the clean-chunk
estimate), ``update(x, out, x_hat, k)`` (Euler, DDIM) and ``renoise(x_hat, k, z)`` (x_hat back to level k).
With no hook set this is the fast path: the same arithmetic as the unhooked samplers (golden test).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import torch
from torch import nn

from .backbones import Denoiser, step_contexts

# (x (N, T_p, D_a), x_hat (N, T_p, D_a), k) -> g (N, T_p, D_a): a direction in normalised action space along
# which the clean chunk should move (e.g. -w * grad of a distance at x_hat). Both families shift the level's
# clean estimate by (noise fraction) * g: flow adds g to the velocity (x_hat moves by (1 - tau) g), diffusion
# subtracts sqrt(a_t) g from eps (x0 moves by sqrt(1 - a_t) g), so one term serves both and fades as t -> data.
GuidanceTerm = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]
Composer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x (N, T_p, D_a), net time t) -> prediction


def weighted_composer(members: Sequence[tuple[nn.Module, torch.Tensor]], weights: Sequence[float],
                      t_steps: torch.Tensor | None = None) -> Composer:
    """``sum_i w_i net_i(x, t, cond_i)`` over (net, cond (B, C)) members of the policy's type: GPC's convex mix of
    K policies (same action space and normaliser); CFG's ``v_u + w (v_c - v_u)`` is weights (1 - w, w).
    ``t_steps``: the sampler's net times; with them the FiLM conditioning of :class:`Denoiser` members is computed
    once for all levels (:func:`step_contexts`, as the unhooked path does) instead of at every level."""
    if not members or len(members) != len(weights):
        raise ValueError(f"weighted_composer: {len(members)} members, {len(weights)} weights; need equal, >= 1")
    hoisted: dict[tuple[int, int], list] = {}  # (member, rows) -> per-level contexts

    def member(i: int, net, c: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        c = c.repeat_interleave(n // len(c), dim=0)  # conds of B rows serve B * K candidates
        if t_steps is None or not isinstance(net, Denoiser):
            return net(x, t.expand(n), c)
        if (i, n) not in hoisted:
            hoisted[(i, n)] = step_contexts(net, t_steps, c)
        return net.denoise(x, hoisted[(i, n)][int((t_steps == t).nonzero()[0, 0])])

    def compose(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return sum(w * member(i, net, c, x, t) for i, ((net, c), w) in enumerate(zip(members, weights)))

    return compose


@dataclass
class SamplerHooks:
    """Steering hooks of ``predict_chunk(obs, noise, hooks)``; all off by default."""

    noise: Callable[[torch.Tensor], torch.Tensor] | None = None  # cond (N, C) -> x_0 (N, T_p, D_a) if no noise given
    guidance: Sequence[GuidanceTerm] = ()  # terms summed into every level's prediction (see GuidanceTerm)
    mcmc_steps: int = 0  # ITPS stochastic sampling: re-noise x_hat to the level and predict again, M times per level
    composer: Composer | None = None  # a combination of predictions instead of the policy's net
    # (obs, candidates (B, K, T_p, D_a) robot units) -> index (B,): pick one of K chunks sampled in one batch
    reranker: Callable[[Mapping, torch.Tensor], torch.Tensor] | None = None
    n_candidates: int = 1  # K; > 1 needs a reranker
    # the K candidates are reranked on their clean-chunk estimates x_hat after this level's prediction and only the
    # chosen row is integrated on (the sampler is deterministic, so it finishes as the same chunk it would have
    # been); None: the finished chunks are reranked. The K-row work shrinks to rerank_level + 1 levels.
    rerank_level: int | None = None
    start_level: int = 0  # the initial x is at this level: levels 0..start_level-1 are skipped (RTI-DP warm start)

    def __post_init__(self) -> None:
        if self.mcmc_steps < 0 or self.start_level < 0:
            raise ValueError(f"SamplerHooks: mcmc_steps={self.mcmc_steps} and start_level={self.start_level} "
                             "must be >= 0")
        if self.n_candidates < 1 or (self.n_candidates > 1) != (self.reranker is not None):
            raise ValueError(f"SamplerHooks: n_candidates={self.n_candidates}, reranker={self.reranker!r}; a reranker "
                             "goes with n_candidates > 1")
        if self.rerank_level is not None and (self.n_candidates < 2 or self.rerank_level < self.start_level):
            raise ValueError(f"SamplerHooks: rerank_level={self.rerank_level} needs n_candidates > 1 and a level >= "
                             f"start_level={self.start_level}")
        self.guidance = tuple(self.guidance)

    @property
    def in_loop(self) -> bool:
        """Whether any hook acts inside the integration loop (the Gaussian policy has none)."""
        return (bool(self.guidance) or self.mcmc_steps > 0 or self.composer is not None or self.start_level > 0
                or self.rerank_level is not None)


NO_HOOKS = SamplerHooks()


def model_fn(net: nn.Module, t_steps: torch.Tensor, cond: torch.Tensor,
             composer: Composer | None = None, group: int = 1) -> Callable[[torch.Tensor, int], torch.Tensor]:
    """(x, k) -> the net's output at level k (net time ``t_steps[k]``): the composer if given, else FiLM hoisted
    out of the loop for :class:`Denoiser` nets (:func:`step_contexts`), else a plain ``net(x, t, cond)``.

    ``group``: cond holds each observation's row that many times in a row (V-GPS's K candidates): the FiLM
    contexts are computed once per observation and broadcast (one observation) or repeated to x's rows. x may
    also have ONE row per observation (candidates reranked early), which takes the observation's context."""
    if composer is not None:
        return lambda x, k: composer(x, t_steps[k])
    unique = cond[::group]
    if isinstance(net, Denoiser):
        ctxs = step_contexts(net, t_steps, unique)
        return lambda x, k: net.denoise(x, _ctx_rows(ctxs[k], x.shape[0]))
    return lambda x, k: net(x, t_steps[k].expand(x.shape[0]), unique.repeat_interleave(x.shape[0] // len(unique), 0))


def _ctx_rows(ctx: list, rows: int) -> list:
    """Per-observation FiLM contexts for ``rows`` rows: as they are when they match or broadcast (one row)."""
    have = ctx[0][0].shape[0]
    if have in (1, rows):
        return ctx
    return [(scale.repeat_interleave(rows // have, 0), shift.repeat_interleave(rows // have, 0)) for scale, shift in ctx]


def guidance_sum(terms: Sequence[GuidanceTerm], x: torch.Tensor, x_hat: torch.Tensor, k: int) -> torch.Tensor:
    """Sum of the guidance terms, each run with gradients on (also under ``inference_mode``) on leaf copies of
    x and x_hat that require grad; the result is detached, so only the terms ever build a graph."""
    with torch.inference_mode(False), torch.enable_grad():
        x, x_hat = x.detach().clone().requires_grad_(True), x_hat.detach().clone().requires_grad_(True)
        g = sum(term(x, x_hat, k) for term in terms)
    return g.detach()


def integrate(x: torch.Tensor, n_levels: int, predict, update, renoise=None, mcmc_steps: int = 0,
              start: int = 0, select: tuple[int, Callable[[torch.Tensor], torch.Tensor]] | None = None) -> torch.Tensor:
    """The one loop: for each level k (from ``start``, where x is), 1. predict, 2. MCMC corrector (not on the
    first level, where x is the initial noise the corrector would discard), 3. at ``select = (level, rows_fn)``'s
    level keep only the rows ``rows_fn(x_hat)`` returns, 4. step to level k + 1."""
    if not 0 <= start < n_levels:
        raise ValueError(f"start level {start} must be in [0, {n_levels}) (the sampler's levels)")
    if select is not None and not start <= select[0] < n_levels:
        raise ValueError(f"rerank level {select[0]} must be in [{start}, {n_levels}) (the sampler's levels)")
    for k in range(start, n_levels):
        out, x_hat = predict(x, k)
        for _ in range(mcmc_steps if k > 0 else 0):
            x = renoise(x_hat, k, torch.randn_like(x))
            out, x_hat = predict(x, k)
        if select is not None and k == select[0]:
            rows = select[1](x_hat)
            x, out, x_hat = x[rows], out[rows], x_hat[rows]
        x = update(x, out, x_hat, k)
    return x
