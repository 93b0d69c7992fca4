"""``armflow evaluate record=DIR``: the evaluated rollouts as a LeRobot v3 dataset (obs, action, reward, done,
success per env step), so a critic (``armflow critic``) trains on demos plus the policy's own episodes.

An ``on_step`` callback of the one rollout core (``workflows.rollout.run_episodes``): from each chunk step of a
``ChunkVecEnv`` built with ``keep_steps = T_a`` it rebuilds the per-step rows (the obs each action was taken in is
the window's newest obs, then the obs after the previous step) and saves an env's episode when it ends. Columns as
``armflow collect`` writes them (``workflows.collect.make_frame``): the policy's observation keys, ``action``,
``next.reward``, ``next.done``, ``next.truncated``, ``next.success`` (on the episode's last step).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from armflow.workflows.collect import make_frame


def record_features(env) -> dict[str, dict]:
    """LeRobot features of a ``ChunkVecEnv``'s windowed obs keys + action + the RL columns."""
    space = env.venv.single_observation_space.spaces
    features = {}
    for key in env.obs_keys:
        dtype = "video" if key.startswith("observation.images.") else "float32"
        features[key] = {"dtype": dtype, "shape": tuple(space[key].shape),
                         "names": ["height", "width", "channels"] if dtype == "video" else None}
    features["action"] = {"dtype": "float32", "shape": (env.action_dim,), "names": None}
    for name, dtype in (("next.reward", "float32"), ("next.done", "bool"), ("next.truncated", "bool"),
                        ("next.success", "bool")):
        features[name] = {"dtype": dtype, "shape": (1,), "names": None}
    return features


class EpisodeRecorder:
    """Per-env frame buffers written as episodes of a LeRobot v3 dataset at ``root`` (appends to an existing one
    with the same features)."""

    def __init__(self, root: str | Path, env, task: str):
        from armflow.data import LeRobotWriter

        if env.keep_steps <= env.n_obs_steps:
            raise ValueError("EpisodeRecorder: build the ChunkVecEnv with keep_steps > n_obs_steps (= T_a)")
        fps = int(round(1.0 / float(env.venv.get_attr("ctrl_dt")[0])))
        self.env, self.task, self.episodes = env, task, 0
        self.writer = LeRobotWriter(root, fps=fps, features=record_features(env), robot_type="panda")
        self.frames: list[list[dict]] = [[] for _ in range(env.n_envs)]

    def __call__(self, obs: dict, chunks: np.ndarray, step, active: np.ndarray) -> None:
        keep = next(iter(step.step_obs.values())).shape[1]
        for i in np.flatnonzero(active):
            n = int(step.n_steps[i])
            for t in range(n):
                o = {k: obs[k][i, -1] if t == 0 else step.step_obs[k][i, keep - n + t - 1] for k in self.env.obs_keys}
                last = t == n - 1
                self.frames[i].append(make_frame(o, chunks[i, t], float(step.step_reward[i, t]),
                                                 last and bool(step.terminated[i]), last and bool(step.truncated[i]),
                                                 last and bool(step.success[i])))
            if step.terminated[i] or step.truncated[i]:
                for frame in self.frames[i]:
                    self.writer.add_frame(frame)
                self.writer.save_episode(task=self.task)
                self.frames[i], self.episodes = [], self.episodes + 1

    def close(self) -> None:
        self.writer.finalize()
