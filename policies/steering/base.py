"""The steered-policy wrapper every steering method shares: the Policy contract, per-chunk diagnostics, export.

A steered policy is still a Policy (``predict_chunk(obs, noise=None, hooks=None)``, ``n_obs_steps``, ``horizon``,
``n_action_steps``, ``obs_spec``, ``action_dim``, ``policy_type``, ``default_noise``), so evaluate, deploy and the
bridge need no special case. Every ``predict_chunk`` call appends one dict to ``diagnostics``:
``{"batch", "latency_ms", "hook_ms", ...method keys}`` (V-GPS adds ``scores`` (B, K) and ``chosen`` (B,)).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from torch import nn

from armflow.policies.sampler import SamplerHooks


class SteeredPolicy(nn.Module):
    """A frozen ``base`` policy plus a steering ``spec`` (a method's config dataclass); other attributes delegate
    to the base. Subclasses implement ``_steered_chunk(obs, noise, hooks, diag)`` and ``_save_extras(dir)``."""

    steering_type = ""

    def __init__(self, base, spec):
        super().__init__()
        if getattr(base, "steering", None) is not None:
            raise ValueError(f"steer: the policy is already steered ({base.steering['type']!r}); steer its base "
                             "(load_policy(dir, steered=False)) instead of stacking steering")
        self.base, self.spec = base.eval(), spec
        self.diagnostics: list[dict] = []

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("base"), name)

    @property
    def steering(self) -> dict:
        """The spec as plain data (``{"type": ..., **params}``): what a run's config and an export record."""
        import dataclasses

        return {"type": self.steering_type, **dataclasses.asdict(self.spec)}

    def default_noise(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.base.default_noise(batch, generator)

    @torch.no_grad()
    def predict_chunk(self, obs: Mapping, noise: torch.Tensor | None = None,
                      hooks: SamplerHooks | None = None) -> torch.Tensor:
        """Obs window ``{key: (B, T_o, ...)}`` -> steered action chunk (B, T_p, D_a) in robot units."""
        t0 = time.perf_counter()
        diag: dict = {"hook_ms": 0.0}
        actions = self._steered_chunk(obs, noise, hooks or SamplerHooks(), diag)
        diag["batch"], diag["latency_ms"] = int(actions.shape[0]), (time.perf_counter() - t0) * 1e3
        self.diagnostics.append(diag)
        return actions

    def _steered_chunk(self, obs, noise, hooks: SamplerHooks, diag: dict) -> torch.Tensor:
        raise NotImplementedError

    # ----------------------------------------------------------------- export
    def save_pretrained(self, directory) -> Path:
        """The base checkpoint + the method's files; ``config.json`` names the steering, so
        ``armflow.policies.load_policy(dir)`` returns this wrapper (``steered=False``: the base)."""
        out = self.base.save_pretrained(directory)
        spec = self._save_extras(out)
        config = out / "config.json"
        config.write_text(json.dumps({**json.loads(config.read_text()), "steering": spec}, indent=2))
        return out

    def _save_extras(self, directory: Path) -> dict:
        """Write the method's files under ``directory``; return the steering entry of ``config.json``."""
        raise NotImplementedError


def summarise_diagnostics(diagnostics: list[dict]) -> dict:
    """Per-chunk diagnostics -> the run's summary: chunk calls, latency and hook time p50/p99 [ms] per call, and for
    rerankers the mean best-minus-mean candidate score and how often each candidate index was chosen."""
    if not diagnostics:
        return {"chunk_calls": 0}
    lat = np.array([d["latency_ms"] for d in diagnostics])
    hook = np.array([d.get("hook_ms", 0.0) for d in diagnostics])
    out = {"chunk_calls": len(diagnostics), "chunks": int(sum(d["batch"] for d in diagnostics)),
           "latency_ms_p50": float(np.percentile(lat, 50)), "latency_ms_p99": float(np.percentile(lat, 99)),
           "hook_ms_p50": float(np.percentile(hook, 50)), "hook_ms_p99": float(np.percentile(hook, 99))}
    scored = [d for d in diagnostics if "scores" in d]
    if scored:
        scores = np.concatenate([np.asarray(d["scores"], float) for d in scored])  # (chunks, K)
        chosen = np.concatenate([np.asarray(d["chosen"], int) for d in scored])
        out.update({"score_mean": float(scores.mean()),
                    "score_chosen_mean": float(scores[np.arange(len(chosen)), chosen].mean()),
                    "score_gain_mean": float((scores[np.arange(len(chosen)), chosen] - scores.mean(1)).mean()),
                    "chosen_counts": np.bincount(chosen, minlength=scores.shape[1]).tolist()})
    return out
