"""GPC (Cao et al. 2026, "Compose Your Policies!"): sample with a convex combination ``sum_i w_i v_i`` of the
velocity (flow) / eps (diffusion) predictions of several frozen policies over the same action space.

The first member is the steered policy itself (its sampler, noise and normaliser run the loop); each member
encodes its own observations (a state policy and an image policy compose), so the wrapper's ``obs_spec`` is the
union. Members must agree on what the mix means: policy type, action dim, horizon, T_o, T_a, the action
normaliser and the sampler's time grid.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from armflow.policies.sampler import SamplerHooks, weighted_composer

from .base import SteeredPolicy

MEMBER_DIR = "gpc_member_{}"  # where an export keeps the other members
SAMPLER_FIELDS = {"flow": ("num_inference_steps", "time_scale"),
                  "diffusion": ("num_inference_steps", "num_train_timesteps", "beta_schedule", "prediction_type")}


@dataclass
class GPCConfig:
    policies: tuple = ()    # the other members' checkpoint dirs (the steered policy is member 0)
    weights: tuple = ()     # one per member, >= 0, summing to 1 (member 0 first)

    def __post_init__(self):
        if not self.policies:
            raise ValueError("steering.policies: GPC composes >= 2 policies; list the other checkpoint dirs")
        w = [float(x) for x in self.weights]
        if len(w) != len(self.policies) + 1 or min(w) < 0 or abs(sum(w) - 1.0) > 1e-6:
            raise ValueError(f"steering.weights={list(self.weights)}: need {len(self.policies) + 1} weights (the "
                             "steered policy first), each >= 0, summing to 1")


def check_members(base, members: list, names: list[str]) -> None:
    """Refuse members the mix is undefined for; errors name the member's dir and what was expected."""
    if base.policy_type not in SAMPLER_FIELDS:
        raise ValueError(f"steering.type=gpc: the policy is {base.policy_type!r}; composing predictions needs a "
                         f"sampling loop ({', '.join(SAMPLER_FIELDS)})")
    ref = base.normalizer.state_dict()
    for m, name in zip(members, names):
        same = {"policy_type": (m.policy_type, base.policy_type), "action_dim": (m.action_dim, base.action_dim),
                "horizon": (m.horizon, base.horizon), "n_obs_steps": (m.n_obs_steps, base.n_obs_steps),
                "n_action_steps": (m.n_action_steps, base.n_action_steps)}
        same.update({f: (getattr(m.cfg, f), getattr(base.cfg, f)) for f in SAMPLER_FIELDS[base.policy_type]})
        for key, (got, want) in same.items():
            if got != want:
                raise ValueError(f"steering.policies: {name} has {key}={got!r} but the steered policy has {want!r}; "
                                 "GPC composes policies over the same action space and sampler")
        for buf in ("action__offset", "action__out_scale"):
            theirs = m.normalizer.state_dict()[buf]
            if not torch.allclose(theirs, ref[buf], atol=1e-6, rtol=1e-5):
                raise ValueError(f"steering.policies: {name} has another action normaliser ({buf} max |diff| "
                                 f"{(theirs - ref[buf]).abs().max():.3g}); GPC needs one action space")


class GPCPolicy(SteeredPolicy):
    steering_type = "gpc"

    def __init__(self, base, spec: GPCConfig, members: list | None = None):
        super().__init__(base, spec)
        if members is None:
            from armflow.policies.factory import load_policy

            members = [load_policy(p, steered=False) for p in spec.policies]
        check_members(base, members, [str(p) for p in spec.policies])
        self.members = torch.nn.ModuleList([m.eval() for m in members])
        self.weights = tuple(float(w) for w in spec.weights)

    @property
    def obs_spec(self) -> dict:
        return {k: v for m in (self.base, *self.members) for k, v in m.obs_spec.items()}

    def _steered_chunk(self, obs, noise, hooks: SamplerHooks, diag: dict) -> torch.Tensor:
        if hooks.composer is not None:
            raise ValueError("gpc: hooks.composer is GPC's own; pass other hooks only")
        t0 = time.perf_counter()
        pairs = [(self.base.net, self.base.encode_obs(obs))] + [(m.net, m.encode_obs(obs)) for m in self.members]
        diag["hook_ms"] = (time.perf_counter() - t0) * 1e3  # the members' encoders (their nets run in the loop)
        t_steps = self.base.euler_t if self.base.policy_type == "flow" else self.base.ddim_t  # same in every member
        composer = weighted_composer(pairs, self.weights, t_steps)
        return self.base.predict_chunk(obs, noise=noise, hooks=dataclasses.replace(hooks, composer=composer))

    def _save_extras(self, directory: Path) -> dict:
        for i, m in enumerate(self.members):
            m.save_pretrained(directory / MEMBER_DIR.format(i + 1))
        return {**self.steering, "policies": [MEMBER_DIR.format(i + 1) for i in range(len(self.members))]}


def load_gpc_export(directory: Path, base, spec: dict) -> GPCPolicy:
    """The GPC policy of an export: member dirs in ``config.json`` are relative to the export."""
    params = {k: v for k, v in spec.items() if k != "type"}
    dirs = [str(Path(directory) / p) for p in params["policies"]]
    return GPCPolicy(base, GPCConfig(**{**params, "policies": tuple(dirs), "weights": tuple(params["weights"])}))
