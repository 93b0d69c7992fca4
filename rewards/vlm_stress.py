"""Concurrency and cache check of the OpenAI-compatible client against the loopback server (for the bench).

Every query gets a distinct frame, so the server's answer P(yes) = ``expected_prob(image)`` identifies
the query it answered; a result whose probability or key differs from its own query's is mismatched.
"""
from __future__ import annotations

import tempfile
import time

import numpy as np

from armflow.rewards.images import data_url
from armflow.rewards.protocol import RewardQuery
from armflow.rewards.testing_server import ChatServer, expected_prob
from armflow.rewards.vlm_openai import OpenAIVLMReward


def stress_queries(n_queries: int, size: int = 32, seed: int = 0) -> list[RewardQuery]:
    """``n_queries`` distinct uint8 frames (random pixels, query index stamped in the corner)."""
    rng = np.random.default_rng(seed)
    queries = []
    for i in range(n_queries):
        frame = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        frame[0, 0] = (i % 256, (i // 256) % 256, 7)  # distinct even if the RNG repeated itself
        queries.append(RewardQuery(frames={"front": frame}, instruction="lift the cube", key=i))
    return queries


def count_mismatched(queries: list[RewardQuery], results) -> int:
    """Results that are invalid, carry another query's key, or another image's P(yes)."""
    bad = 0
    for q, r in zip(queries, results):
        want = expected_prob(data_url(q.frames["front"][-1]))
        bad += int(not r.valid or r.key != q.key or r.prob is None or abs(r.prob - want) > 1e-9)
    return bad + abs(len(queries) - len(results))


def stress(n_queries: int = 200, concurrency: int = 20, hold_s: float = 0.05, cache_dir: str | None = None) -> dict:
    """Score ``n_queries`` distinct frames through ``concurrency`` requests in flight, then rerun them with a
    fresh client on the same cache. Returns ``vlm_concurrent_requests`` (peak in flight the server saw),
    ``vlm_lost_or_mismatched`` (0 expected), ``vlm_cache_rerun_requests`` (0 expected) and timings.
    ``hold_s`` keeps each request open briefly so overlap is observable on a 2-core box."""
    queries = stress_queries(n_queries)
    with tempfile.TemporaryDirectory(prefix="armflow-vlm-cache-") as tmp, ChatServer(hold_s=hold_s) as server:
        options = dict(model=server.model, url=server.url, concurrency=concurrency, timeout_s=30.0,
                       cache_dir=cache_dir or tmp, top_logprobs=5)
        with OpenAIVLMReward(**options) as model:
            start = time.perf_counter()
            results = model.score(queries)
            first_s = time.perf_counter() - start
        first = server.stats()
        with OpenAIVLMReward(**options) as model:  # a new process would see the same: nothing in memory
            start = time.perf_counter()
            rerun = model.score(queries)
            rerun_s = time.perf_counter() - start
        second = server.stats()
    return {"vlm_concurrent_requests": first["peak_in_flight"],
            "vlm_lost_or_mismatched": count_mismatched(queries, results),
            "vlm_cache_rerun_requests": second["requests"] - first["requests"],
            "vlm_cache_rerun_mismatched": count_mismatched(queries, rerun),
            "vlm_requests_first_run": first["requests"], "vlm_queries": n_queries,
            "vlm_first_run_s": first_s, "vlm_rerun_s": rerun_s,
            "vlm_queries_per_s": n_queries / first_s if first_s > 0 else float("inf")}
