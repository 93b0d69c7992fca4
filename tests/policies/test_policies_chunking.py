"""ActionChunker / ObsHistory semantics (pure numpy), single and batched."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from armflow.policies import ActionChunker, BatchedActionChunker, BatchedObsHistory, ObsHistory


def chunk(start: float, t_p: int = 6, d_a: int = 2) -> np.ndarray:
    """Chunk whose row i is (start + i) everywhere: easy to read back which step was executed."""
    return np.repeat((start + np.arange(t_p, dtype=np.float32))[:, None], d_a, axis=1)


def test_receding_horizon_executes_first_n_action_steps():
    ch = ActionChunker(n_action_steps=3)
    assert ch.needs_chunk()
    with pytest.raises(RuntimeError, match="push"):
        ch.pop()
    ch.push(chunk(0))
    out = [ch.pop()[0] for _ in range(3)]
    assert out == [0, 1, 2] and ch.needs_chunk()
    ch.push(torch.as_tensor(chunk(100)))  # tensors accepted
    assert ch.pop().shape == (2,) and not ch.needs_chunk()
    ch.reset()
    assert ch.needs_chunk()


def test_chunk_shorter_than_n_action_steps_asks_early():
    ch = ActionChunker(n_action_steps=10)
    ch.push(chunk(0, t_p=4))
    for _ in range(4):
        ch.pop()
    assert ch.needs_chunk()


def test_temporal_ensemble_weights_oldest_first():
    k = 0.5
    ch = ActionChunker(n_action_steps=1, temporal_ensemble=k)
    ch.push(chunk(0))  # predicts step t -> t
    assert ch.pop()[0] == 0.0
    assert ch.needs_chunk()
    ch.push(chunk(10))  # at t=1 predicts 10, the old chunk predicts 1
    w = np.exp(-k * np.arange(2))
    assert ch.pop()[0] == pytest.approx((w[0] * 1 + w[1] * 10) / w.sum())
    ch.push(chunk(20))  # t=2: old 2, mid 11, new 20
    w = np.exp(-k * np.arange(3))
    assert ch.pop()[0] == pytest.approx((w @ np.array([2, 11, 20])) / w.sum())


def test_temporal_ensemble_drops_expired_chunks():
    ch = ActionChunker(n_action_steps=1, temporal_ensemble=0.0)
    ch.push(chunk(0, t_p=2))
    ch.pop()
    ch.push(chunk(5, t_p=2))
    ch.pop()  # t=1: (1 + 5) / 2
    ch.push(chunk(7, t_p=2))
    assert ch.pop()[0] == pytest.approx((6 + 7) / 2)  # the first chunk (length 2) no longer votes at t=2


def test_batched_chunker_per_env_push_and_reset():
    bc = BatchedActionChunker(n_envs=3, n_action_steps=2)
    assert bc.needs_chunk().all()
    bc.push(np.stack([chunk(0), chunk(10), chunk(20)]))
    assert np.allclose(bc.pop()[:, 0], [0, 10, 20])
    bc.reset(mask=np.array([False, True, False]))
    assert bc.needs_chunk().tolist() == [False, True, False]
    bc.push(np.stack([chunk(99), chunk(50), chunk(99)]), mask=bc.needs_chunk())
    assert np.allclose(bc.pop()[:, 0], [1, 50, 21])


def test_obs_history_pads_with_first_obs_and_rolls():
    h = ObsHistory(n_obs_steps=3)
    h.reset({"observation.state": np.array([1.0, 1.0]), "observation.images.cam": np.full((2, 2, 3), 7, np.uint8)})
    got = h.get()
    assert got["observation.state"].shape == (3, 2) and np.all(got["observation.state"] == 1.0)
    assert got["observation.images.cam"].shape == (3, 2, 2, 3) and got["observation.images.cam"].dtype == np.uint8
    h.push({"observation.state": np.array([2.0, 2.0]), "observation.images.cam": np.zeros((2, 2, 3), np.uint8)})
    assert h.get()["observation.state"][:, 0].tolist() == [1.0, 1.0, 2.0]
    h.push({"observation.state": np.array([3.0, 3.0]), "observation.images.cam": np.zeros((2, 2, 3), np.uint8)})
    h.push({"observation.state": np.array([4.0, 4.0]), "observation.images.cam": np.zeros((2, 2, 3), np.uint8)})
    assert h.get()["observation.state"][:, 0].tolist() == [2.0, 3.0, 4.0]
    got = h.get()
    got["observation.state"][:] = -1  # get() returns copies
    assert h.get()["observation.state"][-1, 0] == 4.0
    with pytest.raises(RuntimeError):
        ObsHistory(2).get()


def test_batched_obs_history_per_env_reset():
    h = BatchedObsHistory(n_obs_steps=2)
    h.reset({"s": np.array([[0.0], [10.0]])})
    h.push({"s": np.array([[1.0], [11.0]])})
    assert h.get()["s"][:, :, 0].tolist() == [[0.0, 1.0], [10.0, 11.0]]
    # env 1 auto-reset: its obs is a new episode's first -> repeated
    h.push({"s": np.array([[2.0], [100.0]])}, reset_mask=np.array([False, True]))
    assert h.get()["s"][:, :, 0].tolist() == [[1.0, 2.0], [100.0, 100.0]]
