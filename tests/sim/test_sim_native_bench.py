"""``armflow bench sim`` runs end to end at a tiny size and reports the contract keys."""
from __future__ import annotations

import json

import pytest

from armflow.workflows.common import compose_config


def test_physics_share_replays_the_env_physics_exactly():
    """The raw mj_step replay does the env's physics bit for bit, so the share compares like with like."""
    from armflow.workflows.bench_sim import time_physics_share

    result = time_physics_share("lift", 150, 5, 0)  # crosses one episode end (100 steps)
    assert result["physics_replay_exact"] is True
    assert 0.05 < result["physics_share_lift"] < 1.5
    assert result["raw_mj_step_per_s"] > 0 and result["env_physics_steps_per_s_lift"] > 0


@pytest.mark.slow
def test_bench_sim_prints_bench_json(tmp_path, capsys):
    from armflow.workflows import bench_sim

    cfg = compose_config("bench_sim", [f"out={tmp_path}", "steps=50", "robosuite_steps=5", "camera_steps=10",
                                       "share_steps=50", "vec_steps=20", "warmup=2"])
    results = bench_sim.main(cfg)
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("BENCH_JSON: ")
    printed = json.loads(last.removeprefix("BENCH_JSON: "))
    for key in ("lift_steps_per_s", "robosuite_lift_steps_per_s", "lift_speedup_vs_robosuite",
                "lift_vec2_steps_per_s", "physics_share_lift", "raw_mj_step_per_s", "env_physics_steps_per_s_lift",
                "vec_chunk_steps_per_s_8", "vec_chunk_steps_per_s_32"):
        assert printed[key] > 0 and printed[key] == pytest.approx(results[key])
    for key in ("ipc_overhead_us_per_step", "ipc_overhead_us_per_step_chunk"):  # a difference: any sign
        assert printed[key] == pytest.approx(results[key])
    assert printed["physics_replay_exact"] is True
    assert (tmp_path / "bench_sim.json").exists()
