"""Policy registry, construction and checkpoint loading (``config.json`` + ``model.safetensors``; no pickle)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping

import torch

from .base import CONFIG_FILE, FORMAT_NAME, FORMAT_VERSION, WEIGHTS_FILE, BasePolicy
from armflow.configs import build_config

from .config import upgrade_config
from .diffusion import DiffusionPolicy
from .flow import FlowPolicy
from .gaussian import GaussianPolicy

POLICIES: dict[str, type[BasePolicy]] = {
    "flow": FlowPolicy,
    "diffusion": DiffusionPolicy,
    "gaussian": GaussianPolicy,
}


class PolicyLoadError(ValueError):
    """A checkpoint directory is missing a file, holds a corrupt file, or its config and weights disagree."""

    def __init__(self, path: str | os.PathLike, message: str):
        self.path = Path(path)
        super().__init__(f"{self.path}: {message}")


def policy_class(policy_type: str) -> type[BasePolicy]:
    if policy_type not in POLICIES:
        raise ValueError(f"unknown policy type {policy_type!r}; valid: {sorted(POLICIES)}")
    return POLICIES[policy_type]


def make_policy(policy_type: str, obs_spec: Mapping[str, tuple[int, ...]], action_dim: int, stats: Mapping | None,
                **cfg) -> BasePolicy:
    """Build a policy. ``stats``: dataset stats ``{feature: {"min","max","mean","std"}}`` for every obs key
    and ``action`` (``None`` only for placeholders that ``load_state_dict`` will overwrite).
    ``cfg``: fields of the type's config dataclass; an unknown key raises listing the valid ones."""
    cls = policy_class(policy_type)
    config = build_config(cls.Config, cfg, f"policy {policy_type!r}")
    return cls(config, obs_spec, action_dim, stats)


def _read_config(directory: Path) -> dict:
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise PolicyLoadError(directory, f"no {CONFIG_FILE} (is this a policy checkpoint directory?)")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PolicyLoadError(path, f"corrupt JSON: {exc}") from None
    for key in ("format", "format_version", "policy_type", "obs_spec", "action_dim", "config"):
        if key not in meta:
            raise PolicyLoadError(path, f"missing key {key!r}")
    if meta["format"] != FORMAT_NAME or meta["format_version"] != FORMAT_VERSION:
        raise PolicyLoadError(path, f"format {meta['format']!r} v{meta['format_version']}; expected "
                                    f"{FORMAT_NAME!r} v{FORMAT_VERSION}")
    return meta


def _read_weights(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = directory / WEIGHTS_FILE
    if not path.is_file():
        raise PolicyLoadError(directory, f"no {WEIGHTS_FILE}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise PolicyLoadError(path, f"corrupt safetensors file: {exc}") from None


def load_policy(directory: str | os.PathLike, device: str | torch.device = "cpu", steered: bool = True):
    """Rebuild a policy saved by ``save_pretrained``; returns it in eval mode on ``device``.

    A steered export (``config.json`` key ``steering: {"type": ...}``, e.g. DSRL's noise actor) loads as the
    steered policy, a wrapper that keeps the Policy contract; ``steered=False`` gives its base policy."""
    directory = Path(directory)
    meta = _read_config(directory)
    kind = (meta.get("steering") or {}).get("type")
    if kind is None and (directory / "dsrl.json").is_file():
        kind = "dsrl"  # DSRL exports written before the config named their steering
    if steered and kind is not None:
        return _load_steered(kind, directory, load_policy(directory, device, steered=False))
    try:
        obs_spec = {k: tuple(v) for k, v in meta["obs_spec"].items()}
        policy = make_policy(meta["policy_type"], obs_spec, meta["action_dim"], None,
                             **upgrade_config(meta["config"]))
    except (ValueError, TypeError, KeyError) as exc:
        raise PolicyLoadError(directory / CONFIG_FILE, f"invalid policy config: {exc}") from None
    weights = _read_weights(directory)
    expected = policy.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    wrong = sorted(k for k in set(expected) & set(weights) if tuple(expected[k].shape) != tuple(weights[k].shape))
    if missing or unexpected or wrong:
        detail = "; ".join(f"{name}: {keys[:5]}{' ...' if len(keys) > 5 else ''}" for name, keys in
                           (("missing", missing), ("unexpected", unexpected), ("shape mismatch", wrong)) if keys)
        raise PolicyLoadError(directory, f"{WEIGHTS_FILE} does not match {CONFIG_FILE}: {detail}")
    policy.load_state_dict(weights, strict=True)
    return policy.to(device).eval()


def _load_steered(kind: str, directory: Path, base: BasePolicy):
    """The steered policy of an export: one explicit branch per kind."""
    if kind == "dsrl":
        from armflow.policies.rl.dsrl import wrap_dsrl_export

        return wrap_dsrl_export(directory, base)
    from armflow.policies.steering import STEERING, load_steered_export  # inference-time steering methods

    if kind in STEERING:
        return load_steered_export(kind, directory, base, _read_config(directory)["steering"])
    raise PolicyLoadError(directory / CONFIG_FILE, f"unknown steering type {kind!r}; valid: dsrl, {', '.join(STEERING)}")
