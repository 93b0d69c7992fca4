"""CFG (classifier-free guidance; Ho & Salimans 2022, CFGRL: Frans et al. 2025): a policy trained with a condition
obs key and condition dropout (``condition_key``, ``condition_dropout`` in its config) samples with
``v_u + w (v_c - v_u)``: the composer ``weighted_composer`` with weights (1 - w, w) over the same net conditioned
on the null condition (zeros) and on the condition. w = 1 is the conditional policy itself, w = 0 the
unconditional one, w > 1 pushes further toward what distinguishes the condition.

``value``: the condition to steer toward, broadcast over the batch and T_o (the env need not provide the key; it
then leaves ``obs_spec``); empty: the condition in the obs.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from armflow.policies.sampler import SamplerHooks, weighted_composer

from .base import SteeredPolicy


@dataclass
class CFGConfig:
    w: float = 1.0          # guidance weight: 0 unconditional, 1 conditional, > 1 guided
    value: tuple = ()       # the condition (raw units, e.g. a one-hot [1, 0]); empty = the obs's own


class CFGPolicy(SteeredPolicy):
    steering_type = "cfg"

    def __init__(self, base, spec: CFGConfig):
        super().__init__(base, spec)
        key = getattr(base.cfg, "condition_key", None)
        if base.policy_type not in ("flow", "diffusion"):
            raise ValueError(f"steering.type=cfg: the policy is {base.policy_type!r}; guidance needs a sampling loop "
                             "(flow, diffusion)")
        if not key or float(getattr(base.cfg, "condition_dropout", 0.0)) <= 0:
            raise ValueError(f"steering.type=cfg: the policy was trained without condition dropout (config "
                             f"condition_key={key!r}, condition_dropout={getattr(base.cfg, 'condition_dropout', 0.0)}); "
                             "train with policy.condition_key=KEY policy.condition_dropout=0.1 for an unconditional model")
        self.key = key
        if spec.value and len(spec.value) != base.obs_spec[key][-1]:
            raise ValueError(f"steering.value={list(spec.value)}: {len(spec.value)} values; the policy's condition "
                             f"{key!r} has shape {base.obs_spec[key]}")

    @property
    def obs_spec(self) -> dict:
        return {k: v for k, v in self.base.obs_spec.items() if k != self.key or not self.spec.value}

    def _with_condition(self, obs) -> tuple[dict, dict]:
        """(obs with the condition, obs with the null condition)."""
        ref = next(v for k, v in obs.items() if k != self.key)
        b = len(ref)
        if self.spec.value:
            c = torch.tensor(self.spec.value, dtype=torch.float32).expand(b, self.base.n_obs_steps, -1)
        else:
            c = torch.as_tensor(obs[self.key], dtype=torch.float32)
        return {**obs, self.key: c}, {**obs, self.key: torch.zeros_like(c)}

    def _steered_chunk(self, obs, noise, hooks: SamplerHooks, diag: dict) -> torch.Tensor:
        if hooks.composer is not None:
            raise ValueError("cfg: hooks.composer is CFG's own; pass other hooks only")
        obs_c, obs_u = self._with_condition(obs)
        w = float(self.spec.w)
        pairs = [(self.base.net, self.base.encode_obs(obs_u)), (self.base.net, self.base.encode_obs(obs_c))]
        t_steps = self.base.euler_t if self.base.policy_type == "flow" else self.base.ddim_t
        composer = weighted_composer(pairs, (1.0 - w, w), t_steps)
        return self.base.predict_chunk(obs_c, noise=noise, hooks=dataclasses.replace(hooks, composer=composer))

    def _save_extras(self, directory) -> dict:
        return self.steering


def load_cfg_export(directory, base, spec: dict) -> CFGPolicy:
    params = {k: v for k, v in spec.items() if k != "type"}
    return CFGPolicy(base, CFGConfig(w=float(params.get("w", 1.0)), value=tuple(params.get("value") or ())))
