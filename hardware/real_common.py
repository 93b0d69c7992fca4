"""Pieces shared by the real-arm adapters: SDK loading (real, fake or injected), setpoint checks, EE targets."""
from __future__ import annotations

import importlib
from types import SimpleNamespace
from typing import Callable

import numpy as np

from armflow.hardware.driver import DriverError
from armflow.hardware.kinematics import quat_mul, quat_normalize, rotvec_to_quat

SETPOINT_DIM = {"ee_pose": 7, "ee_delta": 6}


def load_sdk(sdk, real_loader: Callable[[], SimpleNamespace], fake_module: str, extra: str, package: str):
    """``sdk="real"``: import the vendor SDK (clear error naming the extra when missing);
    ``sdk="fake"``: the faithful fake in ``armflow.hardware.fakes``; any other object: used as is (tests)."""
    if sdk == "real":
        try:
            return real_loader()
        except ImportError as exc:
            raise ImportError(f"the {package} SDK is not installed ({exc}); install it with "
                              f"`pip install armflow[{extra}]`, or pass sdk=fake for a dry run") from None
    if sdk == "fake":
        return importlib.import_module(fake_module).make_sdk()
    if isinstance(sdk, str):
        raise ValueError(f"sdk must be 'real', 'fake' or an SDK namespace, got {sdk!r}")
    return sdk


def check_setpoint(name: str, mode: str, modes: tuple[str, ...], setpoint, dof: int) -> np.ndarray:
    if mode not in modes:
        raise ValueError(f"{name}: unknown mode {mode!r}; valid modes: {', '.join(modes)}")
    x = np.asarray(setpoint, dtype=float).reshape(-1)
    want = SETPOINT_DIM.get(mode, dof)
    if x.shape != (want,) or not np.all(np.isfinite(x)):
        raise ValueError(f"{name}: {mode} setpoint must be finite with shape ({want},), got {x}")
    return x


def clip_ee_delta(x: np.ndarray, max_m: float, max_rad: float) -> np.ndarray:
    """Scale the translation and rotation parts of a (6,) EE step down to their per-tick limits."""
    dp, dr = x[:3], x[3:]
    dp = dp * min(1.0, max_m / max(float(np.linalg.norm(dp)), 1e-12))
    dr = dr * min(1.0, max_rad / max(float(np.linalg.norm(dr)), 1e-12))
    return np.concatenate([dp, dr])


def apply_ee_delta(pos_m: np.ndarray, quat_wxyz: np.ndarray, delta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Base-frame step: position + delta[:3], rotation delta[3:] (rotation vector) left-multiplied."""
    return pos_m + delta[:3], quat_normalize(quat_mul(rotvec_to_quat(delta[3:]), quat_wxyz))


def cartesian_target(mode: str, x: np.ndarray, target, current_pose, max_m: float, max_rad: float):
    """ee_pose / ee_delta setpoint -> (setpoint actually sent, new absolute target (pos_m, quat_wxyz)).

    ``ee_delta`` accumulates onto the last commanded target (or ``current_pose()`` before the first)."""
    if mode == "ee_pose":
        sent = np.concatenate([x[:3], quat_normalize(x[3:])])
        return sent, (sent[:3].copy(), sent[3:].copy())
    sent = clip_ee_delta(x, max_m, max_rad)
    return sent, apply_ee_delta(*(target or current_pose()), sent)


def require(ok, name: str, what: str, detail: Callable[[], str] = lambda: "") -> None:
    """Raise ``DriverError`` when an SDK call reported failure (False or a non-zero code)."""
    failed = (ok is False) or (isinstance(ok, (int, np.integer)) and not isinstance(ok, bool) and ok != 0)
    if failed:
        raise DriverError(f"{name}: {what} failed (returned {ok!r}){detail()}")


def clip_velocity(v_rad_s: np.ndarray, q_rad: np.ndarray, q_min: np.ndarray, q_max: np.ndarray,
                  v_max_rad_s: np.ndarray, dt_s: float) -> np.ndarray:
    """Joint velocity clipped to the speed limits and so that one tick of ``dt_s`` cannot cross a joint limit."""
    v = np.clip(v_rad_s, -np.asarray(v_max_rad_s), v_max_rad_s)
    lo = np.minimum((np.asarray(q_min) - q_rad) / dt_s, 0.0)
    hi = np.maximum((np.asarray(q_max) - q_rad) / dt_s, 0.0)
    return np.clip(v, lo, hi)
