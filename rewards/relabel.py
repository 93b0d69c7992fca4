"""Recompute a LeRobot v3 dataset's ``next.reward`` / ``next.success`` with a reward model, into a NEW dataset.

Row t of an armflow dataset holds the observation the action was taken in and what followed it, so the
frame that shows whether the transition succeeded is frame t+1 (``frame_offset=1``); the last row has no
next frame stored and is judged on its own frame. Invalid results keep the source row's reward and success
(NaN / False where the source has none) and are marked in a ``next.reward_valid`` column. The model,
its version and the counts go to ``meta/reward_relabel.json`` so rewards can be recomputed when the
model is retrained. Videos are re-encoded (lossy); every other column is copied as is.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from armflow.data import LeRobotDataset, LeRobotWriter
from armflow.data.layout import DEFAULT_FEATURES
from armflow.rewards.protocol import RewardModel, RewardQuery

NEW_COLUMNS = {"next.reward": {"dtype": "float32", "shape": (1,), "names": None},
               "next.success": {"dtype": "bool", "shape": (1,), "names": None},
               "next.reward_valid": {"dtype": "bool", "shape": (1,), "names": None}}


def _features(ds: LeRobotDataset) -> dict[str, dict]:
    user = {k: {"dtype": f["dtype"], "shape": tuple(f["shape"]), "names": f.get("names")}
            for k, f in ds.features.items() if k not in DEFAULT_FEATURES}
    return {**user, **{k: v for k, v in NEW_COLUMNS.items() if k not in user}}


def _episode_rewards(model: RewardModel, cams: dict[str, np.ndarray], state: np.ndarray | None, task: str,
                     frame_offset: int, batch_size: int, episode: int):
    """Results for every row of one episode (row t judged on frame min(t + offset, T - 1))."""
    length = len(next(iter(cams.values())))
    frame_of = np.minimum(np.arange(length) + frame_offset, length - 1)
    queries = [RewardQuery(frames={c: f[j] for c, f in cams.items()}, instruction=task, key=(episode, t),
                           state=None if state is None else state[j].astype(np.float64))
               for t, j in enumerate(frame_of)]
    return [r for s in range(0, length, batch_size) for r in model.score(queries[s:s + batch_size])]


def relabel_dataset(src: str | Path, dst: str | Path, model: RewardModel, cameras: list[str],
                    instruction: str | None = None, threshold: float = 0.5, reward: str = "success",
                    frame_offset: int = 1, batch_size: int = 64, video_codec: str = "auto") -> dict:
    """Write ``dst``: ``src`` with ``next.reward`` / ``next.success`` from ``model``; returns the counts.

    cameras: names the model sees (``observation.images.<cam>``). instruction: the query text (None: each
    episode's task). reward: ``success`` (1.0 where value >= threshold; sparse, as RL's ``success`` mode)
    or ``value`` (the model's value). ``dst`` must not exist: the source is never edited in place.
    """
    src, dst = Path(src), Path(dst)
    if dst.exists():
        raise FileExistsError(f"dst={dst} exists; relabel writes a new dataset (the source is never edited)")
    if reward not in ("success", "value") or frame_offset not in (0, 1):
        raise ValueError(f"reward={reward!r} (success | value) and frame_offset={frame_offset} (0 | 1)")
    ds = LeRobotDataset(src)
    keys = {c: f"observation.images.{c}" for c in cameras}
    missing = [k for k in keys.values() if k not in ds.video_keys]
    if missing:
        raise KeyError(f"{src}: cameras {missing} are not video features; video features: {ds.video_keys}")
    counts = {"frames": 0, "invalid": 0, "success": 0, "changed_success": 0}
    start = time.perf_counter()
    with LeRobotWriter(dst, ds.fps, _features(ds), robot_type=ds.robot_type, video_codec=video_codec) as writer:
        for ep in range(ds.num_episodes):
            cols, task = ds.episode(ep), ds.episode_task(ep)
            videos = {k: ds.episode_frames(ep, k) for k in ds.video_keys}
            results = _episode_rewards(model, {c: videos[k] for c, k in keys.items()}, cols.get("observation.state"),
                                       instruction if instruction is not None else task, frame_offset,
                                       batch_size, ep)
            _write_episode(writer, cols, videos, results, threshold, reward, counts)
            writer.save_episode(task)
    summary = {"src": str(src), "dst": str(dst), "backend": model.backend, "model_version": model.model_version,
               "cameras": list(cameras), "threshold": threshold, "reward": reward, "frame_offset": frame_offset,
               **counts, "wall_time_s": time.perf_counter() - start}
    (dst / "meta" / "reward_relabel.json").write_text(json.dumps(summary, indent=2))
    return summary


def _write_episode(writer: LeRobotWriter, cols: dict, videos: dict, results, threshold: float, reward: str,
                   counts: dict) -> None:
    length = len(results)
    old_reward = cols.get("next.reward", np.full(length, np.nan, np.float32)).reshape(length)
    old_success = cols.get("next.success", np.zeros(length, bool)).reshape(length)
    for t, r in enumerate(results):
        success = bool(r.value >= threshold) if r.valid else bool(old_success[t])
        value = (float(success) if reward == "success" else r.value) if r.valid else float(old_reward[t])
        frame = {k: v[t] for k, v in cols.items() if k in writer.features and k not in NEW_COLUMNS}
        frame.update({k: v[t] for k, v in videos.items()})
        frame.update({"next.reward": np.float32(value), "next.success": np.bool_(success),
                      "next.reward_valid": np.bool_(r.valid)})
        writer.add_frame(frame)
        counts["frames"] += 1
        counts["invalid"] += int(not r.valid)
        counts["success"] += int(success)
        counts["changed_success"] += int(success != bool(old_success[t]))
