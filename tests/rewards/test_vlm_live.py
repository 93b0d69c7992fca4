"""Opt-in: the OpenAI-compatible backend against a live server (vLLM, SGLang, Ollama).

Run with ``ARMFLOW_VLM_URL=http://127.0.0.1:8000/v1 ARMFLOW_VLM_MODEL=<served name>``; skipped otherwise.
Checks the contract, not the model's judgement: valid answers, probabilities in [0, 1], the probe's pick.
"""
import os

import numpy as np
import pytest

from armflow.rewards.protocol import RewardQuery
from armflow.rewards.vlm_openai import OpenAIVLMReward

URL, MODEL = os.environ.get("ARMFLOW_VLM_URL"), os.environ.get("ARMFLOW_VLM_MODEL")
pytestmark = pytest.mark.skipif(not (URL and MODEL), reason="set ARMFLOW_VLM_URL and ARMFLOW_VLM_MODEL")


def test_live_server_answers_yes_no(tmp_path):
    red = np.zeros((64, 64, 3), np.uint8)
    red[..., 0] = 255
    queries = [RewardQuery(frames={"front": red}, instruction="show an image that is entirely red", key="red"),
               RewardQuery(frames={"front": 255 - red}, instruction="show an image that is entirely red", key="cyan")]
    with OpenAIVLMReward(url=URL, model=MODEL, cache_dir=str(tmp_path), timeout_s=120) as model:
        scoring = model.probe()
        results = model.score(queries)
    assert scoring in ("logprobs", "text")
    for r in results:
        assert r.valid, r.error
        assert 0.0 <= r.value <= 1.0 and r.evidence["scoring"] in ("logprobs", "text")
    print({r.key: (r.value, r.evidence.get("text")) for r in results}, scoring)
