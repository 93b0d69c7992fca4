"""One reward protocol for every backend (classifier, VLM over HTTP, local HF VLM, embedding reward).

A ``RewardQuery`` holds what a person would look at: frames per camera, the instruction, optional
references (a goal image, the episode's first frame) and optional proprioception for gates. A
``RewardResult`` holds the answer and everything needed to audit it. A transient failure is an explicit
``valid=False`` result, never a silent 0: RL skips or holds invalid rewards (configurable), it never
learns from them.

Shapes: frames ``uint8 (T, H, W, 3)`` per camera (T >= 1, oldest first); references ``uint8 (H, W, 3)``;
``state`` float ``(D_s,)`` (``observation.state``).
"""
from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

MODES = ("success", "progress", "preference")


@dataclass
class RewardQuery:
    frames: dict[str, np.ndarray]  # camera name -> uint8 (T, H, W, 3)
    instruction: str = ""
    references: dict[str, np.ndarray] = field(default_factory=dict)  # e.g. "goal", "initial" -> (H, W, 3)
    mode: str = "success"
    state: np.ndarray | None = None  # observation.state (D_s,), for proprioceptive gates
    key: Any = None  # the caller's id (env index, frame index), echoed back in the result

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"RewardQuery.mode={self.mode!r}: expected one of {', '.join(MODES)}")
        for cam, frames in self.frames.items():
            arr = np.asarray(frames)
            if arr.ndim == 3:  # one frame given as (H, W, 3)
                arr = arr[None]
            if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
                raise ValueError(f"RewardQuery.frames[{cam!r}]: expected uint8 (T, H, W, 3), "
                                 f"got {arr.dtype} {arr.shape}")
            self.frames[cam] = arr


@dataclass
class RewardResult:
    value: float  # in [0, 1]; meaningless when not valid
    prob: float | None = None  # calibrated P(success), when the backend has one
    evidence: dict[str, Any] = field(default_factory=dict)  # raw text, logprobs, logits
    latency_s: float = 0.0
    backend: str = ""
    model_version: str = ""
    valid: bool = True
    error: str | None = None  # why the result is invalid
    key: Any = None  # the query's key

    @classmethod
    def invalid(cls, error: str, backend: str = "", model_version: str = "", latency_s: float = 0.0,
                key: Any = None) -> "RewardResult":
        return cls(value=float("nan"), prob=None, latency_s=latency_s, backend=backend,
                   model_version=model_version, valid=False, error=error, key=key)


class RewardModel:
    """Base of every backend: ``score`` is batched and synchronous, ``score_async`` returns a Future.

    Subclasses set ``backend`` and ``model_version`` and implement ``_score(queries)``; results come back
    in the queries' order with their keys and latencies filled in. ``score`` never raises for a transient
    backend failure: those results are invalid. Bad input (a query the backend cannot read) raises.
    """

    backend: str = "base"
    model_version: str = "unversioned"
    max_workers: int = 1  # threads behind score_async

    def _score(self, queries: Sequence[RewardQuery]) -> list[RewardResult]:
        raise NotImplementedError

    def score(self, queries: Sequence[RewardQuery]) -> list[RewardResult]:
        start = time.perf_counter()
        results = self._score(list(queries))
        if len(results) != len(queries):
            raise RuntimeError(f"{type(self).__name__} returned {len(results)} results for {len(queries)} queries")
        elapsed = time.perf_counter() - start
        for query, result in zip(queries, results):
            result.key = query.key
            result.backend = result.backend or self.backend
            result.model_version = result.model_version or self.model_version
            result.latency_s = result.latency_s or elapsed
        return results

    def score_async(self, queries: Sequence[RewardQuery]) -> Future:
        if getattr(self, "_pool", None) is None:
            self._pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix=f"reward-{self.backend}")
        return self._pool.submit(self.score, list(queries))

    def close(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
