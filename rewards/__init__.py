"""Reward models behind one protocol (``RewardQuery`` -> ``RewardResult``); never imports sim/ or policies/.

The protocol loads eagerly; the rest on first access (``armflow.rewards.make_reward_model``), so importing
the package stays cheap (no HTTP, ZeroMQ, dataset or torch modules until used).
"""
from armflow.rewards.protocol import MODES, RewardModel, RewardQuery, RewardResult

_LAZY = {  # name -> module that defines it
    "BACKENDS": "armflow.rewards.registry",
    "make_reward_model": "armflow.rewards.registry",
    "OpenAIVLMReward": "armflow.rewards.vlm_openai",
    "WeightedSum": "armflow.rewards.compose",
    "AndGate": "armflow.rewards.compose",
    "Debounce": "armflow.rewards.compose",
    "StatePredicate": "armflow.rewards.compose",
    "FunctionReward": "armflow.rewards.fake",
    "RewardModelFn": "armflow.rewards.rl",
    "NoisyReward": "armflow.rewards.rl",
    "DetectorNoise": "armflow.rewards.rl",
    "relabel_dataset": "armflow.rewards.relabel",
    "RemoteRewardModel": "armflow.rewards.remote",
    "PendingRewards": "armflow.rewards.remote",
}

__all__ = ["MODES", "RewardModel", "RewardQuery", "RewardResult", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'armflow.rewards' has no attribute {name!r}")
