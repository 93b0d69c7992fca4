"""Q(s, a_chunk) for value-guided reranking (V-GPS): a twin-Q MLP over the obs window and the executed chunk.

Inputs: the obs window ``{key: (B, T_o, D)}`` (vector keys) and the first T_a actions of a chunk (B, T_a, D_a),
both in robot units, normalised inside with the POLICY's normaliser stats the critic was trained with (stored
in ``model.safetensors`` and, readable, in ``config.json``); so a critic only ever scores chunks of the policy it
was trained for, and :func:`check_critic` refuses any other. Score = min of the twin heads (pessimistic).
Saved as ``config.json`` + ``model.safetensors`` (no pickle).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from armflow.policies.normalizer import Normalizer
from armflow.policies.steering.model_io import CONFIG_FILE, WEIGHTS_FILE, load_model, save_model
from armflow.policies.rl.nets import TwinQ, ValueCritic

FORMAT_NAME, FORMAT_VERSION = "armflow-critic", 1
ACTION = "action"


@dataclass
class CriticConfig:
    obs_keys: tuple = ()          # vector obs keys of the policy the critic reads
    obs_dims: tuple = ()          # D per obs key
    n_obs_steps: int = 2          # T_o (the policy's)
    n_action_steps: int = 8       # T_a: the executed prefix of a chunk that is scored (the policy's)
    horizon: int = 16             # T_p of the policy's chunks
    action_dim: int = 7           # D_a
    hidden: int = 256
    n_layers: int = 2
    method: str = "calql"         # how it was trained: calql | iql


class ChunkCritic(nn.Module):
    """Twin Q(s, a_{0:T_a}) (+ V(s) for IQL): ``score(obs, candidates (B, K, >=T_a, D_a)) -> (B, K)``."""

    def __init__(self, cfg: CriticConfig):
        super().__init__()
        self.cfg = cfg
        shapes = {k: (int(d),) for k, d in zip(cfg.obs_keys, cfg.obs_dims)}
        self.normalizer = Normalizer({**shapes, ACTION: (cfg.action_dim,)}, None)
        self.obs_dim = cfg.n_obs_steps * sum(int(d) for d in cfg.obs_dims)
        self.act_dim = cfg.n_action_steps * cfg.action_dim
        self.q = TwinQ(self.obs_dim, self.act_dim, cfg.hidden, cfg.n_layers)
        self.v = ValueCritic(self.obs_dim, cfg.hidden, cfg.n_layers)  # IQL's V(s); unused by Cal-QL

    @classmethod
    def for_policy(cls, policy, hidden: int = 256, n_layers: int = 2, method: str = "calql") -> "ChunkCritic":
        """A new critic over ``policy``'s vector obs keys and executed chunk, with its normaliser stats copied."""
        keys = tuple(k for k, s in policy.obs_spec.items() if len(s) == 1)
        if not keys:
            raise ValueError(f"critic: the policy has no vector observation keys (it has {sorted(policy.obs_spec)}); "
                             "the chunk critic reads vector observations only")
        cfg = CriticConfig(keys, tuple(policy.obs_spec[k][0] for k in keys), int(policy.n_obs_steps),
                           int(policy.n_action_steps), int(policy.horizon), int(policy.action_dim), hidden, n_layers,
                           method)
        critic = cls(cfg)
        own = critic.normalizer.state_dict()
        critic.normalizer.load_state_dict({k: policy.normalizer.state_dict()[k].clone() for k in own})
        return critic

    def features(self, obs: Mapping) -> torch.Tensor:
        """Obs window {key: (B, T_o, D)} robot units -> (B, T_o * sum D) normalised."""
        parts = []
        for k, d in zip(self.cfg.obs_keys, self.cfg.obs_dims):
            x = torch.as_tensor(obs[k], dtype=torch.float32)
            if tuple(x.shape[1:]) != (self.cfg.n_obs_steps, int(d)):
                raise ValueError(f"critic: obs[{k!r}] has shape {tuple(x.shape)}; expected (B, T_o="
                                 f"{self.cfg.n_obs_steps}, {d})")
            parts.append(self.normalizer.normalize(k, x).flatten(1))
        return torch.cat(parts, dim=-1)

    def actions(self, chunks: torch.Tensor) -> torch.Tensor:
        """Chunks (..., >= T_a, D_a) robot units -> normalised executed prefix (..., T_a * D_a)."""
        a = self.normalizer.normalize(ACTION, torch.as_tensor(chunks, dtype=torch.float32)[..., :self.cfg.n_action_steps, :])
        return a.flatten(-2)

    def q_values(self, feat: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """(feat (N, F), act (N, A)) normalised -> twin Q (2, N)."""
        return torch.stack(self.q(feat, act))

    def inputs(self, obs: Mapping, candidates: torch.Tensor) -> torch.Tensor:
        """The heads' input for K candidate chunks per observation: (B, K, T_p, D_a) robot units -> (B * K, F + A)."""
        b, k = candidates.shape[:2]
        return torch.cat([self.features(obs).repeat_interleave(k, dim=0), self.actions(candidates).reshape(b * k, -1)], -1)

    @torch.no_grad()
    def score(self, obs: Mapping, candidates: torch.Tensor) -> torch.Tensor:
        """min-twin Q of K candidate chunks per observation: candidates (B, K, T_p, D_a) robot units -> (B, K)."""
        h = self.inputs(obs, candidates)
        return torch.minimum(self.q.q1(h), self.q.q2(h)).reshape(candidates.shape[:2])

    # ----------------------------------------------------------------- checkpoint
    def save_pretrained(self, directory: str | os.PathLike, extra: Mapping | None = None) -> Path:
        return save_model(self, directory, (FORMAT_NAME, FORMAT_VERSION), self.cfg, (*self.cfg.obs_keys, ACTION), extra)


class EnsembleHeads(nn.Module):
    """The twin heads of several critics of one architecture (an ensemble trained with other seeds) as batched
    matmuls instead of 2 * M small MLPs: what dominates scoring K = 16 candidates at batch 1 is the per-layer call
    overhead, not the arithmetic. ``forward(h (N, F + A)) -> (M, 2, N)``. The weights are copied at construction
    (non-persistent buffers, so ``.to(device)`` moves them): the critics are frozen, as V-GPS uses them."""

    def __init__(self, critics: list[ChunkCritic]):
        super().__init__()
        first = critics[0].cfg
        for c in critics[1:]:
            if (c.cfg.hidden, c.cfg.n_layers, c.cfg.obs_keys) != (first.hidden, first.n_layers, first.obs_keys):
                raise ValueError(f"critic ensemble: {getattr(c, 'source', 'a member')} has hidden={c.cfg.hidden}, "
                                 f"n_layers={c.cfg.n_layers}, obs_keys={c.cfg.obs_keys}; the first member has "
                                 f"{first.hidden}, {first.n_layers}, {first.obs_keys}")
        self.members, self.kinds = len(critics), []
        heads = [head for c in critics for head in (c.q.q1, c.q.q2)]
        for i, mods in enumerate(zip(*heads)):  # one layer of every head's Sequential at a time
            if isinstance(mods[0], (nn.Linear, nn.LayerNorm)):
                linear = isinstance(mods[0], nn.Linear)
                weight = torch.stack([m.weight.detach().t() if linear else m.weight.detach().unsqueeze(0) for m in mods])
                self.register_buffer(f"w{i}", weight, persistent=False)  # (H, in, out) | (H, 1, D)
                self.register_buffer(f"b{i}", torch.stack([m.bias.detach() for m in mods]).unsqueeze(1), persistent=False)
            self.kinds.append("linear" if isinstance(mods[0], nn.Linear) else "ln" if isinstance(mods[0], nn.LayerNorm)
                              else "relu")

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = h.unsqueeze(0).expand(2 * self.members, -1, -1)
        for i, kind in enumerate(self.kinds):
            if kind == "linear":
                h = torch.baddbmm(getattr(self, f"b{i}"), h, getattr(self, f"w{i}"))
            elif kind == "ln":
                h = torch.addcmul(getattr(self, f"b{i}"), nn.functional.layer_norm(h, h.shape[-1:]), getattr(self, f"w{i}"))
            else:
                h = torch.relu(h)
        return h.reshape(self.members, 2, -1)


def load_critic(directory: str | os.PathLike) -> ChunkCritic:
    """Rebuild a critic saved by ``ChunkCritic.save_pretrained``; errors name the file and what was expected."""
    critic = load_model(directory, (FORMAT_NAME, FORMAT_VERSION), ChunkCritic, CriticConfig,
                        "a critic from `armflow critic`")
    critic.source = str(directory)
    return critic


def check_critic(critic: ChunkCritic, policy, source: str) -> None:
    """Refuse a critic trained for another policy: action dim, T_o, T_a, T_p, obs keys/dims and normaliser stats
    must all match (``source`` names the critic dir in the message)."""
    c = critic.cfg
    want = {"action_dim": policy.action_dim, "n_obs_steps": policy.n_obs_steps,
            "n_action_steps": policy.n_action_steps, "horizon": policy.horizon}
    for key, value in want.items():
        if int(getattr(c, key)) != int(value):
            raise ValueError(f"{source}/{CONFIG_FILE}: critic {key}={getattr(c, key)} but the policy has {key}={value}; "
                             "train the critic for this policy (armflow critic checkpoint=DIR)")
    for key, dim in zip(c.obs_keys, c.obs_dims):
        if tuple(policy.obs_spec.get(key, ())) != (int(dim),):
            raise ValueError(f"{source}/{CONFIG_FILE}: critic reads obs {key!r} of shape ({dim},); the policy has "
                             f"{tuple(policy.obs_spec.get(key, ())) or 'no such key'} (obs_spec {sorted(policy.obs_spec)})")
    theirs = policy.normalizer.state_dict()
    for name, value in critic.normalizer.state_dict().items():
        if name not in theirs or not torch.allclose(value, theirs[name].to(value), atol=1e-6, rtol=1e-5):
            raise ValueError(f"{source}/{WEIGHTS_FILE}: critic normaliser {name} differs from the policy's (max |diff| "
                             f"{(value - theirs[name].to(value)).abs().max() if name in theirs else 'missing'}); "
                             "the critic was trained with another policy's stats")
