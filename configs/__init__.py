"""armflow.configs: the bundled Hydra YAML tree, and the one strict config builder every package uses.

Stdlib only, so ``control/`` and ``hardware/`` (no torch), ``sim/`` and ``policies/`` may all import it.
"""
from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Iterable, Mapping, TypeVar

C = TypeVar("C")


class ConfigError(ValueError):
    """The command line or a config value is wrong; the CLI prints the message and exits 2 (usage error)."""


def did_you_mean(name: str, valid: Iterable[str], n: int = 3) -> str:
    """``" Did you mean 'x'?"`` for the valid names close to ``name``, else ``""``."""
    close = difflib.get_close_matches(name, list(valid), n=n, cutoff=0.6)
    return f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def plain(value: Any) -> Any:
    """OmegaConf containers and lists -> dicts and tuples, so frozen configs stay hashable."""
    if isinstance(value, Mapping) or type(value).__name__ == "DictConfig":
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or type(value).__name__ == "ListConfig":
        return tuple(plain(v) for v in value)
    return value


def build_config(cls: type[C], overrides: Mapping[str, Any] | None, where: str) -> C:
    """``cls(**overrides)`` with lists made tuples; an unknown key raises ``ConfigError`` naming ``where``,
    the unknown keys, the close valid ones and every valid key (one message in every package)."""
    overrides = dict(overrides or {})
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        hint = did_you_mean(unknown[0], valid)
        raise ConfigError(f"{where}: unknown config keys {unknown}.{hint} Valid keys: {', '.join(valid)}")
    return cls(**{k: plain(v) for k, v in overrides.items()})
