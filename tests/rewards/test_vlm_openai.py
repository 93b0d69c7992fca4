"""The OpenAI-compatible VLM backend against a real HTTP server on 127.0.0.1 in every mode."""
import json
import math
import time

import cv2
import numpy as np
import pytest

from armflow.configs import ConfigError
from armflow.rewards.http_json import parse_retry_after
from armflow.rewards.images import data_url, encode_png
from armflow.rewards.prompts import SUCCESS_V1
from armflow.rewards.protocol import RewardQuery
from armflow.rewards.testing_server import ChatServer, expected_prob
from armflow.rewards.vlm_openai import AnswerError, OpenAIVLMReward, read_answer, yes_probability
from armflow.rewards.vlm_stress import count_mismatched, stress_queries


def _model(server, **kw):
    return OpenAIVLMReward(**{"model": server.model, "url": server.url, "timeout_s": 2.0, "backoff_s": 0.01,
                              "seed": 0, **kw})


def _want(q):
    return expected_prob(data_url(q.frames["front"][-1]))


def test_png_encoder_round_trips_through_opencv():
    img = np.random.default_rng(1).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    decoded = cv2.imdecode(np.frombuffer(encode_png(img), np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    np.testing.assert_array_equal(decoded, img)
    assert data_url(img, "jpeg").startswith("data:image/jpeg;base64,/9j/")  # JPEG SOI marker in base64


def test_yes_probability_is_softmax_over_variants():
    top = [("Yes", math.log(0.3)), (" yes", math.log(0.1)), ("No.", math.log(0.2)), ("maybe", math.log(0.4))]
    p, evidence = yes_probability(top, SUCCESS_V1)
    assert p == pytest.approx(0.4 / 0.6, abs=1e-12)
    assert evidence["yes_no_mass"] == pytest.approx(0.6)
    # logprobs far below exp()'s range still give the right ratio (log-sum-exp)
    p, _ = yes_probability([("yes", -800.0), ("no", -800.0 + math.log(3))], SUCCESS_V1)
    assert p == pytest.approx(0.25)


def test_logprobs_mode_reads_each_queries_own_answer(tmp_path):
    queries = stress_queries(6)
    with ChatServer() as server, _model(server, cache_dir=str(tmp_path)) as model:
        results = model.score(queries)
        assert server.stats()["requests"] == 1 + len(queries)  # the probe, then one per query
    assert count_mismatched(queries, results) == 0
    r = results[0]
    assert r.value == r.prob == pytest.approx(_want(queries[0]), abs=1e-12)
    assert r.evidence["scoring"] == "logprobs" and "Yes" in r.evidence["top_logprobs"]
    assert r.backend == "openai" and r.model_version == f"stub-vlm|{SUCCESS_V1.tag}|logprobs"


def test_request_carries_images_as_data_urls_and_references():
    frames = np.zeros((3, 8, 8, 3), np.uint8)
    q = RewardQuery(frames={"front": frames, "wrist": frames}, references={"goal": frames[0]}, instruction="lift")
    with ChatServer() as server:
        parts = _model(server, frames="all").request_body(q, "logprobs")["messages"][1]["content"]
        images = [p for p in parts if p["type"] == "image_url"]
        assert len(images) == 3 + 3 + 1 and images[0]["image_url"]["url"].startswith("data:image/png;base64,")
        assert "Task: lift." in parts[0]["text"]
        last = _model(server).request_body(q, "logprobs")
    assert sum(p["type"] == "image_url" for p in last["messages"][1]["content"]) == 1 + 1 + 1
    assert (last["max_tokens"], last["logprobs"], last["top_logprobs"]) == (1, True, 10)


def test_no_logprobs_server_falls_back_to_text():
    queries = stress_queries(4)
    with ChatServer(mode="no_logprobs") as server, _model(server) as model:
        results = model.score(queries)
        assert model.scoring == "text" and model.model_version.endswith("|text")
    for q, r in zip(queries, results):
        assert r.valid and r.prob is None and r.value == float(_want(q) >= 0.5)
        assert r.evidence["scoring"] == "text"


def test_server_rejecting_logprobs_is_probed_to_text():
    with ChatServer(fail_first=1, fail_status=400) as server, _model(server) as model:
        results = model.score(stress_queries(2))
        assert model.scoring == "text" and server.stats()["requests"] == 3
    assert all(r.valid and r.value in (0.0, 1.0) for r in results)


@pytest.mark.parametrize("kind, reason", [("json", "not JSON"), ("shape", "no choices"),
                                          ("tokens", "no yes/no token")])
def test_malformed_answers_are_invalid_never_zero(kind, reason):
    with ChatServer(mode="malformed", malformed=kind) as server, _model(server, scoring="logprobs") as model:
        results = model.score(stress_queries(3))
    for r in results:
        assert not r.valid and math.isnan(r.value) and reason in r.error, r.error


def test_malformed_probe_is_invalid_and_probed_again_next_time():
    with ChatServer(mode="malformed", malformed="json") as server, _model(server) as model:
        assert all(not r.valid and r.error.startswith("probe failed") for r in model.score(stress_queries(2)))
        model.score(stress_queries(2))
        assert server.stats()["requests"] == 2 and model.scoring is None


@pytest.mark.parametrize("status", [429, 500])
def test_transient_errors_are_retried_then_answered(status):
    queries = stress_queries(1)
    with ChatServer(fail_first=2, fail_status=status) as server, _model(server, scoring="logprobs") as model:
        (r,) = model.score(queries)
        assert server.stats()["requests"] == 3
    assert r.valid and r.prob == pytest.approx(_want(queries[0]))


def test_429_honours_retry_after():
    with ChatServer(fail_first=2, fail_status=429, retry_after_s=0.25) as server, \
            _model(server, scoring="logprobs") as model:
        start = time.perf_counter()
        (r,) = model.score(stress_queries(1))
        assert r.valid and time.perf_counter() - start >= 0.5


def test_retries_exhausted_or_retry_after_too_long_is_invalid():
    with ChatServer(fail_first=10, fail_status=429) as server, _model(server, scoring="logprobs", max_retries=2) as m:
        (r,) = m.score(stress_queries(1))
        assert not r.valid and "HTTP 429" in r.error and "gave up after 3 attempts" in r.error
    with ChatServer(fail_first=10, fail_status=429, retry_after_s=3600) as server, \
            _model(server, scoring="logprobs", max_retry_after_s=5) as m:
        start = time.perf_counter()
        (r,) = m.score(stress_queries(1))
        assert not r.valid and "Retry-After" in r.error and time.perf_counter() - start < 1.0


def test_slow_server_times_out_to_invalid():
    with ChatServer(delay_s=1.5) as server, _model(server, scoring="logprobs", timeout_s=0.2, max_retries=1) as m:
        start = time.perf_counter()
        results = m.score(stress_queries(3))
        elapsed = time.perf_counter() - start
    assert all(not r.valid and "timed out" in r.error for r in results)
    assert elapsed < 1.2  # two 0.2 s attempts plus a short backoff, not the server's 1.5 s


def test_killed_server_gives_invalid_results_and_cached_answers_survive(tmp_path):
    queries = stress_queries(4)
    server = ChatServer().start()
    model = _model(server, cache_dir=str(tmp_path), max_retries=1)
    assert all(r.valid for r in model.score(queries[:2]))
    server.stop()
    results = model.score(queries)
    model.close()
    assert [r.valid for r in results] == [True, True, False, False]
    assert "cannot reach" in results[2].error or "connection" in results[2].error


def test_concurrency_is_bounded_and_nothing_is_lost():
    queries = stress_queries(40)
    with ChatServer(hold_s=0.3) as server, _model(server, concurrency=20) as model:
        results = model.score(queries)
        assert server.stats()["peak_in_flight"] == 20
    assert count_mismatched(queries, results) == 0
    with ChatServer(hold_s=0.02) as server, _model(server, concurrency=3) as model:
        model.score(queries[:12])
        assert server.stats()["peak_in_flight"] <= 3


def test_async_batches_share_the_bound():
    queries = stress_queries(24)
    with ChatServer(hold_s=0.05) as server, _model(server, concurrency=4, scoring="logprobs") as model:
        futures = [model.score_async(queries[i:i + 8]) for i in range(0, 24, 8)]
        results = [r for f in futures for r in f.result(timeout=20)]
        assert server.stats()["peak_in_flight"] <= 4
    assert count_mismatched(queries, results) == 0


def test_cache_rerun_issues_zero_requests_and_keys_change_with_prompt_inputs(tmp_path):
    queries = stress_queries(10)
    with ChatServer() as server:
        with _model(server, cache_dir=str(tmp_path)) as model:
            first = model.score(queries)
        n = server.stats()["requests"]
        with _model(server, cache_dir=str(tmp_path)) as model:
            again = model.score(queries)
            other = RewardQuery(frames=queries[0].frames, instruction="open the drawer")
            assert model.cache_key(other) != model.cache_key(queries[0])
        assert server.stats()["requests"] == n
    assert [r.prob for r in again] == [r.prob for r in first] and all(r.evidence["cached"] for r in again)
    with ChatServer(model="other") as server, _model(server, cache_dir=str(tmp_path)) as model:
        model.score(queries[:1])  # a different model never reads the first one's answers
        assert server.stats()["requests"] == 2


def test_identical_queries_in_a_batch_are_asked_once():
    q = stress_queries(1)[0]
    with ChatServer() as server, _model(server, scoring="logprobs") as model:
        results = model.score([q, q, q])
        assert server.stats()["requests"] == 1
    assert len({r.prob for r in results}) == 1 and results[0] is not results[1]


def test_rate_limit_spaces_request_starts():
    with ChatServer() as server, _model(server, scoring="logprobs", rate_per_s=20, concurrency=10) as model:
        start = time.perf_counter()
        model.score(stress_queries(10))
        assert time.perf_counter() - start >= 9 / 20 - 0.02


def test_bad_input_and_config_raise():
    with pytest.raises(ConfigError, match="unknown config keys"):
        OpenAIVLMReward(model="m", urll="http://x")
    with pytest.raises(ValueError, match="model is required"):
        OpenAIVLMReward()
    with pytest.raises(ValueError, match="scoring"):
        OpenAIVLMReward(model="m", scoring="vibes")
    with ChatServer() as server, _model(server) as model, pytest.raises(ValueError, match="mode='success'"):
        model.score([RewardQuery(frames={"front": np.zeros((4, 4, 3), np.uint8)}, mode="progress")])


def test_retry_after_parsing():
    assert parse_retry_after("2") == 2.0 and parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412475.0) == pytest.approx(5.0)


def test_unreadable_cache_entries_are_misses(tmp_path):
    queries = stress_queries(2)
    with ChatServer() as server, _model(server, cache_dir=str(tmp_path), scoring="logprobs") as model:
        model.score(queries)
        for i, text in enumerate(["{not json", '{"value": 1.0}']):  # truncated file, entry from another layout
            (tmp_path / model.cache_key(queries[i])[:2] / f"{model.cache_key(queries[i])}.json").write_text(text)
        results = model.score(queries)
        assert server.stats()["requests"] == 4 and all(r.valid and "cached" not in r.evidence for r in results)


def test_read_answer_uses_logprobs_over_content_and_text_as_fallback():
    top = [{"token": "yes", "logprob": math.log(0.6), "bytes": []}, {"token": "No", "logprob": math.log(0.2), "bytes": []}]
    with_null_content = {"choices": [{"message": {"role": "assistant", "content": None},
                                      "logprobs": {"content": [{"token": "yes", "logprob": -0.5, "top_logprobs": top}]}}]}
    value, prob, evidence = read_answer(with_null_content, "logprobs", SUCCESS_V1)
    assert value == prob == pytest.approx(0.75) and evidence["text"] == ""
    legacy = {"choices": [{"message": {"content": "No"}, "logprobs": {"top_logprobs": [{"Yes": -3.0, "No": -3.0}]}}]}
    assert read_answer(legacy, "logprobs", SUCCESS_V1)[0] == pytest.approx(0.5)
    no_logprobs = {"choices": [{"message": {"content": "Yes, it is."}, "logprobs": None}]}
    assert read_answer(no_logprobs, "logprobs", SUCCESS_V1) == (1.0, None, {"text": "Yes, it is.", "scoring": "text"})
    with pytest.raises(AnswerError, match="not yes/no"):
        read_answer({"choices": [{"message": {"content": "I cannot tell"}}]}, "text", SUCCESS_V1)


def test_text_requests_carry_the_servers_constraint_field():
    q = stress_queries(1)[0]
    with ChatServer() as server:
        body = _model(server, text_extra_body={"guided_choice": ["yes", "no"]}).request_body(q, "text")
    sent = json.loads(json.dumps(body))  # what goes on the wire
    assert sent["guided_choice"] == ["yes", "no"] and sent["max_tokens"] == 3 and "logprobs" not in sent
