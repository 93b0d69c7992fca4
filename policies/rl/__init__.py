"""armflow.policies.rl: RL fine-tuning math and learners (DPPO, FPO, DSRL, Gaussian PPO).

Never imports sim/hardware/control: learners see raw obs windows and return env action chunks.
"""
from armflow.policies.rl.common import obs_to_torch, to_env_action
from armflow.policies.rl.dppo import DPPOConfig, DPPOLearner
from armflow.policies.rl.dsrl import DSRLConfig, DSRLLearner, DSRLPolicy, load_dsrl_policy
from armflow.policies.rl.fpo import FPOConfig, FPOLearner
from armflow.policies.rl.gaussian_ppo import GaussianPPOLearner, PPOConfig
from armflow.policies.rl.nets import TanhGaussianActor, TwinQ, ValueCritic, polyak_update
from armflow.policies.rl.ppo_math import (RewardScaler, RunningMeanStd, asymmetric_trust_loss, denoise_discount,
                                          dppo_clip_schedule, gae, normalize, ppo_clip_loss)
from armflow.policies.rl.registry import ALGOS, make_learner
from armflow.policies.rl.replay import ReplayBuffer

__all__ = ["ALGOS", "make_learner", "DPPOConfig", "DPPOLearner", "FPOConfig", "FPOLearner", "DSRLConfig",
           "DSRLLearner", "DSRLPolicy", "load_dsrl_policy", "PPOConfig", "GaussianPPOLearner", "gae", "ppo_clip_loss", "asymmetric_trust_loss",
           "dppo_clip_schedule", "denoise_discount", "normalize", "RewardScaler", "RunningMeanStd",
           "TanhGaussianActor", "TwinQ", "ValueCritic", "polyak_update", "ReplayBuffer",
           "obs_to_torch", "to_env_action"]
