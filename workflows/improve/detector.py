"""A skill's success detector for ``armflow improve``: a reward model from ``armflow.rewards`` on the robot's
camera frames, optionally AND-gated on proprioception (HIL-SERL: classifier AND gripper check). It never reads
the simulator's object state; the bridge's privileged flags only audit it (``DetectorAudit``).

Spec keys: ``backend`` (classifier | openai | hf_vlm | embedding), ``path``, ``cameras`` (list), ``threshold``
(0.5), ``options`` (backend keys), ``gate`` (optional: one ``{index, op, threshold}`` on ``observation.state`` or a
list of them, all must hold).
"""
from __future__ import annotations

import numpy as np

from armflow.rewards.protocol import RewardQuery

STATE_KEY = "observation.state"


class Detector:
    def __init__(self, spec: dict, instruction: str = ""):
        from armflow.rewards.compose import gated
        from armflow.rewards.registry import make_reward_model

        spec = dict(spec)
        if not spec.get("backend") or not spec.get("cameras"):
            raise ValueError(f"improve: a skill's detector needs backend and cameras; got {spec}")
        options = {**({"path": spec["path"]} if spec.get("path") else {}), **dict(spec.get("options") or {})}
        self.threshold, self.cameras = float(spec.get("threshold", 0.5)), list(spec["cameras"])
        model = gated(make_reward_model(str(spec["backend"]), **options), spec.get("gate"), self.threshold)
        self.model, self.instruction = model, instruction

    @property
    def version(self) -> str:
        return str(self.model.model_version)

    def __call__(self, extras: dict) -> tuple[float, bool]:
        """(value in [0, 1], valid) for the frames and proprioception of one robot state's extras."""
        keys = [f"observation.images.{cam}" for cam in self.cameras]
        missing = [k for k in keys if k not in extras]
        if missing:
            raise KeyError(f"improve: the detector's cameras {missing} are not in the robot state (it has "
                           f"{sorted(k for k in extras if k.startswith('observation.'))}); serve them: cameras=[...]")
        state = extras.get(STATE_KEY)
        query = RewardQuery(frames={cam: np.asarray(extras[k])[None] for cam, k in zip(self.cameras, keys)},
                            instruction=self.instruction,
                            state=None if state is None else np.asarray(state, np.float64).reshape(-1))
        result = self.model.score([query])[0]
        return float(result.value), bool(result.valid)

    def success(self, value: float) -> bool:
        return value >= self.threshold


class DetectorAudit:
    """The detector against the privileged success flag, per chunk end state: FP / FN rates overall and over the
    last ``window`` checks (the curve over time)."""

    def __init__(self, window: int = 200):
        self.counts = {"tp": 0, "fp": 0, "tn": 0, "fn": 0}
        self.window, self.recent = int(window), []

    def add(self, detected: bool, truth: bool | None) -> None:
        if truth is None:
            return
        key = ("t" if detected == truth else "f") + ("p" if detected else "n")
        self.counts[key] += 1
        self.recent = (self.recent + [key])[-self.window:]

    @staticmethod
    def rates(counts: dict) -> dict:
        neg, pos = counts["fp"] + counts["tn"], counts["tp"] + counts["fn"]
        return {"fp_rate": counts["fp"] / neg if neg else None, "fn_rate": counts["fn"] / pos if pos else None,
                "positives": pos, "negatives": neg}

    def summary(self) -> dict:
        recent = {k: self.recent.count(k) for k in self.counts}
        return {**self.rates(self.counts), "counts": dict(self.counts), "recent": self.rates(recent)}
