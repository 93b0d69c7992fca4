"""Glue shared by the learners: obs conversion, action (un)normalisation, state IO."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

ACTION = "action"


def obs_to_torch(obs: dict[str, np.ndarray], device: str = "cpu") -> dict[str, torch.Tensor]:
    """Raw obs windows (numpy) -> tensors as they are (images stay uint8 (B, T_o, H, W, 3): 4x smaller in a
    rollout batch); ``BasePolicy.encode_obs`` does the one conversion to policy inputs."""
    return {key: torch.as_tensor(np.asarray(value)).to(device) for key, value in obs.items()}


def to_env_action(policy, action_norm: torch.Tensor) -> torch.Tensor:
    """Normalised action chunk (B, T_p, D_a) -> robot units via the policy's own normaliser, clipped to
    [-1, 1] first like ``predict_chunk`` (the stored RL action stays unclipped)."""
    return policy.normalizer.unnormalize(ACTION, action_norm.clamp(-1.0, 1.0))


def require_methods(policy, algo: str, kind: str, methods: tuple[str, ...]) -> None:
    """Clear error when ``algo`` is given a checkpoint it cannot fine-tune."""
    ptype = getattr(policy, "policy_type", type(policy).__name__)
    missing = [m for m in methods if not hasattr(policy, m)]
    if ptype != kind or missing:
        raise ValueError(
            f"algo={algo} needs a {kind!r} policy checkpoint (with {', '.join(methods)}); "
            f"got policy_type={ptype!r}" + (f" lacking {missing}" if missing else ""))


def module_state(prefix: str, module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v.detach().cpu().clone() for k, v in module.state_dict().items()}


def load_module_state(prefix: str, module: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    own = {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
    module.load_state_dict(own)


def minibatches(n: int, batch_size: int, generator: torch.Generator | None = None):
    """Shuffled index minibatches covering ``range(n)`` once."""
    perm = torch.randperm(n, generator=generator)
    for i in range(0, n, batch_size):
        yield perm[i:i + batch_size]


def flat(x: Any) -> Any:
    """(S, N, ...) -> (S*N, ...) for arrays/tensors and dicts of them."""
    if isinstance(x, dict):
        return {k: flat(v) for k, v in x.items()}
    return x.reshape(-1, *x.shape[2:])
