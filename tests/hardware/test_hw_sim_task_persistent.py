"""The persistent (reset-free) stream through a real lockstep bridge: chunks keep executing after lift succeeds."""
from __future__ import annotations

import numpy as np
import pytest

from armflow.control.client import BridgeClient, BridgeError
from armflow.control.launch import ServerProcess
from armflow.control.server import ServerConfig

SEED = 11


def _expert_actions(n_steps: int) -> np.ndarray:
    """The lift expert's first ``n_steps`` actions (n, 7) from ``SEED``, run past its success."""
    from armflow.sim import make_env, make_expert

    env = make_env("lift", max_episode_steps=None)
    obs, _ = env.reset(seed=SEED)
    expert = make_expert(env)
    expert.reset()
    actions = []
    for _ in range(n_steps):
        actions.append(expert(obs))
        obs, *_ = env.step(actions[-1])
    return np.array(actions, np.float64)


@pytest.mark.parametrize("persistent", [True, False])
def test_lockstep_persistent_stream_runs_whole_chunks_after_success(tmp_path, persistent):
    actions = _expert_actions(48)
    options = {"task": "lift", "persistent": True} if persistent else {"task": "lift"}
    cfg = ServerConfig(robot="sim_panda", robot_options=options, endpoint=f"ipc://{tmp_path}/b", lockstep=True)
    with ServerProcess(cfg) as sp, BridgeClient(sp.endpoint) as c:
        state = c.reset(SEED)
        assert state.extras["scene_resets"] == 2  # connect's reset and this one
        c.arm("ee_delta")
        dt_ns = int(round(1e9 / c.welcome["servo_rate_hz"]))
        for start in range(0, len(actions), 8):
            chunk = actions[start:start + 8]
            c.send_chunk(chunk[:, :6], state.t_capture_ns, dt_ns, "ee_delta", gripper=(chunk[:, 6] + 1) / 2)
            try:
                state = c.wait_state(lambda b, s=start + len(chunk): b["step"] >= s, timeout_s=3)
            except BridgeError:  # an ended episode drops the rest of the chunk: checked below
                break
        state = c.latest_state()
        c.disarm()
    assert state.extras["success.lift"]
    if persistent:
        assert state.extras["episode_step"] == len(actions) and not state.extras["success"]
    else:  # without it the server ends the episode at the first success: the chunk stops there
        assert state.extras["success"] and state.extras["episode_step"] < len(actions)
