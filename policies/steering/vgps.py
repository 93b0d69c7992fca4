"""V-GPS (Nakamoto et al. 2024): sample K chunks of the frozen policy in ONE batched call, score each with a
critic Q(s, a_chunk), execute argmax (beta = 0) or a draw from softmax(Q / beta).

Noise (the Policy contract): ``default_noise`` is (B, K, T_p, D_a), one draw per candidate, so seeded rollouts
give the same episodes in evaluate and deploy. A (B, T_p, D_a) noise is also accepted: candidate k uses its
entries under a fixed permutation (k = 0 the noise itself; a permutation of iid normals is again N(0, I)), so the
call is deterministic given any noise. The softmax draw's uniform comes from the row's noise bytes.
"""
from __future__ import annotations

import dataclasses
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from armflow.policies.sampler import SamplerHooks

from .base import SteeredPolicy
from .critic import ChunkCritic, check_critic, load_critic

CRITIC_DIR = "steering_critic"  # where an export keeps its critic


@dataclass
class VGPSConfig:
    critic: str = ""        # critic dir (config.json + model.safetensors from `armflow critic`)
    K: int = 16             # candidate chunks per observation, sampled in one batch
    beta: float = 0.0       # 0: argmax Q; > 0: sample softmax(Q / beta)

    def __post_init__(self):
        if not self.critic:
            raise ValueError("steering.critic: V-GPS needs a critic dir (train one with `armflow critic`)")
        if int(self.K) < 2 or float(self.beta) < 0:
            raise ValueError(f"steering.K={self.K} must be >= 2 and steering.beta={self.beta} >= 0")


def pick_candidates(scores: torch.Tensor, beta: float, u: torch.Tensor | None = None) -> torch.Tensor:
    """scores (B, K) -> index (B,): argmax for beta = 0, else inverse-CDF draw of softmax(scores / beta) with
    uniforms ``u`` (B,) (torch's RNG if None)."""
    if beta == 0:
        return scores.argmax(dim=1)
    p = torch.softmax(scores.double() / beta, dim=1)
    u = torch.rand(len(scores), dtype=p.dtype) if u is None else u.to(p)
    return torch.searchsorted(p.cumsum(1), u.reshape(-1, 1)).reshape(-1).clamp_max(scores.shape[1] - 1)


def _row_uniform(noise: torch.Tensor) -> torch.Tensor:
    """One uniform in [0, 1) per row of ``noise`` (B, ...), a deterministic function of the row's bytes."""
    rows = noise.detach().cpu().float().numpy().reshape(len(noise), -1)
    return torch.tensor([int.from_bytes(hashlib.sha256(r.tobytes()).digest()[:7], "little") / 2 ** 56 for r in rows])


class VGPSPolicy(SteeredPolicy):
    steering_type = "vgps"

    def __init__(self, base, spec: VGPSConfig, critic: ChunkCritic | None = None):
        super().__init__(base, spec)
        if base.policy_type not in ("flow", "diffusion"):
            raise ValueError(f"steering.type=vgps: the policy is {base.policy_type!r}; V-GPS samples K different "
                             "chunks, which needs a sampled policy (flow or diffusion)")
        self.critic = critic if critic is not None else load_critic(spec.critic)
        check_critic(self.critic, base, str(spec.critic))
        gen = torch.Generator().manual_seed(0)
        n = base.horizon * base.action_dim
        self.register_buffer("perms", torch.stack([torch.arange(n)] + [torch.randperm(n, generator=gen)
                                                                        for _ in range(int(spec.K) - 1)]), False)

    def default_noise(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        k = int(self.spec.K)
        return self.base.default_noise(batch * k, generator).reshape(batch, k, self.base.horizon, self.base.action_dim)

    def candidate_noise(self, noise, batch: int) -> torch.Tensor | None:
        """Given noise -> (B, K, T_p, D_a) (see the module docstring); None stays None."""
        if noise is None:
            return None
        k, shape = int(self.spec.K), (self.base.horizon, self.base.action_dim)
        noise = torch.as_tensor(noise, dtype=torch.float32)
        if tuple(noise.shape) == (batch, *shape):
            return noise.reshape(batch, -1)[:, self.perms].reshape(batch, k, *shape)
        if tuple(noise.shape) != (batch, k, *shape):
            raise ValueError(f"vgps: noise has shape {tuple(noise.shape)}; expected (B={batch}, K={k}, T_p={shape[0]}, "
                             f"D_a={shape[1]}) or (B, T_p, D_a)")
        return noise

    def _steered_chunk(self, obs, noise, hooks: SamplerHooks, diag: dict) -> torch.Tensor:
        if hooks.reranker is not None or hooks.n_candidates > 1:
            raise ValueError("vgps: hooks.reranker/n_candidates are V-GPS's own; pass other hooks only")
        batch = len(next(iter(obs.values())))
        noise = self.candidate_noise(noise, batch)
        u = None if noise is None or self.spec.beta == 0 else _row_uniform(noise)

        def rerank(obs_, candidates):
            t0 = time.perf_counter()
            scores = self.critic.score(obs_, candidates)
            chosen = pick_candidates(scores, float(self.spec.beta), u)
            diag.update(scores=scores.tolist(), chosen=chosen.tolist(), hook_ms=(time.perf_counter() - t0) * 1e3)
            return chosen

        return self.base.predict_chunk(obs, noise=noise, hooks=dataclasses.replace(
            hooks, reranker=rerank, n_candidates=int(self.spec.K)))

    def _save_extras(self, directory: Path) -> dict:
        self.critic.save_pretrained(directory / CRITIC_DIR)
        return {**self.steering, "critic": CRITIC_DIR}


def load_vgps_export(directory: Path, base, spec: dict) -> VGPSPolicy:
    """The V-GPS policy of an export: the critic dir in ``config.json`` is relative to the export."""
    params = {k: v for k, v in spec.items() if k != "type"}
    critic_dir = Path(directory) / params["critic"]
    return VGPSPolicy(base, VGPSConfig(**{**params, "critic": str(critic_dir)}))
