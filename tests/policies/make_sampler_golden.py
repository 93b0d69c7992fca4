"""Write ``sampler_golden.npz``: sampler outputs for fixed weights, obs and noise (the golden fixture).

Generated once from the pre-refactor samplers (issue 11: one sampler loop with hook points must give the
same chunks bit for bit); ``test_policies_sampler_hooks.py`` asserts the current code still does.
Regenerate only for a deliberate numerical change (``--base``), or to add a CPU's own fixture:
``.venv/bin/python tests/policies/make_sampler_golden.py``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

FIXTURE = Path(__file__).with_name("sampler_golden.npz")  # made from the pre-refactor samplers (an AVX2 CPU)


def cpu_fixture() -> Path:
    """This CPU's fixture: float kernels differ by ISA (AVX2 vs AVX512 round differently, ~1e-7), so bit-for-bit
    holds per capability. ``sampler_golden_<capability>.npz`` files were made on that ISA by code whose outputs
    equalled ``sampler_golden.npz`` bit for bit on the fixture's own ISA."""
    return FIXTURE.with_name(f"sampler_golden_{torch.backends.cpu.get_cpu_capability()}.npz")
D_S, D_A, T_O, T_P, B = 4, 2, 2, 8, 3
STATS = {"observation.state": {"min": -np.ones(D_S), "max": np.ones(D_S)},
         "action": {"min": -2 * np.ones(D_A), "max": 2 * np.ones(D_A)}}
# case -> (policy type, config overrides); small nets, both backbones, both prediction types.
CASES = {"flow_mlp": ("flow", {}), "flow_unet": ("flow", {"backbone": "unet"}),
         "diffusion_mlp": ("diffusion", {}), "diffusion_unet": ("diffusion", {"backbone": "unet"}),
         "diffusion_v_mlp": ("diffusion", {"prediction_type": "v_prediction"})}
# denoise_chain settings: (n_ft_steps, eta, deterministic), each run after torch.manual_seed(100 + i).
CHAINS = [(10, 1.0, False), (4, 1.0, False), (3, 0.5, False), (6, 0.0, True)]


def make_case(name: str):
    """The case's policy (seeded init) plus its fixed obs window and initial noise."""
    from armflow.policies import make_policy

    kind, over = CASES[name]
    torch.manual_seed(0)
    cfg = dict(n_obs_steps=T_O, horizon=T_P, n_action_steps=4, mlp_width=32, mlp_blocks=2, time_dim=16,
               state_hidden_dim=16, state_feature_dim=8, unet_dims=(8, 16), num_inference_steps=10, **over)
    policy = make_policy(kind, {"observation.state": (D_S,)}, D_A, STATS, **cfg).eval()
    gen = torch.Generator().manual_seed(1)
    obs = {"observation.state": torch.randn(B, T_O, D_S, generator=gen)}
    noise = torch.randn(B, T_P, D_A, generator=gen)
    return policy, obs, noise


def outputs(name: str) -> dict[str, np.ndarray]:
    """Everything the golden test compares, keyed ``<case>/<what>``."""
    policy, obs, noise = make_case(name)
    out = {"chunk": policy.predict_chunk(obs, noise)}
    with torch.no_grad():
        cond = policy.encode_obs(obs)
        out["sample"] = policy.sample(cond, noise)
    if policy.policy_type == "diffusion":
        for i, (n_ft, eta, det) in enumerate(CHAINS):
            torch.manual_seed(100 + i)
            chain, logp = policy.denoise_chain(cond, n_ft, 0.1, eta=eta, deterministic=det)
            out[f"chain{i}"], out[f"chain{i}_logp"] = chain, logp
            out[f"chain{i}_relogp"] = policy.chain_logprob(cond, chain, 0.1, eta=eta).detach()
    return {f"{name}/{k}": v.numpy() for k, v in out.items()}


def main() -> None:
    """Write this CPU's fixture (``--base`` rewrites the base one, for a deliberate numerical change)."""
    import sys

    torch.set_num_threads(1)
    arrays = {k: v for name in CASES for k, v in outputs(name).items()}
    arrays["torch_version"] = np.array(torch.__version__)
    path = FIXTURE if "--base" in sys.argv else cpu_fixture()
    np.savez_compressed(path, **arrays)
    print(f"wrote {path} ({len(arrays)} arrays)")


if __name__ == "__main__":
    main()
