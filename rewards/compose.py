"""Reward models built from reward models: weighted sum, AND-gate with a proprioceptive predicate, debounce.

Each is a ``RewardModel``, so they nest (``Debounce(AndGate(classifier, gripper_above(0.05)), k=3)`` is
HIL-SERL's detector with a hold) and serve, relabel and feed RL like any backend. An invalid input result
makes the composed result invalid (its error names the part), never a silent 0.
"""
from __future__ import annotations

import operator
import threading
from typing import Any, Callable, Hashable, Sequence

import numpy as np

from armflow.rewards.protocol import RewardModel, RewardQuery, RewardResult

Predicate = Callable[[np.ndarray], bool]
_OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}


class StatePredicate:
    """``state[index] <op> threshold`` on ``query.state`` (``observation.state``), e.g. gripper height z > 0.05 m."""

    def __init__(self, index: int, threshold: float, op: str = ">", name: str | None = None):
        if op not in _OPS:
            raise ValueError(f"StatePredicate op={op!r}: expected one of {', '.join(_OPS)}")
        self.index, self.threshold, self.op = int(index), float(threshold), op
        self.name = name or f"state[{self.index}]{op}{self.threshold:g}"

    def __call__(self, state: np.ndarray) -> bool:
        return bool(_OPS[self.op](float(np.asarray(state).reshape(-1)[self.index]), self.threshold))


def _name(model: RewardModel) -> str:
    return f"{model.backend}@{model.model_version}"


class WeightedSum(RewardModel):
    """value = sum_i w_i v_i / sum_i w_i (weights >= 0, so values in [0, 1] stay in [0, 1]); prob likewise
    when every part has one. Parts are scored concurrently (each through its own ``score_async``).
    ``evidence["terms"]`` holds each part's value under its backend name (a repeated name gets ``#i``)."""

    backend = "weighted_sum"

    def __init__(self, models: Sequence[RewardModel], weights: Sequence[float]):
        w = np.asarray(weights, dtype=np.float64)
        if len(models) == 0 or w.shape != (len(models),) or (w < 0).any() or not w.sum() > 0:
            raise ValueError(f"WeightedSum: need one weight >= 0 per model with a positive sum; got {len(models)} "
                             f"models and weights {list(weights)}")
        self.models, self.weights = list(models), w / w.sum()
        names = [m.backend for m in self.models]
        self.names = [n if names.count(n) == 1 else f"{n}#{i}" for i, n in enumerate(names)]
        self.max_workers = 2

    @property
    def model_version(self) -> str:
        return "sum(" + ", ".join(f"{w:.4g}*{_name(m)}" for w, m in zip(self.weights, self.models)) + ")"

    def _score(self, queries: Sequence[RewardQuery]) -> list[RewardResult]:
        futures = [m.score_async(queries) for m in self.models]
        per_model = [f.result() for f in futures]
        out = []
        for parts in zip(*per_model):
            bad = [f"{n}: {r.error}" for n, r in zip(self.names, parts) if not r.valid]
            if bad:
                out.append(RewardResult.invalid("; ".join(bad)))
                continue
            value = float(np.dot(self.weights, [r.value for r in parts]))
            probs = [r.prob for r in parts]
            prob = float(np.dot(self.weights, probs)) if all(p is not None for p in probs) else None
            out.append(RewardResult(value=value, prob=prob, latency_s=max(r.latency_s for r in parts),
                                    evidence={"terms": {n: r.value for n, r in zip(self.names, parts)}}))
        return out

    def close(self) -> None:
        super().close()
        for m in self.models:
            m.close()


