"""Reward models behind one protocol (``RewardQuery`` -> ``RewardResult``); never imports sim/ or policies/."""
from armflow.rewards.protocol import MODES, RewardModel, RewardQuery, RewardResult

__all__ = ["MODES", "RewardModel", "RewardQuery", "RewardResult"]
