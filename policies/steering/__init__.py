"""armflow.policies.steering: inference-time steering of frozen flow/diffusion policies, as data.

``steer(policy, spec) -> Policy``: ``spec`` is plain data ``{"type": <method>, **params}`` (a dict, an OmegaConf
node, or the method's config dataclass); the result is a wrapper that keeps the Policy contract and records
per-chunk diagnostics in ``.diagnostics`` (:func:`summarise_diagnostics` for a run's summary). Methods
(``STEERING``): ``vgps`` (critic reranking of K samples), ``gpc`` (convex mix of several policies' predictions),
``cfg`` (classifier-free guidance of a policy trained with condition dropout), ``itps`` (a point goal or
sketched path through the ee-delta path: post-hoc ranking, biased init, guided / stochastic sampling).
A steered policy's ``save_pretrained`` writes an export that ``armflow.policies.load_policy`` loads steered.
"""
from __future__ import annotations

from typing import Any, Mapping

from armflow.configs import ConfigError, build_config

from .base import SteeredPolicy, summarise_diagnostics
from .cfg import CFGConfig, CFGPolicy, load_cfg_export
from .critic import ChunkCritic, CriticConfig, check_critic, load_critic
from .critic_losses import calql_loss, expectile_loss, iql_loss, td_target
from .dynaguide import DynaGuideConfig, DynaGuidePolicy, goal_score, load_dynaguide_export
from .dynamics import LatentDynamics, check_dynamics, load_dynamics
from .gpc import GPCConfig, GPCPolicy, load_gpc_export
from .itps import ITPSConfig, ITPSPolicy, check_goal, load_itps_export
from .vgps import VGPSConfig, VGPSPolicy, load_vgps_export, pick_candidates

# type -> (config dataclass, wrapper class, export loader (directory, base, spec dict) -> wrapper)
STEERING: dict[str, tuple[type, type, Any]] = {
    "vgps": (VGPSConfig, VGPSPolicy, load_vgps_export),
    "gpc": (GPCConfig, GPCPolicy, load_gpc_export),
    "cfg": (CFGConfig, CFGPolicy, load_cfg_export),
    "itps": (ITPSConfig, ITPSPolicy, load_itps_export),
    "dynaguide": (DynaGuideConfig, DynaGuidePolicy, load_dynaguide_export),
}


def parse_spec(spec: Mapping | Any) -> tuple[str, Any]:
    """``{"type": ..., **params}`` -> (type, the method's config); keys whose value is None are left at the
    method's default (a YAML lists every method's keys with null). Unknown types/keys raise ``ConfigError``."""
    if type(spec) in {cfg for cfg, _, _ in STEERING.values()}:
        return next(k for k, (cfg, _, _) in STEERING.items() if type(spec) is cfg), spec
    from armflow.configs import plain

    spec = plain(spec) if spec is not None else {}
    if not isinstance(spec, Mapping):
        raise ConfigError(f"steering: expected a mapping {{type: ..., ...}}, got {spec!r}")
    kind = spec.get("type")
    if kind not in STEERING:
        raise ConfigError(f"steering.type={kind!r}: unknown steering method; valid: {', '.join(STEERING)}")
    params = {k: v for k, v in spec.items() if k != "type" and v is not None and v != ()}
    try:
        return kind, build_config(STEERING[kind][0], params, f"steering (type {kind})")
    except TypeError as exc:
        raise ConfigError(f"steering (type {kind}): {exc}") from None


def steer(policy, spec) -> SteeredPolicy:
    """``policy`` steered by ``spec`` (see the module docstring); a spec that does not fit the policy (a critic
    for another policy, composing policies over different action spaces, a method the policy type cannot take)
    raises ``ValueError`` naming the file or key and what was expected."""
    kind, config = parse_spec(spec)
    return STEERING[kind][1](policy, config)


def load_steered_export(kind: str, directory, base, spec: Mapping) -> SteeredPolicy:
    """The wrapper of an export written by ``SteeredPolicy.save_pretrained`` (``load_policy`` calls this)."""
    return STEERING[kind][2](directory, base, dict(spec))


__all__ = ["STEERING", "CFGConfig", "CFGPolicy", "ChunkCritic", "CriticConfig", "GPCConfig", "GPCPolicy", "ITPSConfig", "ITPSPolicy", "SteeredPolicy", "VGPSConfig",
           "VGPSPolicy", "calql_loss", "check_critic", "check_goal", "expectile_loss", "iql_loss", "load_critic",
           "load_steered_export", "parse_spec", "pick_candidates", "steer", "summarise_diagnostics", "td_target"]
__all__ += ["DynaGuideConfig", "DynaGuidePolicy", "LatentDynamics", "check_dynamics", "goal_score", "load_dynamics"]