class AndGate(RewardModel):
    """Success only when the model says so AND a predicate on ``query.state`` holds (HIL-SERL: classifier
    above 0.85 and the gripper lifted). value = 1.0 if (model value >= threshold and predicate) else 0.0;
    prob = the model's prob when the predicate holds, else 0. A query without ``state`` is bad input."""

    backend = "and_gate"

    def __init__(self, model: RewardModel, predicate: Predicate, threshold: float = 0.5, name: str | None = None):
        self.model, self.predicate, self.threshold = model, predicate, float(threshold)
        self.name = name or getattr(predicate, "name", getattr(predicate, "__name__", "predicate"))

    @property
    def model_version(self) -> str:
        return f"and({_name(self.model)} >= {self.threshold:g}, {self.name})"

    def _score(self, queries: Sequence[RewardQuery]) -> list[RewardResult]:
        for q in queries:
            if q.state is None:
                raise ValueError(f"AndGate({self.name}): query {q.key!r} has no state; the predicate reads "
                                 "query.state (observation.state)")
        gates = [bool(self.predicate(q.state)) for q in queries]
        out = []
        for gate, r in zip(gates, self.model.score(queries)):
            if not r.valid:
                out.append(RewardResult.invalid(f"{_name(self.model)}: {r.error}", latency_s=r.latency_s))
                continue
            passed = r.value >= self.threshold and gate
            prob = (r.prob if gate else 0.0) if r.prob is not None else None
            out.append(RewardResult(value=float(passed), prob=prob, latency_s=r.latency_s,
                                    evidence={"model_value": r.value, self.name: gate}))
        return out

    def close(self) -> None:
        super().close()
        self.model.close()


def gated(model: RewardModel, gates: dict | Sequence[dict] | None, threshold: float = 0.5) -> RewardModel:
    """``model`` AND-gated on every ``{index, op, threshold}`` of ``gates`` (one dict or a list; all must hold) on
    ``observation.state``: HIL-SERL's classifier AND gripper check, from plain config data. No gates: ``model``."""
    for i, gate in enumerate([gates] if isinstance(gates, dict) else list(gates or [])):
        missing = [k for k in ("index", "threshold") if k not in gate]
        if missing:
            raise ValueError(f"gate[{i}] = {dict(gate)}: missing {missing}; expected {{index, op, threshold}} on "
                             "observation.state, e.g. {index: 2, op: '>', threshold: 0.058}")
        predicate = StatePredicate(int(gate["index"]), float(gate["threshold"]), str(gate.get("op", ">")))
        model = AndGate(model, predicate, threshold)
    return model


class Debounce(RewardModel):
    """1.0 once a stream has had ``k`` consecutive positives (value >= threshold), else 0.0.

    A stream is ``stream_of(query.key)`` (default: the key itself, e.g. the env index). Queries of one
    stream in one batch count in order. An invalid result neither counts nor breaks the run (the frame is
    unknown, not negative) and stays invalid. ``reset(streams)`` clears counts, e.g. at an episode end.
    """

    backend = "debounce"

    def __init__(self, model: RewardModel, k: int, threshold: float = 0.5,
                 stream_of: Callable[[Any], Hashable] = lambda key: key):
        if k < 1:
            raise ValueError(f"Debounce k={k}: expected >= 1 consecutive positives")
        self.model, self.k, self.threshold, self.stream_of = model, int(k), float(threshold), stream_of
        self.counts: dict[Hashable, int] = {}
        self._lock = threading.Lock()

    @property
    def model_version(self) -> str:
        return f"debounce({_name(self.model)}, k={self.k}, >= {self.threshold:g})"

    def reset(self, streams: Sequence[Hashable] | None = None) -> None:
        with self._lock:
            if streams is None:
                self.counts.clear()
            for s in streams or ():
                self.counts.pop(s, None)

    def _score(self, queries: Sequence[RewardQuery]) -> list[RewardResult]:
        results = self.model.score(queries)
        out = []
        with self._lock:  # counts advance in query order even when batches arrive from several threads
            for q, r in zip(queries, results):
                if not r.valid:
                    out.append(RewardResult.invalid(f"{_name(self.model)}: {r.error}", latency_s=r.latency_s))
                    continue
                stream = self.stream_of(q.key)
                count = self.counts.get(stream, 0) + 1 if r.value >= self.threshold else 0
                self.counts[stream] = count
                out.append(RewardResult(value=float(count >= self.k), prob=r.prob, latency_s=r.latency_s,
                                        evidence={"model_value": r.value, "consecutive": count}))
        return out

    def close(self) -> None:
        super().close()
        self.model.close()
