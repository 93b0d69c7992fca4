"""Safety limits: a versioned YAML file, validated at load, identified by a content hash.

The hash (sha256 of the canonical JSON of the parsed file, 16 hex digits) is sent in WELCOME
and written to the server log, so a run can always be traced to the limits it ran under.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import yaml

from armflow.control.protocol import ACTION_SPACES

LIMITS_VERSION = 2  # 2: the box and speed limits hold in every mode (ee_delta via RobotInfo.ee_delta_*)
_LIMITS_DIR = Path(__file__).resolve().parent.parent / "configs" / "safety_limits"


class LimitsError(ValueError):
    """A limits file that is missing, malformed or inconsistent."""


@dataclass(frozen=True)
class SafetyLimits:
    version: int
    robot: str
    joint_margin_rad: float
    joint_vel_scale: float
    joint_acc_max_rad_s2: float
    workspace_min_m: tuple[float, float, float]
    workspace_max_m: tuple[float, float, float]
    ee_vel_max_m_s: float
    ee_acc_max_m_s2: float
    ee_rot_vel_max_rad_s: float
    ee_delta_max: float
    ee_delta_rate_max: float
    force_max_n: float
    max_resume_delta_rad: float
    max_resume_delta_m: float
    t_cmd_ms_default: int
    t_cmd_ms_max: int
    t_cmd_ms_max_lockstep: int
    allowed_modes: tuple[str, ...]

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @property
    def hash(self) -> str:
        return limits_hash(self.to_dict())


def limits_hash(data: dict) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=float)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def default_limits_name(robot: str, robot_options: dict | None = None) -> str:
    """The bundled limits a server uses when none is named: the sim task's own file when the robot wraps a task
    that has one (``sim_task_lift``: its OSC sets the joint targets, see that file), else the robot's file,
    else ``sim_panda``."""
    task = (robot_options or {}).get("task")
    for name in ([f"sim_task_{task}"] if task else []) + [robot]:
        if (_LIMITS_DIR / f"{name}.yaml").is_file():
            return name
    return "sim_panda"


def resolve_limits_path(name_or_path: str) -> Path:
    """``sim_panda`` -> ``configs/safety_limits/sim_panda.yaml``; a path is used as is."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = _LIMITS_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        valid = sorted(p.stem for p in _LIMITS_DIR.glob("*.yaml"))
        raise LimitsError(f"limits file {path} not found; bundled limits: {valid}")
    return path


def load_limits(name_or_path: str) -> SafetyLimits:
    """Load and validate a limits YAML (see ``configs/safety_limits/sim_panda.yaml``)."""
    path = resolve_limits_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise LimitsError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise LimitsError(f"{path}: expected a mapping, got {type(raw).__name__}")
    return limits_from_dict(raw, source=str(path))


def limits_from_dict(raw: dict, source: str = "<dict>") -> SafetyLimits:
    fields = SafetyLimits.__dataclass_fields__
    missing, unknown = set(fields) - set(raw), set(raw) - set(fields)
    if missing or unknown:
        raise LimitsError(f"{source}: missing keys {sorted(missing)}, unknown keys {sorted(unknown)}")
    if raw["version"] != LIMITS_VERSION:
        raise LimitsError(f"{source}: version {raw['version']!r}, this server reads version {LIMITS_VERSION}")
    values = {}
    for key, value in raw.items():
        if key in ("workspace_min_m", "workspace_max_m"):
            arr = np.asarray(value, dtype=float)
            if arr.shape != (3,) or not np.isfinite(arr).all():
                raise LimitsError(f"{source}: {key} must be 3 finite numbers [m], got {value!r}")
            values[key] = tuple(float(x) for x in arr)
        elif key == "allowed_modes":
            bad = [m for m in value if m not in ACTION_SPACES]
            if bad:
                raise LimitsError(f"{source}: allowed_modes {bad} unknown; valid: {ACTION_SPACES}")
            values[key] = tuple(value)
        elif key in ("robot",):
            values[key] = str(value)
        elif key.startswith("t_cmd_ms") or key == "version":
            values[key] = int(value)
        else:
            x = float(value)
            if not np.isfinite(x) or x < 0:
                raise LimitsError(f"{source}: {key} must be a finite number >= 0, got {value!r}")
            values[key] = x
    lim = SafetyLimits(**values)
    if any(lo >= hi for lo, hi in zip(lim.workspace_min_m, lim.workspace_max_m)):
        raise LimitsError(f"{source}: workspace_min_m must be < workspace_max_m")
    if not 0 < lim.t_cmd_ms_default <= lim.t_cmd_ms_max:
        raise LimitsError(f"{source}: need 0 < t_cmd_ms_default <= t_cmd_ms_max")
    return lim
