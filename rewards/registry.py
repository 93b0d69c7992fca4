"""Reward backends by name: an explicit dict, one line per backend (no import side effects).

``make_reward_model(name, **cfg)`` builds one; the backend checks its own keys (an unknown key raises
``ConfigError`` listing the valid ones). ``armflow reward serve backend=NAME`` and the RL reward config
look names up here.
"""
from __future__ import annotations

from typing import Any, Callable

from armflow.configs import ConfigError, did_you_mean
from armflow.rewards.protocol import RewardModel


def _openai(**cfg: Any) -> RewardModel:
    from armflow.rewards.vlm_openai import OpenAIVLMReward

    return OpenAIVLMReward(**cfg)


def _classifier(**cfg: Any) -> RewardModel:
    from armflow.rewards.classifier import load_backend

    return load_backend(**cfg)


def _hf_vlm(**cfg: Any) -> RewardModel:
    from armflow.rewards.hf_vlm import HFVLMReward

    return HFVLMReward(**cfg)


def _embedding(**cfg: Any) -> RewardModel:
    from armflow.rewards.embedding import EmbeddingReward

    return EmbeddingReward(**cfg)


# name -> factory(**cfg) -> RewardModel; factories import their backend lazily (torch only where needed)
BACKENDS: dict[str, Callable[..., RewardModel]] = {
    "openai": _openai,  # OpenAI-compatible chat completions (vLLM, SGLang, Ollama): url, model, ...
    "hf_vlm": _hf_vlm,  # local HF VLM, yes/no logits in one forward pass: path (local dir), threshold, ...
    "embedding": _embedding,  # CLIP/SigLIP VLM-RM shaping: path, goal_prompts, baseline_prompts, alpha, ...
    "classifier": _classifier,  # success classifier from `armflow reward fit`: path, threshold
}


def make_reward_model(name: str, **cfg: Any) -> RewardModel:
    if name not in BACKENDS:
        raise ConfigError(f"unknown reward backend {name!r}.{did_you_mean(name, BACKENDS)} "
                          f"Valid: {', '.join(BACKENDS)}")
    return BACKENDS[name](**cfg)
