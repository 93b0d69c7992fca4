"""OpenAI-compatible VLM success detector (vLLM, SGLang, Ollama, any ``/v1/chat/completions`` server).

Scoring (``scoring``):
- ``logprobs``: one token, ``max_tokens=1, logprobs=true, top_logprobs=k``; P(yes) is the softmax of the
  yes-variants against the no-variants among the top-k tokens ("Yes", " yes", "YES." all count as yes):
  a calibrated probability from one forward pass, through the public API (TOPReward's idea).
- ``text``: a short greedy answer parsed as yes/no (value 1/0, no probability) for servers that return
  no logprobs; ``text_extra_body`` can add a server's constrained-choice field (vLLM:
  ``{"guided_choice": ["yes", "no"]}``).
- ``auto``: probe the server once, before the first request that the cache cannot answer, and pick.

Failures (timeout after retries, dead server, non-JSON, no yes/no token in the top-k, an unparseable
answer) give invalid results with the reason in ``error``; ``score`` never raises for them. Answers are
cached on disk by (image hashes, rendered prompt and its version hash, model, scoring): a rerun over the
same frames issues no request at all, not even the probe.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import string
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from armflow.configs import build_config
from armflow.rewards.cache import DiskCache
from armflow.rewards.http_json import JsonClient, RequestFailed, RetryPolicy
from armflow.rewards.images import IMAGE_FORMATS, data_url, image_hash
from armflow.rewards.prompts import YesNoPrompt, get_prompt
from armflow.rewards.protocol import RewardModel, RewardQuery, RewardResult

SCORINGS = ("auto", "logprobs", "text")


class AnswerError(ValueError):
    """The server answered, but not with something we can read as yes/no."""


@dataclass
class OpenAIVLMConfig:
    model: str = ""                  # the served model name (required)
    url: str = "http://127.0.0.1:8000/v1"  # base URL; requests go to <url>/chat/completions
    api_key_env: str = "OPENAI_API_KEY"    # environment variable holding the key (unset: no auth header)
    prompt: str = "success"          # prompts.PROMPTS name
    scoring: str = "auto"            # auto | logprobs | text
    top_logprobs: int = 10           # k of top_logprobs (vLLM's default cap is 20)
    image_format: str = "png"        # png (lossless) | jpeg (smaller requests)
    jpeg_quality: int = 90
    frames: str = "last"             # last: newest frame per camera | all: every frame of the window
    timeout_s: float = 30.0          # per socket operation [s]
    max_retries: int = 3
    backoff_s: float = 0.25          # first full-jitter backoff cap [s], doubling per retry
    max_retry_after_s: float = 30.0  # a 429 asking for longer fails the query instead
    rate_per_s: float = 0.0          # request starts per second (0: unlimited)
    concurrency: int = 8             # requests in flight at most (one pool per backend)
    cache_dir: str | None = None     # on-disk answer cache (None: no cache)
    text_max_tokens: int = 3
    text_extra_body: dict = field(default_factory=dict)
    seed: int | None = None          # retry jitter RNG

    def __post_init__(self):
        problems = []
        if not self.model:
            problems.append("model is required (the name the server serves)")
        if self.scoring not in SCORINGS:
            problems.append(f"scoring={self.scoring!r}: expected one of {', '.join(SCORINGS)}")
        if self.image_format not in IMAGE_FORMATS:
            problems.append(f"image_format={self.image_format!r}: expected one of {', '.join(IMAGE_FORMATS)}")
        if self.frames not in ("last", "all"):
            problems.append(f"frames={self.frames!r}: expected last or all")
        if not 1 <= self.top_logprobs <= 20 or self.concurrency < 1:
            problems.append(f"top_logprobs={self.top_logprobs} must be in [1, 20] and concurrency="
                            f"{self.concurrency} >= 1")
        if problems:
            raise ValueError("openai reward backend: " + "; ".join(problems))
        self.text_extra_body = dict(self.text_extra_body)


def _word(token: str) -> str:
    return token.strip().strip(string.punctuation).lower()


def top_logprobs_of(answer: dict) -> list[tuple[str, float]]:
    """(token, logprob) of the first generated token: the chat format (``logprobs.content[0].top_logprobs``,
    a list of {token, logprob, bytes}) or the legacy completions one (``logprobs.top_logprobs[0]``, a dict)."""
    logprobs = (answer.get("choices") or [{}])[0].get("logprobs") or {}
    if logprobs.get("content"):
        return [(str(t["token"]), float(t["logprob"])) for t in logprobs["content"][0].get("top_logprobs") or []]
    legacy = logprobs.get("top_logprobs") or []
    return [(str(tok), float(lp)) for tok, lp in legacy[0].items()] if legacy else []


def yes_probability(top: Sequence[tuple[str, float]], prompt: YesNoPrompt) -> tuple[float, dict]:
    """P(yes) = sum exp(yes-variant logprobs) / (that + sum exp(no-variant logprobs)), with evidence."""
    yes = [lp for tok, lp in top if _word(tok) in prompt.yes]
    no = [lp for tok, lp in top if _word(tok) in prompt.no]
    if not yes and not no:
        raise AnswerError(f"no yes/no token among the top {len(top)} logprobs: {[t for t, _ in top][:8]}")
    m = max(yes + no)  # log-sum-exp: exp() of logprobs near -30 would underflow to 0
    mass_yes, mass_no = sum(math.exp(lp - m) for lp in yes), sum(math.exp(lp - m) for lp in no)
    evidence = {"top_logprobs": {tok: lp for tok, lp in top},
                "yes_no_mass": math.exp(m) * (mass_yes + mass_no)}  # how much of the distribution was yes/no
    return mass_yes / (mass_yes + mass_no), evidence


def parse_text_answer(text: str, prompt: YesNoPrompt) -> float:
    """1.0 for a yes, 0.0 for a no, judged on the first word; anything else raises ``AnswerError``."""
    words = text.split()
    first = _word(words[0]) if words else ""
    if first in prompt.yes:
        return 1.0
    if first in prompt.no:
        return 0.0
    raise AnswerError(f"answer is not yes/no: {text[:80]!r}")


def content_of(answer: dict) -> str:
    try:
        content = answer["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise AnswerError(f"no choices[0].message.content in the response: {json.dumps(answer)[:120]}") from None
    if not isinstance(content, str):
        raise AnswerError(f"choices[0].message.content is {type(content).__name__}, expected a string")
    return content


def read_answer(answer: dict, scoring: str, prompt: YesNoPrompt) -> tuple[float, float | None, dict]:
    """(value, prob, evidence) of one chat-completions response; ``AnswerError`` when it holds no yes/no.
    With logprobs the content is only evidence (some servers leave it null when asked for one token); a
    logprobs server that left them out of this one answer is read as text."""
    top = top_logprobs_of(answer) if scoring == "logprobs" else []
    if top:
        prob, evidence = yes_probability(top, prompt)
        text = ((answer.get("choices") or [{}])[0].get("message") or {}).get("content")
        return prob, prob, {**evidence, "text": text if isinstance(text, str) else "", "scoring": "logprobs"}
    text = content_of(answer)
    return parse_text_answer(text, prompt), None, {"text": text, "scoring": "text"}


class OpenAIVLMReward(RewardModel):
    """Yes/no success probability from an OpenAI-compatible VLM server (see module docstring)."""

    backend = "openai"

    def __init__(self, **options: Any):
        self.cfg = build_config(OpenAIVLMConfig, options, where="openai reward backend")
        self.prompt = get_prompt(self.cfg.prompt)
        self.client = JsonClient(self.cfg.url, self.cfg.timeout_s, os.environ.get(self.cfg.api_key_env),
                                 RetryPolicy(self.cfg.max_retries, self.cfg.backoff_s,
                                             max_retry_after_s=self.cfg.max_retry_after_s),
                                 self.cfg.rate_per_s, self.cfg.seed)
        self.cache = DiskCache(self.cfg.cache_dir) if self.cfg.cache_dir else None
        self.scoring = None if self.cfg.scoring == "auto" else self.cfg.scoring
        self.max_workers = 2  # score_async batches may overlap; the HTTP pool bounds the requests
        self._http = ThreadPoolExecutor(self.cfg.concurrency, thread_name_prefix="vlm-http")
        self._probe_lock = threading.Lock()

    @property
    def model_version(self) -> str:
        return f"{self.cfg.model}|{self.prompt.tag}|{self.scoring or self.cfg.scoring}"

    # ------------------------------------------------------------------ requests
    def _images(self, query: RewardQuery) -> list[tuple[str, Any]]:
        """(label, image) in the order they are sent: each camera's frames, then the references."""
        out = []
        for cam, frames in query.frames.items():
            chosen = frames[-1:] if self.cfg.frames == "last" else frames
            out += [(f"camera {cam}" + (f", frame {t + 1}/{len(chosen)}" if len(chosen) > 1 else ""), f)
                    for t, f in enumerate(chosen)]
        return out + [(f"reference image: {name}", img) for name, img in query.references.items()]

    def cache_key(self, query: RewardQuery) -> str:
        blob = {"model": self.cfg.model, "prompt": self.prompt.tag, "scoring": self.cfg.scoring,
                "text": self.prompt.render(query.instruction, list(query.frames)),
                "images": [(label, image_hash(img)) for label, img in self._images(query)],
                "format": self.cfg.image_format, "quality": self.cfg.jpeg_quality}
        return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()

    def request_body(self, query: RewardQuery, scoring: str) -> dict:
        parts: list[dict] = [{"type": "text", "text": self.prompt.render(query.instruction, list(query.frames))}]
        for label, img in self._images(query):
            parts.append({"type": "text", "text": label})
            parts.append({"type": "image_url", "image_url": {
                "url": data_url(img, self.cfg.image_format, self.cfg.jpeg_quality)}})
        body = {"model": self.cfg.model, "temperature": 0.0,
                "messages": [{"role": "system", "content": self.prompt.system},
                             {"role": "user", "content": parts}]}
        if scoring == "logprobs":
            return {**body, "max_tokens": 1, "logprobs": True, "top_logprobs": self.cfg.top_logprobs}
        return {**body, "max_tokens": self.cfg.text_max_tokens, **self.cfg.text_extra_body}

    def probe(self) -> str:
        """Ask one tiny text question with logprobs on; returns and keeps the scoring the server supports.
        A server that rejects the logprobs fields (400/422) or answers without them gets ``text``."""
        with self._probe_lock:
            if self.scoring is not None:
                return self.scoring
            body = {"model": self.cfg.model, "max_tokens": 1, "temperature": 0.0, "logprobs": True,
                    "top_logprobs": self.cfg.top_logprobs,
                    "messages": [{"role": "user", "content": "Is 2 greater than 1? Answer yes or no."}]}
            try:
                answer = self.client.post("/chat/completions", body)
                self.scoring = "logprobs" if top_logprobs_of(answer) else "text"
            except RequestFailed as exc:
                if exc.status not in (400, 422):
                    raise
                self.scoring = "text"
            except (KeyError, IndexError, TypeError, ValueError, AttributeError):
                self.scoring = "text"  # logprobs present but not in a shape we read
            return self.scoring

    def _ask(self, query: RewardQuery, scoring: str) -> RewardResult:
        start = time.perf_counter()
        try:
            answer = self.client.post("/chat/completions", self.request_body(query, scoring))
            value, prob, evidence = read_answer(answer, scoring, self.prompt)
        except RequestFailed as exc:
            return RewardResult.invalid(exc.reason, latency_s=time.perf_counter() - start)
        except AnswerError as exc:
            return RewardResult.invalid(f"unreadable answer: {exc}", latency_s=time.perf_counter() - start)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            return RewardResult.invalid(f"malformed response: {type(exc).__name__}: {exc}",
                                        latency_s=time.perf_counter() - start)
        return RewardResult(value=value, prob=prob, evidence=evidence, latency_s=time.perf_counter() - start,
                            model_version=self.model_version)

    # ------------------------------------------------------------------ protocol
    def _score(self, queries: Sequence[RewardQuery]) -> list[RewardResult]:
        for q in queries:
            if q.mode != "success":
                raise ValueError(f"openai reward backend scores mode='success' only, got mode={q.mode!r}")
        keys = [self.cache_key(q) for q in queries]
        results: list[RewardResult | None] = [self._cached(k) for k in keys]
        todo = {k: q for k, q, r in zip(keys, queries, results) if r is None}  # identical queries asked once
        if todo:
            answers = self._ask_all(todo)
            results = [r if r is not None else _copy(answers[k]) for k, r in zip(keys, results)]
        return results

    def _ask_all(self, todo: dict[str, RewardQuery]) -> dict[str, RewardResult]:
        start = time.perf_counter()
        try:
            scoring = self.probe()
        except RequestFailed as exc:
            fail = RewardResult.invalid(f"probe failed: {exc.reason}", latency_s=time.perf_counter() - start)
            return {k: fail for k in todo}
        futures = {k: self._http.submit(self._ask, q, scoring) for k, q in todo.items()}
        answers = {k: f.result() for k, f in futures.items()}
        if self.cache is not None:
            for k, r in answers.items():
                if r.valid:
                    self.cache.put(k, {"value": r.value, "prob": r.prob, "evidence": r.evidence,
                                       "model_version": r.model_version})
        return answers

    def _cached(self, key: str) -> RewardResult | None:
        start = time.perf_counter()
        entry = self.cache.get(key) if self.cache is not None else None
        try:
            return RewardResult(value=float(entry["value"]), prob=entry["prob"], model_version=entry["model_version"],
                                evidence={**entry["evidence"], "cached": True}, latency_s=time.perf_counter() - start)
        except (TypeError, KeyError, ValueError):  # no entry, or one this version cannot read: ask again
            return None

    def close(self) -> None:
        super().close()
        self._http.shutdown(wait=True, cancel_futures=True)


def _copy(result: RewardResult) -> RewardResult:
    return RewardResult(**{**asdict(result), "evidence": dict(result.evidence)})


def stress(n_queries: int = 200, concurrency: int = 20, **kwargs: Any) -> dict:
    """The bench's VLM check (``armflow.rewards.vlm_stress.stress``): peak concurrency, lost/mismatched
    answers and requests issued by a cached rerun against the loopback server."""
    from armflow.rewards.vlm_stress import stress as run  # that module imports this one

    return run(n_queries=n_queries, concurrency=concurrency, **kwargs)
