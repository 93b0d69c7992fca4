"""Explicit algorithm registry: name -> (learner class, config class, the policy type it needs)."""
from __future__ import annotations

from armflow.configs import build_config
from armflow.policies.rl.dppo import DPPOConfig, DPPOLearner
from armflow.policies.rl.dsrl import DSRLConfig, DSRLLearner
from armflow.policies.rl.fpo import FPOConfig, FPOLearner
from armflow.policies.rl.gaussian_ppo import GaussianPPOLearner, PPOConfig

ALGOS: dict[str, tuple[type, type, str]] = {
    "dppo": (DPPOLearner, DPPOConfig, "diffusion"),
    "fpo": (FPOLearner, FPOConfig, "flow"),
    "dsrl": (DSRLLearner, DSRLConfig, "flow or diffusion"),
    "ppo": (GaussianPPOLearner, PPOConfig, "gaussian"),
}


def make_learner(algo: str, policy, cfg: dict | None, n_envs: int):
    """Build the learner for ``algo`` around ``policy``; unknown algo / key / policy type raise clearly."""
    if algo not in ALGOS:
        raise KeyError(f"unknown algo {algo!r}; valid algos: {', '.join(ALGOS)}")
    learner_cls, cfg_cls, _ = ALGOS[algo]
    return learner_cls(policy, build_config(cfg_cls, cfg, f"algo={algo} config"), n_envs)
