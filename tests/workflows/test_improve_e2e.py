"""armflow improve end to end through a real `armflow serve` (simulated arm, persistent lift scene) with tiny
local models: the task graph over one stream, the dataset it records, the summary's contract, needs-human
events, and SIGKILL + resume (the arm holds, nothing committed is lost)."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from armflow.workflows.common import compose_config

SUMMARY_KEYS = ("success_rate", "scene_resets", "needs_human", "detector", "interventions", "wall_time_s")


def _improve(overrides):
    from armflow.workflows import improve

    return improve.main(compose_config("improve", overrides))


def _dataset(out):
    from armflow.data import LeRobotDataset

    return LeRobotDataset(out / "dataset")


def test_serl_stream_alternates_skills_with_no_scene_reset(improve_assets, improve_overrides, tmp_path):
    out = tmp_path / "run"
    summary = _improve(improve_overrides(improve_assets, out, threshold=0.0, extra=["preset=serl"]))
    assert set(SUMMARY_KEYS) <= set(summary)
    assert set(summary["success_rate"]) >= {"start", "final"} and set(summary["detector"]) >= {"fp_rate", "fn_rate"}
    assert summary["scene_resets"] == 0 and summary["needs_human"] == 0
    # every attempt is detected a success -> serl switches skill after every attempt, one stream
    attempts = summary["attempts"]
    assert attempts["forward"] >= 2 and abs(attempts["forward"] - attempts["reset"]) <= 1
    ds = _dataset(out)
    assert ds.num_episodes == attempts["forward"] + attempts["reset"]
    skill = ds.column("improve.skill").reshape(-1)
    done, value = ds.column("next.done").reshape(-1), ds.column("improve.detector_value").reshape(-1)
    ends = np.flatnonzero(done)
    assert len(ends) == ds.num_episodes  # one done per virtual episode, on its last frame
    assert list(skill[ends][:4]) == [0, 1, 0, 1]  # forward, reset, forward, ...
    assert np.all(value[ends] == 1.0) and np.all(ds.column("next.success").reshape(-1)[ends])
    assert not ds.column("improve.intervention").any()
    assert [ds.episode_task(i) for i in range(2)] == ["forward", "reset"]
    meta = json.loads((out / "dataset" / "meta" / "improve.json").read_text())
    assert meta["skills"] == ["forward", "reset"] and meta["reward_model_versions"]
    info = json.loads((out / "dataset" / "meta" / "info.json").read_text())
    for key in ("improve.skill", "improve.policy_version", "improve.reward_model_version", "improve.intervention",
                "improve.detector_value", "improve.privileged_success", "next.truncated", "observation.images.agentview"):
        assert key in info["features"], key
    # the forward learner learned and broadcast (WSRL warm start of 8 steps, then updates)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert max(r.get("learner/forward_version", 0) for r in rows) >= 1
    assert (out / "policy" / "dsrl_noise_actor.safetensors").exists() and (out / "report.md").exists()
    assert len(summary["videos"]) == 2 and all(os.path.getsize(v) > 1000 for v in summary["videos"])
    assert "## The improved forward skill" in (out / "report.md").read_text()


def test_never_detected_raises_needs_human_and_counts_the_resets(improve_assets, improve_overrides, tmp_path):
    out = tmp_path / "run"
    summary = _improve(improve_overrides(improve_assets, out, threshold=1.0, extra=["max_failures=2", "preset=serl"]))
    assert summary["attempts"] == {"forward": summary["attempts"]["forward"]}  # never left the forward skill
    assert summary["needs_human"] == summary["attempts"]["forward"] // 2 >= 1
    assert summary["scene_resets"] == summary["needs_human"]  # human_reset=auto: one scene reset per event
    assert all("2 failed attempts in a row" in r for r in summary["needs_human_reasons"])


def _wait(pred, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _complete_states(out):
    path = out / "state" / "COMPLETE.json"
    return json.loads(path.read_text())["step"] if path.exists() else -1


@pytest.mark.slow
def test_sigkill_holds_the_arm_and_resume_continues(improve_assets, improve_overrides, tmp_path):
    from armflow.control.client import BridgeClient
    from armflow.workflows.quickstart import start_server, stop_server

    endpoint = f"ipc:///tmp/armflow-test-improve-{os.getpid()}"
    server = start_server("lift", endpoint, tmp_path / "serve", env={"cameras": ["agentview"], "image_size": 32},
                          persistent=True)
    out = tmp_path / "run"
    args = [sys.executable, "-m", "armflow.workflows.cli", "improve", f"endpoint={endpoint}",
            *improve_overrides(improve_assets, out, threshold=0.0, extra=["budget_minutes=5"])]
    try:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        _wait(lambda: _complete_states(out) > 60, 240, "a committed state after some attempts")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_at = time.monotonic()
        saved = json.loads((out / "state" / "training_state.json").read_text())["extra"]
        observer = BridgeClient(endpoint, role="observer")
        observer.connect()
        try:  # the bridge's watchdog (lockstep T_cmd 5 s) holds the arm the improve process left moving
            _wait(lambda: observer.latest_state() is not None and observer.status.get("status") == "HOLD", 15,
                  "HOLD after the kill")
            assert time.monotonic() - killed_at < 5.0 + 3.0
            resets_after_kill = int(observer.latest_state().extras["scene_resets"])
        finally:
            observer.close()
        time.sleep(5.5)  # the dead controller's lease expires
        summary = _improve(improve_overrides(improve_assets, out, threshold=0.0, extra=[
            "budget_minutes=0.25", "resume=true", f"endpoint={endpoint}"]))
    finally:
        stop_server(server)
    before = saved["counters"]
    assert summary["robot_steps"] > before["robot_steps"]
    assert summary["wall_time_s"] > before["wall_s"]
    total = sum(summary["attempts"].values())
    assert total > sum(before["attempts"].values())
    # every committed attempt is in the dataset (the one in flight at the kill may be there too: at most one more)
    assert total <= _dataset(out).num_episodes <= total + 1
    assert summary["scene_resets"] == 0  # the resumed run found the scene as it was: no reset
    assert resets_after_kill == saved["counters"]["scene_resets_seen"]
    assert saved["learners"]["forward"]["version"] <= max(
        json.loads(line).get("learner/forward_version", 0) for line in (out / "metrics.jsonl").read_text().splitlines())


def test_a_detection_counts_only_after_the_skills_requires_held(improve_assets, improve_overrides, tmp_path):
    """The reset skill's `requires` (fingers on something at some chunk end) never holds here: its detector fires at
    every chunk end (threshold 0) yet no reset attempt succeeds, while the forward skill (no requires) does."""
    out = tmp_path / "run"
    summary = _improve(improve_overrides(improve_assets, out, threshold=0.0, extra=[
        "preset=serl", "max_failures=1000", "skills.reset.requires=[{index:7,op:'>',threshold:10.0}]"]))
    assert summary["attempts"]["forward"] == 1 and summary["detected_successes"]["forward"] == 1
    assert summary["attempts"]["reset"] >= 2 and summary["detected_successes"]["reset"] == 0
