"""armflow.policies: generative action models (flow, diffusion) + a Gaussian baseline, and what runs them.

Public API (see the README "Interfaces / Policy"):
``make_policy``, ``load_policy``, ``POLICIES``, ``PolicyLoadError``, the policy classes and configs,
``Normalizer``, ``ActionChunker`` / ``BatchedActionChunker``, ``ObsHistory`` / ``BatchedObsHistory``,
``EMA``, ``cosine_with_warmup``, ``SamplerHooks`` / ``weighted_composer`` (sampler steering hooks).
``armflow.policies.rl`` holds the RL fine-tuning learners.
"""
from .backbones import ConditionalUnet1D, ResidualMLPDenoiser
from .base import BasePolicy
from .chunking import ActionChunker, BatchedActionChunker, BatchedObsHistory, ObsHistory
from .config import DiffusionConfig, FlowConfig, GaussianConfig
from .diffusion import DiffusionPolicy
from .factory import POLICIES, PolicyLoadError, load_policy, make_policy
from .flow import FlowPolicy
from .gaussian import GaussianPolicy
from .normalizer import Normalizer
from .sampler import SamplerHooks, weighted_composer
from .training import EMA, cosine_with_warmup

__all__ = [
    "ActionChunker", "BasePolicy", "BatchedActionChunker", "BatchedObsHistory", "ConditionalUnet1D",
    "DiffusionConfig", "DiffusionPolicy", "EMA", "FlowConfig", "FlowPolicy", "GaussianConfig", "GaussianPolicy",
    "Normalizer", "ObsHistory", "POLICIES", "PolicyLoadError", "ResidualMLPDenoiser", "SamplerHooks",
    "cosine_with_warmup", "load_policy", "make_policy", "weighted_composer",
]
