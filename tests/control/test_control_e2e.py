"""End to end through the real bridge with the MuJoCo sim driver (``armflow.hardware`` sim_panda task=lift)
in lockstep: a rollout through the bridge is step-for-step identical to the same rollout in-process, and
the scripted expert's plan completes the lift task through the bridge; ``deploy`` with a policy matches a
direct in-sim rollout under the same seed and sampler noise."""
import numpy as np
import pytest
import torch

from armflow.control.client import BridgeClient
from armflow.control.launch import ServerProcess
from armflow.control.server import ServerConfig

pytestmark = pytest.mark.timeout(300)
SEED = 11


@pytest.fixture(scope="module")
def lift_bridge(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    cfg = ServerConfig(robot="sim_panda", robot_options={"task": "lift"}, endpoint=f"ipc://{tmp}/lift", lockstep=True)
    with ServerProcess(cfg) as sp:
        yield sp


def _direct_expert_rollout(seed):
    from armflow.sim import make_env
    from armflow.sim.experts import make_expert

    env = make_env("lift")
    obs, _ = env.reset(seed=seed)
    expert = make_expert(env)
    expert.reset()
    observations, actions = [obs["observation.state"]], []
    for _ in range(env.max_episode_steps):
        a = expert(obs)
        obs, _, terminated, truncated, info = env.step(a)
        actions.append(a)
        observations.append(obs["observation.state"])
        if terminated or truncated:
            break
    env.close()
    return np.array(actions), np.array(observations), bool(info["success"])


def test_lockstep_bridge_rollout_equals_direct_and_completes_lift(lift_bridge):
    actions, direct_obs, success = _direct_expert_rollout(SEED)
    assert success
    with BridgeClient(lift_bridge.endpoint) as c:
        assert c.lockstep and c.info().is_sim and "ee_delta" in c.info().modes
        state = c.reset(SEED)
        np.testing.assert_array_equal(state.extras["observation.state"], direct_obs[0])
        c.arm("ee_delta")
        dt_ns = int(round(1e9 / c.welcome["servo_rate_hz"]))
        bridge_obs, step = [], 0
        for start in range(0, len(actions), 8):  # the plan in chunks of 8, stamped with the obs sim time
            chunk = actions[start:start + 8].astype(np.float64)
            c.send_chunk(chunk[:, :6], state.t_capture_ns, dt_ns, "ee_delta", gripper=(chunk[:, 6] + 1) / 2)
            for _ in range(len(chunk)):
                step += 1
                state = c.wait_state(lambda b, s=step: b["step"] >= s, timeout_s=30)
                bridge_obs.append(state.extras["observation.state"])
        np.testing.assert_array_equal(np.array(bridge_obs), direct_obs[1:])  # bit-identical physics
        assert state.extras["success"] is True and c.status["step"] == len(actions)
        assert sum(c.status["clamps"].values()) == 0  # in-range actions pass the safety layer untouched
        c.disarm()


def _tiny_policy(obs_spec=(("observation.state", 8), ("observation.environment_state", 10))):
    """An untrained flow policy reading lift's proprioception (8) and cube state (10), as `armflow train`'s
    default obs_keys build it; ``obs_spec=(("observation.state", 18),)`` is a checkpoint of the combined layout
    before the state split."""
    from armflow.policies import make_policy

    torch.manual_seed(0)
    d_a = 7
    unit = lambda d: {"min": -np.ones(d), "max": np.ones(d), "mean": np.zeros(d), "std": np.ones(d)}  # noqa: E731
    # actions within +-0.1: inside the sim Panda's speed limits, so the safety layer leaves them bit-identical
    # (an untrained policy's full-range rotations ask for ~7 rad/s, which the layer clamps to 1.5)
    stats = {key: unit(d) for key, d in obs_spec}
    stats["action"] = {k: 0.1 * v for k, v in unit(d_a).items()}
    return make_policy("flow", {key: (d,) for key, d in obs_spec}, d_a, stats, horizon=8, n_action_steps=4,
                       mlp_width=64, mlp_blocks=1, state_hidden_dim=32, state_feature_dim=16, time_dim=16,
                       num_inference_steps=2).eval()


def test_deploy_lockstep_matches_direct_rollout(lift_bridge):
    from armflow.sim import make_env
    from armflow.workflows.deploy import deploy
    from armflow.workflows.rollout import PolicyRunner

    torch.set_num_threads(1)
    policy = _tiny_policy()
    max_steps = 24
    env = make_env("lift")
    runner = PolicyRunner(policy, 1)
    obs, _ = env.reset(seed=SEED)
    runner.start({k: v[None] for k, v in obs.items()}, seeds=[SEED])
    direct_ret = 0.0
    for step in range(max_steps):
        obs, r, term, trunc, info = env.step(runner.act()[0])
        runner.observe({k: v[None] for k, v in obs.items()})
        direct_ret += r
        if term or trunc:
            break
    env.close()
    with BridgeClient(lift_bridge.endpoint) as c:
        summary, _ = deploy(c, policy, episodes=1, seed=SEED, max_steps=max_steps)
        final = c.latest_state().extras["observation.state"]
    ep = summary["per_episode"][0]
    assert ep["length"] == step + 1 and ep["success"] == bool(info["success"])
    assert ep["return"] == pytest.approx(direct_ret, abs=1e-9)
    np.testing.assert_array_equal(final, obs["observation.state"])
    assert summary["rtt_p50_us"] > 0 and summary["timing"] == "lockstep"


def test_deploy_explains_an_old_combined_layout_checkpoint(lift_bridge):
    from armflow.workflows.deploy import deploy

    with BridgeClient(lift_bridge.endpoint) as c:
        with pytest.raises(SystemExit) as exc:
            deploy(c, _tiny_policy((("observation.state", 18),)), episodes=1, seed=SEED, max_steps=4)
    message = str(exc.value)
    assert "observation.state has 18 dims, the combined layout" in message
    assert "observation.environment_state (10,)" in message and "+robot_options.env.state_layout=combined" in message


def test_deploy_cli_writes_summary(lift_bridge, tmp_path):
    from armflow.workflows import deploy as deploy_wf
    from armflow.workflows.common import compose_config, prepare_run_dir

    _tiny_policy().save_pretrained(tmp_path / "ckpt")
    cfg = compose_config("deploy", [f"checkpoint={tmp_path / 'ckpt'}", f"endpoint={lift_bridge.endpoint}",
                                    "episodes=2", "max_steps=8", f"out={tmp_path / 'run'}"])
    prepare_run_dir(cfg, "deploy")
    summary = deploy_wf.main(cfg)
    import json
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["episodes"] == 2 and 0.0 <= saved["success_rate"] <= 1.0
    assert saved["rtt_p50_us"] > 0 and saved["rtt_p99_us"] >= saved["rtt_p50_us"]
    assert [e["seed"] for e in saved["per_episode"]] == [100000, 100001] and summary["timing"] == "lockstep"


@pytest.mark.timeout(300)
def test_deploy_realtime_async_with_camera_video(tmp_path):
    """Real-time server: inference overlaps motion, and camera frames published by the server become an MP4."""
    from armflow.workflows.deploy import deploy

    torch.set_num_threads(1)
    cfg = ServerConfig(robot="sim_panda", robot_options={"task": "lift", "cameras": ["agentview"],
                                                         "env": {"image_size": 64}},
                       endpoint=f"ipc://{tmp_path}/rt")
    policy = _tiny_policy()
    with ServerProcess(cfg) as sp:
        with BridgeClient(sp.endpoint) as c:
            assert not c.lockstep
            summary, videos = deploy(c, policy, episodes=1, seed=SEED, max_steps=20, video_episodes=1)
    ep = summary["per_episode"][0]
    assert ep["length"] >= 20 and summary["timing"] == "realtime"
    frames = videos[0][1]
    assert len(frames) >= 20 and frames[0].shape == (64, 64, 3) and frames[0].dtype == np.uint8


@pytest.mark.parametrize("robot", ["sim_panda", "sim_ur5e", "sim_xarm7"])
def test_sim_arms_track_joint_chunks_in_realtime(robot, tmp_path):
    """Each MuJoCo arm behind the bridge at its 500 Hz servo rate follows a joint-space chunk."""
    import time

    with ServerProcess(ServerConfig(robot=robot, endpoint=f"ipc://{tmp_path}/{robot}")) as sp:
        with BridgeClient(sp.endpoint) as c:
            q0 = c.read_state().joint_pos_rad.copy()
            c.arm("joint_pos")
            c.send_chunk(q0 + np.linspace(0, 0.05, 10)[:, None], c.server_now_ns() + 20_000_000, 50_000_000,
                         "joint_pos")
            for _ in range(15):
                time.sleep(0.05)
                c.heartbeat()
            q = c.read_state().joint_pos_rad
            assert c.status["status"] == "RUNNING" and c.status["exec"][:2] == [0, 9]
            np.testing.assert_allclose(q - q0, 0.05, atol=5e-3)


@pytest.mark.timeout(300)
def test_realtime_inference_slower_than_the_watchdog_never_trips_it(tmp_path):
    """A model slower than the watchdog timeout (a remote GPU box): inference runs beside the control loop, which
    keeps heartbeating, so the arm is never put on HOLD and the episode runs to its end."""
    from armflow.workflows.deploy import RealtimeOptions, deploy

    torch.set_num_threads(1)
    cfg = ServerConfig(robot="sim_panda", robot_options={"task": "lift"}, endpoint=f"ipc://{tmp_path}/rt")
    with ServerProcess(cfg) as sp:
        with BridgeClient(sp.endpoint, t_cmd_ms=60) as c:
            summary, _ = deploy(c, _tiny_policy(), episodes=1, seed=SEED, max_steps=30,
                                opts=RealtimeOptions(inject_delay_ms=150))
            assert c.status["status"] != "HOLD"
    ep = summary["per_episode"][0]
    assert ep["length"] >= 30 and ep["inference_ms_p50"] >= 150
    assert "stale_chunks" in ep  # chunks that arrived too late to run are counted and asked for again, not fatal
