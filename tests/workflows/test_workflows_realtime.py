"""Chunk executors in the rollout core: simulated inference delay in evaluate, its CLI keys, bench realtime."""
import json

import numpy as np
import pytest
import torch

from armflow.policies import make_policy
from armflow.workflows.evaluate import evaluate_policy
from armflow.workflows.realtime_exec import Execution

KEY = "observation.state"


def _toy_policy(kind: str = "flow"):
    torch.manual_seed(0)
    unit = lambda d, s: {"min": -s * np.ones(d), "max": s * np.ones(d), "mean": np.zeros(d),  # noqa: E731
                         "std": s * np.ones(d)}
    stats = {KEY: unit(2, 1.0), "action": unit(2, 1.0)}
    stats["action"]["min"], stats["action"]["max"] = np.array([0.1, -0.3]), np.array([0.5, 0.3])
    extra = {} if kind == "gaussian" else {"num_inference_steps": 4, "time_dim": 8, "mlp_width": 32, "mlp_blocks": 1}
    return make_policy(kind, {KEY: (2,)}, 2, stats, horizon=6, n_action_steps=3, state_hidden_dim=16,
                       state_feature_dim=8, **extra).eval()


def _eval(policy, execution, episodes=6):
    return evaluate_policy(policy, "toy2d", episodes, 100, 3, 0, progress=False, execution=execution)


def _episodes(res):
    return [(r["seed"], r["success"], r["length"], round(r["return"], 6)) for r in res["per_episode"]]


def test_sync_executor_equals_plain_evaluation():
    policy = _toy_policy()
    plain, sync = _eval(policy, None), _eval(policy, Execution("sync"))
    assert _episodes(plain) == _episodes(sync)
    assert sync["realtime"]["nfe_per_chunk"] == 4 and sync["realtime"]["discontinuity_switch"] >= 0


@pytest.mark.parametrize("executor", ["naive", "ensemble", "rtc"])
def test_delayed_execution_is_deterministic_and_changes_the_episodes(executor):
    policy = _toy_policy()
    ex = Execution(executor, delay_ms=50.0, jitter_ms=40.0)
    a, b = _eval(policy, ex), _eval(policy, ex)
    assert _episodes(a) == _episodes(b)
    assert a["realtime"] == b["realtime"]
    assert _episodes(a) != _episodes(_eval(policy, Execution("sync")))
    assert {"switch_max", "within_max", "gap_max", "time_to_success_s"} <= set(a["per_episode"][0])


def test_rtc_switches_closer_to_the_running_plan_than_naive():
    policy = _toy_policy()
    gap = {(e, o): _eval(policy, Execution(e, delay_ms=50.0, rtc_overlap=o), episodes=9)["realtime"]["switch_gap"]
           for e, o in [("naive", 0.5), ("rtc", 0.5), ("rtc", 1.0)]}
    assert gap["rtc", 1.0] < gap["rtc", 0.5] < gap["naive", 0.5], gap


def test_rtidp_reports_fewer_denoiser_evaluations():
    res = _eval(_toy_policy(), Execution("naive", delay_ms=50.0, rtidp=True, rtidp_start_level=2))
    assert 2 < res["realtime"]["nfe_per_chunk"] < 4  # the first chunk of each episode is a full sample


def test_bad_execution_settings_name_the_key():
    with pytest.raises(ValueError, match="executor=rtc needs a flow or diffusion"):
        _eval(_toy_policy("gaussian"), Execution("rtc", delay_ms=50.0))
    with pytest.raises(ValueError, match="delay_ms=200"):
        _eval(_toy_policy(), Execution("naive", delay_ms=200.0))  # 4 steps > s = 3
    with pytest.raises(ValueError, match="executor='fast'"):
        Execution("fast")


def test_evaluate_cli_writes_realtime_metrics_and_the_action_plot(tmp_path):
    from armflow.workflows import evaluate
    from armflow.workflows.common import compose_config

    _toy_policy().save_pretrained(tmp_path / "ckpt")
    cfg = compose_config("evaluate", [f"checkpoint={tmp_path / 'ckpt'}", "task=toy2d", "episodes=3", "n_envs=3",
                                      "video_episodes=0", "executor=rtc", "delay_ms=50", f"out={tmp_path / 'ev'}"])
    (tmp_path / "ev").mkdir()
    res = evaluate.main(cfg)
    saved = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert saved["realtime"]["executor"] == "rtc" and saved["realtime"]["delay_ms"] == 50
    assert (tmp_path / "ev" / "actions_first_episode.png").stat().st_size > 0
    assert res["success_rate"] == saved["success_rate"]


def test_bench_realtime_at_toy_scale_emits_its_keys(tmp_path, capsys):
    from armflow.workflows import bench_realtime
    from armflow.workflows.common import compose_config

    _toy_policy().save_pretrained(tmp_path / "ckpt")
    cfg = compose_config("bench_realtime", [f"checkpoint={tmp_path / 'ckpt'}", "task=toy2d", "episodes=3",
                                            "n_envs=3", "delays_ms=[0,50,100]", "warmup=1", "iters=3",
                                            "exec_horizon=3", "rtidp_start_level=2", f"out={tmp_path / 'bench'}",
                                            "progress=false"])
    bench = bench_realtime.main(cfg)
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("BENCH_JSON: ") and json.loads(line.removeprefix("BENCH_JSON: ")) == bench
    for key in ["lockstep_success", "rtc_discontinuity_ratio_100ms", "rtidp_nfe_ratio", "rtidp_success_delta",
                "rtc_latency_ratio"] + [f"{e}_success_at_{d}ms" for e in ("naive", "ensemble", "rtc")
                                        for d in (0, 50, 100)]:
        assert key in bench, key
    assert bench["rtidp_nfe_ratio"] > 1.0 and bench["rtc_latency_ratio"] > 0


@pytest.mark.slow
def test_bench_realtime_bridge_row_deploys_through_a_served_arm(tmp_path, capsys, tiny_lift_ckpt):
    from armflow.workflows import bench_realtime
    from armflow.workflows.common import compose_config

    cfg = compose_config("bench_realtime", [f"checkpoint={tiny_lift_ckpt}", "task=lift", "episodes=2", "n_envs=2",
                                            "delays_ms=[50]", "warmup=1", "iters=2", "rtidp_start_level=1",
                                            "bridge_episodes=1", "bridge_delays_ms=[50]", f"out={tmp_path / 'b'}",
                                            "progress=false"])
    bench = bench_realtime.main(cfg)
    for name in ("naive", "rtc"):
        assert bench[f"bridge_{name}_success_at_50ms"] in (0.0, 1.0)
        summary = json.loads((tmp_path / "b" / f"deploy_{name}_50ms" / "seeds_0" / "summary.json").read_text())
        assert summary["episodes"] == 1 and summary["per_episode"][0]["length"] > 0  # the served arm stepped
    assert "bridge up" in (tmp_path / "b" / "serve" / "serve.log").read_text()
