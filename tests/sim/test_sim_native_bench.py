"""``armflow bench sim`` runs end to end at a tiny size and reports the contract keys."""
from __future__ import annotations

import json

import pytest

from armflow.workflows.common import compose_config


@pytest.mark.slow
def test_bench_sim_prints_bench_json(tmp_path, capsys):
    from armflow.workflows import bench_sim

    cfg = compose_config("bench_sim", [f"out={tmp_path}", "steps=50", "robosuite_steps=5", "camera_steps=10",
                                       "vec_steps=20", "warmup=2"])
    results = bench_sim.main(cfg)
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("BENCH_JSON: ")
    printed = json.loads(last.removeprefix("BENCH_JSON: "))
    for key in ("lift_steps_per_s", "robosuite_lift_steps_per_s", "lift_speedup_vs_robosuite",
                "lift_vec2_steps_per_s"):
        assert printed[key] > 0 and printed[key] == pytest.approx(results[key])
    assert (tmp_path / "bench_sim.json").exists()
