"""Shared test set-up: headless rendering, offline hub, one torch thread, repo paths."""
import os
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "osmesa")
os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_FIXTURES = REPO_ROOT.parent / "shared" / "fixtures"


@pytest.fixture(autouse=True)
def _one_torch_thread():
    try:
        import torch
    except ImportError:  # control/hardware tests must run without torch
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture
def shared_fixtures() -> Path:
    if not SHARED_FIXTURES.exists():
        pytest.skip(f"shared fixtures not found at {SHARED_FIXTURES}")
    return SHARED_FIXTURES


@pytest.fixture(scope="session")
def tiny_lift_ckpt(tmp_path_factory) -> Path:
    """A random tiny flow policy for ``lift``'s full state (8 + 10), horizon 8, 4 executed steps, seed 0."""
    import numpy as np
    import torch

    from armflow.policies import make_policy

    torch.manual_seed(0)
    keys = (("observation.state", 8), ("observation.environment_state", 10))
    unit = lambda d: {"min": -np.ones(d), "max": np.ones(d), "mean": np.zeros(d), "std": np.ones(d)}  # noqa: E731
    stats = {key: unit(d) for key, d in keys}
    stats["action"] = {k: 0.1 * v for k, v in unit(7).items()}
    policy = make_policy("flow", dict((k, (d,)) for k, d in keys), 7, stats, horizon=8, n_action_steps=4,
                         mlp_width=32, mlp_blocks=1, state_hidden_dim=16, state_feature_dim=8, time_dim=8,
                         num_inference_steps=2)
    return policy.save_pretrained(tmp_path_factory.mktemp("lift") / "ckpt")


@pytest.fixture(scope="session")
def improve_assets(tmp_path_factory, tiny_lift_ckpt) -> dict:
    """Tiny local models for ``armflow improve`` runs: ``tiny_lift_ckpt`` (both skills) and an untrained success
    classifier on a 32 px agentview (its own threshold option makes it always / never detect)."""
    import torch

    from armflow.rewards.classifier import ClassifierConfig, SuccessClassifier

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("improve_assets")
    clf = SuccessClassifier(ClassifierConfig(cameras=("agentview",), image_size=(32, 32), channels=(8, 8, 8)))
    return {"policy": str(tiny_lift_ckpt), "classifier": str(clf.save(root / "classifier"))}


@pytest.fixture(scope="session")
def improve_overrides():
    """``improve_overrides(assets, out, threshold, extra) -> list``: see ``_improve_overrides``."""
    return _improve_overrides


def _improve_overrides(assets: dict, out, threshold: float, extra=()) -> list[str]:
    """``armflow improve`` overrides for a seconds-long run on ``improve_assets``: both skills on the tiny policy,
    8-step attempts, the classifier's own threshold deciding every detection (0: always, 1: never)."""
    return [f"out={out}", "image_size=32", "budget_minutes=0.12", "eval.episodes=2", "eval.final_episodes=2",
            "eval.n_envs=2", "eval.every_minutes=100", "wsrl_steps=8", "broadcast_every=1", "algo.hidden=16",
            "algo.batch_size=4", "progress=false", "env.cube_orientation_obs=true",
            *[f"skills.{s}.{k}" for s in ("forward", "reset") for k in
              (f"checkpoint={assets['policy']}", "time_limit_steps=8", f"detector.path={assets['classifier']}")],
            *[f"+skills.{s}.detector.options.threshold={threshold}" for s in ("forward", "reset")],
            *[f"skills.{s}.detector.gate=null" for s in ("forward", "reset")], *extra]
