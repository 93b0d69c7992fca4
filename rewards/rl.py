"""Any ``RewardModel`` as the rollout core's batched reward ``fn(obs, action, next_obs, info) -> (N,) float64``.

The reward reads what the chunk reached: the last frame(s) of ``next_obs["observation.images.<cam>"]``
(uint8 ``(N, T_o, H, W, 3)``) for the chosen cameras and the last ``next_obs["observation.state"]``
(``(N, T_o, D_s)``), one query per env with ``key = env index``.

Invalid results (a VLM timeout, garbage) never become a silent 0:
- ``on_invalid="hold"`` (default): the env gets its last valid reward again (``hold_init`` before the
  first one in an episode). Safe with learners that cannot mask, such as today's ``ChunkVecEnv`` users.
- ``on_invalid="skip"``: the reward is NaN; ``info["reward_valid"]`` (N,) bool says which rows the learner
  must drop from its update (a learner that ignores the mask gets NaN losses, loudly, not a biased reward).
Both write ``info["reward_valid"]`` and ``info["reward_model_version"]``; ``stats`` counts invalids.
At an episode end (``info["terminated"] | info["truncated"]``) the held value and the model's per-env
state (``Debounce.reset``) are cleared.

``terminal=True``: a detection (valid, >= threshold) also ends the env's episode (``info["reward_terminated"]``;
``ChunkVecEnv`` resets it), as on a real arm, where the detector and not a simulator says the task is done. With
the simulator's own success ending episodes, a false-positive state pays at every chunk while a real success pays
once, and RL learns to hover in the false positive.

``noise_fn`` / ``noise_fp`` inject detector errors for robustness runs (RoboFuME measured 60-81% false
negatives and 1-6% false positives on real tasks): a valid positive (value >= threshold) becomes 0 with
probability ``noise_fn``, a negative becomes 1 with probability ``noise_fp``, from a seeded generator.
``NoisyReward`` applies the same to any batched reward function, e.g. the privileged ``success`` reward.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from armflow.rewards.protocol import RewardModel, RewardQuery

ON_INVALID = ("hold", "skip")


class DetectorNoise:
    """Flip valid positives to 0 with probability ``fn_rate`` and negatives to 1 with ``fp_rate`` (seeded)."""

    def __init__(self, fn_rate: float = 0.0, fp_rate: float = 0.0, seed: int = 0, threshold: float = 0.5):
        for name, rate in (("noise_fn", fn_rate), ("noise_fp", fp_rate)):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name}={rate}: expected a rate in [0, 1]")
        self.fn_rate, self.fp_rate, self.threshold = float(fn_rate), float(fp_rate), float(threshold)
        self.rng = np.random.default_rng(seed)
        self.flipped = {"fn": 0, "fp": 0}

    def __call__(self, values: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        values = np.array(values, dtype=np.float64)
        valid = np.ones(len(values), bool) if valid is None else np.asarray(valid, bool)
        if self.fn_rate == 0.0 and self.fp_rate == 0.0:
            return values
        draw = self.rng.random(len(values))  # one draw per row, always: the stream does not depend on validity
        positive = valid & (values >= self.threshold)
        to_neg = positive & (draw < self.fn_rate)
        to_pos = valid & ~positive & (draw < self.fp_rate)
        values[to_neg], values[to_pos] = 0.0, 1.0
        self.flipped["fn"] += int(to_neg.sum())
        self.flipped["fp"] += int(to_pos.sum())
        return values


class NoisyReward:
    """A batched reward function with detector noise injected (see ``DetectorNoise``)."""

    def __init__(self, fn: Callable, noise_fn: float = 0.0, noise_fp: float = 0.0, seed: int = 0,
                 threshold: float = 0.5):
        self.fn, self.noise = fn, DetectorNoise(noise_fn, noise_fp, seed, threshold)

    def __call__(self, obs, action, next_obs, info) -> np.ndarray:
        return self.noise(np.asarray(self.fn(obs, action, next_obs, info), dtype=np.float64))


class RewardModelFn:
    """The batched reward function of ``model`` over the chunk's ``next_obs`` (see module docstring).

    cameras: camera names (``observation.images.<cam>``) the model sees. n_frames: newest frames per camera
    sent (<= T_o). instruction: the task text in every query. hold_init: the held reward before an env's
    first valid one. output: ``value`` (the model's value) or ``success`` (1.0 where value >= threshold).
    """

    def __init__(self, model: RewardModel, cameras: list[str] | tuple[str, ...], instruction: str = "",
                 on_invalid: str = "hold", hold_init: float = 0.0, noise_fn: float = 0.0, noise_fp: float = 0.0,
                 seed: int = 0, threshold: float = 0.5, n_frames: int = 1, output: str = "value",
                 state_key: str = "observation.state", terminal: bool = False):
        if on_invalid not in ON_INVALID:
            raise ValueError(f"on_invalid={on_invalid!r}: expected one of {', '.join(ON_INVALID)}")
        if output not in ("value", "success") or n_frames < 1:
            raise ValueError(f"output={output!r} must be value or success and n_frames={n_frames} >= 1")
        self.model, self.cameras, self.instruction = model, tuple(cameras), instruction
        self.on_invalid, self.hold_init, self.threshold = on_invalid, float(hold_init), float(threshold)
        self.n_frames, self.output, self.state_key, self.terminal = int(n_frames), output, state_key, bool(terminal)
        self.noise = DetectorNoise(noise_fn, noise_fp, seed, threshold)
        self.last: np.ndarray | None = None  # (N,) last valid reward per env
        self.stats = {"queries": 0, "invalid": 0, "held": 0, "skipped": 0}

    def queries(self, next_obs: dict[str, np.ndarray]) -> list[RewardQuery]:
        keys = [f"observation.images.{cam}" for cam in self.cameras]
        missing = [k for k in keys if k not in next_obs]
        if missing:
            raise KeyError(f"reward model cameras {missing} not in next_obs (keys: {sorted(next_obs)}); "
                           "add them to the env's cameras and the obs keys")
        n = len(next_obs[keys[0]]) if keys else len(next_obs[self.state_key])
        state = next_obs.get(self.state_key)
        return [RewardQuery(frames={cam: next_obs[k][i, -self.n_frames:] for cam, k in zip(self.cameras, keys)},
                            instruction=self.instruction, key=i,
                            state=None if state is None else np.asarray(state[i, -1], dtype=np.float64))
                for i in range(n)]

    def __call__(self, obs, action, next_obs, info) -> np.ndarray:
        results = self.model.score(self.queries(next_obs))
        n = len(results)
        if self.last is None or len(self.last) != n:
            self.last = np.full(n, self.hold_init)
        valid = np.array([r.valid for r in results], dtype=bool)
        values = np.array([r.value if r.valid else np.nan for r in results], dtype=np.float64)
        if self.output == "success":
            values = np.where(valid, (values >= self.threshold).astype(np.float64), np.nan)
        values = self.noise(values, valid)
        if self.on_invalid == "hold":
            values[~valid] = self.last[~valid]
        self.last[valid] = values[valid]
        n_bad = int((~valid).sum())
        self.stats["queries"] += n
        self.stats["invalid"] += n_bad
        self.stats["held" if self.on_invalid == "hold" else "skipped"] += n_bad
        if isinstance(info, dict):
            if self.terminal:  # the detection ends the episode (the rollout core resets those envs)
                info["reward_terminated"] = valid & (values >= self.threshold)
            info["reward_valid"] = valid
            info["reward_model_version"] = self.model.model_version
            self._episode_ends(info)
        return values

    def _episode_ends(self, info: dict) -> None:
        if "terminated" not in info and "truncated" not in info:
            return
        done = (np.asarray(info.get("terminated", False)) | np.asarray(info.get("truncated", False))
                | np.asarray(info.get("reward_terminated", False)))
        done = np.broadcast_to(done, self.last.shape)
        self.last[done] = self.hold_init
        reset = getattr(self.model, "reset", None)
        if callable(reset) and done.any():
            reset([int(i) for i in np.flatnonzero(done)])

    @property
    def flipped(self) -> dict[str, int]:
        return dict(self.noise.flipped)
