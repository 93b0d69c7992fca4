"""A reward model from a plain function of the query, for tests, benchmarks and quick experiments.

``FunctionReward(lambda q: float(q.state[2] > 0.05), name="z_above")`` is a proprioceptive detector;
``delay_s`` makes a slow model (to check that nothing waits on it) and ``invalid_when`` a flaky one.
"""
from __future__ import annotations

import time
from typing import Callable, Sequence

from armflow.rewards.protocol import RewardModel, RewardQuery, RewardResult


class FunctionReward(RewardModel):
    def __init__(self, fn: Callable[[RewardQuery], float], name: str = "function", version: str = "1",
                 delay_s: float = 0.0, invalid_when: Callable[[RewardQuery], bool] | None = None):
        self.fn, self.delay_s, self.invalid_when = fn, float(delay_s), invalid_when
        self.backend, self.model_version = name, version
        self.calls = 0  # batches scored

    def _score(self, queries: Sequence[RewardQuery]) -> list[RewardResult]:
        self.calls += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        out = []
        for q in queries:
            if self.invalid_when is not None and self.invalid_when(q):
                out.append(RewardResult.invalid(f"{self.backend}: no answer for this query"))
            else:
                value = float(self.fn(q))
                out.append(RewardResult(value=value, prob=value, evidence={"fn": value}))
        return out
