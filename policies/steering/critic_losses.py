"""Offline critic losses for V-GPS, pure functions over one minibatch (dicts of named terms).

Notation per chunk transition i: q (2, B) twin Q(s, a_data), y (B,) the TD target, q_ood (2, B, M) Q at M
out-of-distribution chunks (the base policy's own samples and uniform chunks), g (B,) the Monte-Carlo return of
the recorded episode from s (the behaviour policy's value).

- Cal-QL (Nakamoto et al. 2023): TD + alpha * (logsumexp_j max(Q(s, a_j), g) - Q(s, a_data)): CQL's push-down
  of OOD chunks, but never below the behaviour return g, so the values stay calibrated (V-GPS, alpha 5).
- IQL (Kostrikov et al. 2021): V(s) is the tau-expectile of min-twin Q_target(s, a_data); Q regresses onto
  r + gamma (1 - d) V(s').
"""
from __future__ import annotations

import math

import torch


def td_target(reward: torch.Tensor, done: torch.Tensor, gamma: float, next_value: torch.Tensor) -> torch.Tensor:
    """y = r + gamma (1 - d) V(s'), no gradient."""
    return (reward + gamma * (1.0 - done) * next_value).detach()


def calql_loss(q: torch.Tensor, y: torch.Tensor, q_ood: torch.Tensor, mc_return: torch.Tensor,
               alpha: float) -> tuple[torch.Tensor, dict[str, float]]:
    """Twin-Q Cal-QL loss; q (2, B), y (B,), q_ood (2, B, M), mc_return (B,) -> (loss, named terms)."""
    td = (q - y).pow(2).mean(-1).sum()
    calibrated = torch.maximum(q_ood, mc_return.reshape(1, -1, 1))
    # logsumexp over the M chunks minus log M: a soft max that equals Q when all M agree
    push_down = torch.logsumexp(calibrated, dim=-1) - math.log(q_ood.shape[-1])
    cql = (push_down - q).mean(-1).sum()
    loss = td + alpha * cql
    return loss, {"losses/td": td.item(), "losses/cql": cql.item(), "losses/total": loss.item(),
                  "charts/q_data": q.mean().item(), "charts/q_ood": q_ood.mean().item(),
                  "charts/calibrated_frac": (q_ood < mc_return.reshape(1, -1, 1)).float().mean().item()}


def expectile_loss(diff: torch.Tensor, tau: float) -> torch.Tensor:
    """Asymmetric L2: |tau - 1(diff < 0)| diff^2, mean (diff = target - prediction)."""
    weight = torch.where(diff < 0, 1.0 - tau, tau)
    return (weight * diff.pow(2)).mean()


def iql_loss(q: torch.Tensor, v: torch.Tensor, q_target_data: torch.Tensor, y: torch.Tensor,
             tau: float) -> tuple[torch.Tensor, dict[str, float]]:
    """IQL's V and Q losses; q (2, B), v (B,) V(s), q_target_data (B,) min-twin target Q(s, a_data) (no grad),
    y (B,) = r + gamma (1 - d) V(s') -> (loss, named terms)."""
    v_loss = expectile_loss(q_target_data.detach() - v, tau)
    q_loss = (q - y).pow(2).mean(-1).sum()
    loss = v_loss + q_loss
    return loss, {"losses/v": v_loss.item(), "losses/td": q_loss.item(), "losses/total": loss.item(),
                  "charts/q_data": q.mean().item(), "charts/v": v.mean().item()}
