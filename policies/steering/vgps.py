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
from torch import nn

from armflow.policies.sampler import SamplerHooks

from .base import SteeredPolicy
from .critic import ChunkCritic, EnsembleHeads, check_critic, load_critic

CRITIC_DIR = "steering_critic"  # where an export keeps its critic


@dataclass
class VGPSConfig:
    critic: str | tuple = ""  # critic dir (config.json + model.safetensors from `armflow critic`), or several
                              # (critics trained with other seeds): a candidate's score is the mean of their Q
    K: int = 16             # candidate chunks per observation, sampled in one batch
    beta: float = 0.0       # 0: argmax Q; > 0: sample softmax(Q / beta)
    # score the K candidates' clean-chunk estimates after this many sampler steps and finish only the chosen one
    # (deterministic samplers: it finishes as the chunk it would have been); null: score the finished chunks.
    # The K-row work is score_step of the policy's steps, the rest runs on one row (README Measured: gain, latency)
    score_step: int | None = None

    def __post_init__(self):
        if not self.critic_dirs or not all(self.critic_dirs):
            raise ValueError(f"steering.critic={self.critic!r}: V-GPS needs a critic dir or a list of them (train one "
                             "with `armflow critic`)")
        if int(self.K) < 2 or float(self.beta) < 0:
            raise ValueError(f"steering.K={self.K} must be >= 2 and steering.beta={self.beta} >= 0")
        if self.score_step is not None and int(self.score_step) < 1:
            raise ValueError(f"steering.score_step={self.score_step} must be >= 1 (sampler steps before scoring) or "
                             "null (score the finished chunks)")

    @property
    def critic_dirs(self) -> tuple:
        return (self.critic,) if isinstance(self.critic, (str, Path)) else tuple(self.critic)


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
        steps = int(base.num_inference_steps)
        if spec.score_step is not None and int(spec.score_step) > steps:
            raise ValueError(f"steering.score_step={spec.score_step}: the policy samples in num_inference_steps="
                             f"{steps}; expected 1..{steps} or null")
        dirs = spec.critic_dirs
        self.critic = critic if critic is not None else load_critic(dirs[0])
        self.extra_critics = nn.ModuleList(load_critic(d) for d in dirs[1:])  # an ensemble's other members
        for member, source in zip(self.critics, dirs):
            check_critic(member, base, str(source))
        self.heads = EnsembleHeads(self.critics)  # every member's twin heads in one stack of batched matmuls
        gen = torch.Generator().manual_seed(0)
        n = base.horizon * base.action_dim
        self.register_buffer("perms", torch.stack([torch.arange(n)] + [torch.randperm(n, generator=gen)
                                                                        for _ in range(int(spec.K) - 1)]), False)

    @property
    def critics(self) -> list[ChunkCritic]:
        return [self.critic, *self.extra_critics]

    def score(self, obs, candidates: torch.Tensor) -> torch.Tensor:
        """(B, K) candidate scores: the critic's min-twin Q, or the mean of an ensemble's (critics trained with
        other seeds pick alike where one critic's pick rides on its own errors; measured in the README)."""
        h = self.critic.inputs(obs, candidates)  # every member reads the policy's obs keys and normaliser (check_critic)
        return self.heads(h).min(1).values.mean(0).reshape(candidates.shape[:2])

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
            scores = self.score(obs_, candidates)
            chosen = pick_candidates(scores, float(self.spec.beta), u)
            diag.update(scores=scores.tolist(), chosen=chosen.tolist(), hook_ms=(time.perf_counter() - t0) * 1e3)
            return chosen

        step = self.spec.score_step
        early = None if step is None or int(step) == self.base.num_inference_steps else int(step) - 1
        return self.base.predict_chunk(obs, noise=noise, hooks=dataclasses.replace(
            hooks, reranker=rerank, n_candidates=int(self.spec.K), rerank_level=early))

    def _save_extras(self, directory: Path) -> dict:
        names = [CRITIC_DIR] + [f"{CRITIC_DIR}_{i}" for i in range(1, len(self.critics))]
        for member, name in zip(self.critics, names):
            member.save_pretrained(directory / name)
        return {**self.steering, "critic": names[0] if len(names) == 1 else names}


def load_vgps_export(directory: Path, base, spec: dict) -> VGPSPolicy:
    """The V-GPS policy of an export: the critic dir(s) in ``config.json`` are relative to the export."""
    params = {k: v for k, v in spec.items() if k != "type"}
    dirs = tuple(str(Path(directory) / d) for d in VGPSConfig(**params).critic_dirs)
    return VGPSPolicy(base, VGPSConfig(**{**params, "critic": dirs[0] if len(dirs) == 1 else dirs}))
