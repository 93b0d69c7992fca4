"""The improve stream as a LeRobot v3 dataset: one LeRobot episode per virtual episode (attempt), so rewards can
be relabelled when the detector is retrained and ``armflow reward fit`` can train on the new hard negatives.

Per frame: every ``observation.*`` the robot publishes (cameras as video), ``action`` (7,), ``next.reward`` (the
detector's reward), ``next.done`` / ``next.truncated`` (terminated = detected success, truncated = time limit),
``next.success`` (the detector's decision: what a relabelling pass replaces), ``improve.skill`` (index into
``meta/improve.json`` skills), ``improve.policy_version``, ``improve.reward_model_version`` (index into its
versions), ``improve.intervention`` (a human drove this step), ``improve.detector_value`` and, in sim only,
``improve.privileged_success`` (the audit flag after every step: ``armflow reward fit label_key=`` trains on it). ``meta/improve.json`` maps the indices to names.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

EXTRA_FEATURES = {
    "improve.skill": "int64", "improve.policy_version": "int64", "improve.reward_model_version": "int64",
    "improve.intervention": "bool", "improve.detector_value": "float32", "improve.privileged_success": "bool",
}


def stream_features(extras: dict, action_dim: int) -> dict[str, dict]:
    features = {}
    for key in sorted(k for k in extras if k.startswith("observation.")):
        arr = np.asarray(extras[key])
        if key.startswith("observation.images."):
            features[key] = {"dtype": "video", "shape": tuple(arr.shape), "names": ["height", "width", "channels"]}
        else:
            features[key] = {"dtype": "float32", "shape": tuple(arr.shape), "names": None}
    features["action"] = {"dtype": "float32", "shape": (action_dim,), "names": None}
    for key in ("next.reward",):
        features[key] = {"dtype": "float32", "shape": (1,), "names": None}
    for key in ("next.done", "next.truncated", "next.success"):
        features[key] = {"dtype": "bool", "shape": (1,), "names": None}
    features.update({k: {"dtype": d, "shape": (1,), "names": None} for k, d in EXTRA_FEATURES.items()})
    return features


class StreamRecorder:
    """``add(extras, action, ...)`` per robot step, ``end(...)`` commits the attempt atomically (a kill loses at
    most the attempt in progress); ``versions`` keeps the reward-model version strings."""

    def __init__(self, root: str | Path, fps: int, first_extras: dict, action_dim: int, skills: list[str]):
        from armflow.data import LeRobotWriter

        self.root, self.skills = Path(root), list(skills)
        self.writer = LeRobotWriter(self.root, fps=fps, features=stream_features(first_extras, action_dim),
                                    robot_type="panda")
        self.keys = [k for k in self.writer.features if k.startswith("observation.")]
        meta = self.root / "meta" / "improve.json"
        self.versions: list[str] = json.loads(meta.read_text())["reward_model_versions"] if meta.exists() else []
        self.frames, self._pending = 0, None

    @property
    def episodes(self) -> int:
        return self.writer.num_episodes

    def add(self, extras: dict, action: np.ndarray, skill: str, policy_version: int, reward_model_version: str,
            intervened: bool, privileged: bool = False) -> None:
        """One robot step: the state the action was taken in, the action and ``privileged``: the audit flag of the
        state it led to (sim). The detector's columns (reward, done, success, value) stay pending until
        ``amend_last`` or the next ``add``: unscored steps get reward 0 and ``improve.detector_value`` NaN (the
        detector runs at chunk ends)."""
        self._flush()
        if reward_model_version not in self.versions:
            self.versions.append(reward_model_version)
        frame = {k: np.asarray(extras[k], np.uint8 if k.startswith("observation.images.") else np.float32)
                 for k in self.keys}
        frame.update({"action": np.asarray(action, np.float32),
                      "improve.skill": np.array([self.skills.index(skill)], np.int64),
                      "improve.policy_version": np.array([policy_version], np.int64),
                      "improve.reward_model_version": np.array([self.versions.index(reward_model_version)], np.int64),
                      "improve.intervention": np.array([intervened])})
        self._pending = frame
        self.amend_last()
        self._pending["improve.privileged_success"] = np.array([privileged])

    def amend_last(self, reward: float = 0.0, success: bool = False, detector_value: float = float("nan"),
                   terminated: bool = False, truncated: bool = False) -> None:
        """Set the outcome columns of the newest step (the chunk's last, once the detector has scored it)."""
        self._pending.update({"next.reward": np.array([reward], np.float32),
                              "next.done": np.array([terminated or truncated]),
                              "next.truncated": np.array([truncated]), "next.success": np.array([success]),
                              "improve.detector_value": np.array([detector_value], np.float32)})

    def _flush(self) -> None:
        if self._pending is not None:
            self.writer.add_frame(self._pending)
            self.frames += 1
            self._pending = None

    def end(self, skill: str) -> int:
        """Commit the attempt as one episode (task = the skill's name); returns the episode index."""
        self._flush()
        self.frames = 0
        index = self.writer.save_episode(task=skill)
        tmp = self.root / "meta" / "improve.json.tmp"
        tmp.write_text(json.dumps({"skills": self.skills, "reward_model_versions": self.versions}, indent=2))
        tmp.replace(self.root / "meta" / "improve.json")
        return index

    def drop(self) -> None:
        self._pending = None
        self.writer.clear_episode()
        self.frames = 0

    def close(self) -> None:
        self.writer.finalize()
