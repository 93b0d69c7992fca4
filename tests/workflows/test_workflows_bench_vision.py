"""armflow bench vision with tiny settings: demos with cameras, a vision and a state policy, BENCH_JSON."""
import json

import pytest

from armflow.workflows.cli import main as cli_main


def test_bench_vision_tiny_trains_and_evaluates_both_policies(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    monkeypatch.setenv("PYOPENGL_PLATFORM", "osmesa")
    out = tmp_path / "bv"
    rc = cli_main(["bench", "vision", "demos=2", "train_steps=3", "batch_size=8", "episodes=2", "n_envs=2",
                   "warmup=1", "iters=3", "cameras=[agentview,wrist]", "progress=false", f"out={out}"])
    assert rc in (0, None)
    line = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("BENCH_JSON: ")][-1]
    res = json.loads(line.removeprefix("BENCH_JSON: "))
    for prefix in ("", "state_"):
        assert 0.0 <= res[f"{prefix}success_rate"] <= 1.0 and res[f"{prefix}episodes_evaluated"] == 2
        for key in ("train_wall_s", "train_samples_per_s", "inference_p50_ms"):
            assert res[f"{prefix}{key}"] > 0, prefix + key
    # the vision policy reads proprioception and both cameras, never the simulator's object state
    assert res["obs_keys"] == ["observation.state", "observation.images.agentview", "observation.images.wrist"]
    assert "observation.environment_state" in res["state_obs_keys"]
    vision_spec = json.loads((out / "vision" / "checkpoint" / "config.json").read_text())["obs_spec"]
    assert sorted(vision_spec) == sorted(res["obs_keys"]) and vision_spec["observation.images.wrist"] == [84, 84, 3]
    assert json.loads((out / "summary.json").read_text())["success_rate"] == res["success_rate"]


def test_variant_obs_keys_leave_object_state_to_the_state_policy():
    from armflow.workflows.bench_vision import variant_obs_keys

    keys = variant_obs_keys({"observation.state": {}, "observation.environment_state": {}}, ["agentview"])
    assert keys == {"vision": ["observation.state", "observation.images.agentview"],
                    "state": ["observation.state", "observation.environment_state"]}
    assert variant_obs_keys({"observation.state": {}}, ["wrist"])["state"] == ["observation.state"]
