"""The two policy benchmarks run end to end (tiny settings) and print their BENCH_JSON keys."""
from __future__ import annotations

import json

import torch

from armflow.workflows.common import compose_config

torch.set_num_threads(1)


def last_bench_json(out: str) -> dict:
    line = [ln for ln in out.splitlines() if ln.startswith("BENCH_JSON: ")][-1]
    return json.loads(line[len("BENCH_JSON: "):])


def test_bench_inference_keys(tmp_path, capsys):
    from armflow.workflows import bench_inference

    cfg = compose_config("bench_inference", ["warmup=1", "iters=3", f"out={tmp_path}",
                                             "~variants.flow_unet", "~variants.diffusion_ddim10_unet"])
    bench_inference.main(cfg)
    res = last_bench_json(capsys.readouterr().out)
    for key in ("flow_p50_ms", "flow_p99_ms", "diffusion_ddim10_p50_ms", "diffusion_ddim10_p99_ms", "flow_params"):
        assert res[key] > 0, key
    assert (tmp_path / "results.json").is_file()


def test_bench_train_keys(tmp_path, capsys):
    from armflow.workflows import bench_train

    cfg = compose_config("bench_train", ["warmup_steps=1", "steps=2", "batch_size=8", f"out={tmp_path}"])
    bench_train.main(cfg)
    res = last_bench_json(capsys.readouterr().out)
    assert res["train_samples_per_s"] > 0 and res["params"] > 0
