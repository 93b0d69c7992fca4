"""Weighted sum, AND gate and debounce: exact math, invalid propagation, stream bookkeeping."""
import math

import numpy as np
import pytest

from armflow.rewards.compose import AndGate, Debounce, StatePredicate, WeightedSum
from armflow.rewards.fake import FunctionReward
from armflow.rewards.protocol import RewardQuery

FRAME = np.zeros((4, 4, 3), np.uint8)


def _q(key, x=0.0, z=0.0):
    return RewardQuery(frames={"front": FRAME}, state=np.array([x, 0.0, z]), key=key)


def test_weighted_sum_is_the_normalised_weighted_mean():
    a = FunctionReward(lambda q: q.state[0], name="a")
    b = FunctionReward(lambda q: 1.0 - q.state[0], name="b")
    model = WeightedSum([a, b], [3.0, 1.0])
    results = model.score([_q(0, x=0.2), _q(1, x=1.0)])
    assert results[0].value == pytest.approx(0.75 * 0.2 + 0.25 * 0.8)
    assert results[1].value == pytest.approx(0.75) and results[1].prob == pytest.approx(0.75)
    assert results[0].evidence["terms"] == {"a": pytest.approx(0.2), "b": pytest.approx(0.8)}
    assert results[1].key == 1 and model.model_version == "sum(0.75*a@1, 0.25*b@1)"
    twin = WeightedSum([a, a], [1, 1])
    assert set(twin.score([_q(0)])[0].evidence["terms"]) == {"a#0", "a#1"}
    model.close()


def test_weighted_sum_is_invalid_when_a_part_is():
    a = FunctionReward(lambda q: 1.0, name="a")
    flaky = FunctionReward(lambda q: 1.0, name="flaky", invalid_when=lambda q: q.key == 1)
    results = WeightedSum([a, flaky], [1, 1]).score([_q(0), _q(1)])
    assert results[0].valid and results[0].value == 1.0
    assert not results[1].valid and math.isnan(results[1].value) and "flaky" in results[1].error


@pytest.mark.parametrize("weights", [[1.0], [-1.0, 2.0], [0.0, 0.0]])
def test_weighted_sum_rejects_bad_weights(weights):
    with pytest.raises(ValueError, match="weight"):
        WeightedSum([FunctionReward(lambda q: 0.0)] * 2, weights)


def test_and_gate_needs_both_the_model_and_the_predicate():
    detector = FunctionReward(lambda q: q.state[0], name="det")
    gate = AndGate(detector, StatePredicate(2, 0.05), threshold=0.85)
    cases = [(0.9, 0.10, 1.0), (0.9, 0.01, 0.0), (0.5, 0.10, 0.0), (0.85, 0.06, 1.0)]
    results = gate.score([_q(i, x=x, z=z) for i, (x, z, _) in enumerate(cases)])
    assert [r.value for r in results] == [want for *_, want in cases]
    assert results[1].prob == 0.0 and results[0].prob == pytest.approx(0.9)
    assert results[1].evidence == {"model_value": pytest.approx(0.9), "state[2]>0.05": False}
    with pytest.raises(ValueError, match="has no state"):
        gate.score([RewardQuery(frames={"front": FRAME}, key="k")])
    with pytest.raises(ValueError, match="op"):
        StatePredicate(0, 1.0, op="==")


def test_gated_builds_every_gate_from_config_data():
    from armflow.rewards.compose import gated

    detector = FunctionReward(lambda q: 1.0, name="det")
    model = gated(detector, [{"index": 2, "op": ">", "threshold": 0.05}, {"index": 0, "op": "<", "threshold": 0.5}])
    cases = [(0.1, 0.10, 1.0), (0.9, 0.10, 0.0), (0.1, 0.01, 0.0)]
    assert [r.value for r in model.score([_q(i, x=x, z=z) for i, (x, z, _) in enumerate(cases)])] == [
        want for *_, want in cases]
    assert gated(detector, None) is detector and gated(detector, []) is detector
    with pytest.raises(ValueError, match=r"gate\[0\].*missing \['threshold'\]"):
        gated(detector, {"index": 2})


def test_debounce_counts_consecutive_positives_per_stream():
    det = FunctionReward(lambda q: q.state[0], invalid_when=lambda q: q.state[0] < 0)
    deb = Debounce(det, k=3)
    seq_a = [1, 1, 0, 1, 1, 1, 1]
    seq_b = [1, 1, 1, 0, 1, 1, 1]
    out_a, out_b = [], []
    for xa, xb in zip(seq_a, seq_b):  # two streams interleaved in one batch per step
        ra, rb = deb.score([_q("a", x=xa), _q("b", x=xb)])
        out_a.append(ra.value)
        out_b.append(rb.value)
    assert out_a == [0, 0, 0, 0, 0, 1, 1]
    assert out_b == [0, 0, 1, 0, 0, 0, 1]
    # one stream's frames in one batch count in order; an invalid frame neither counts nor resets
    deb.reset()
    r = deb.score([_q("c", x=1), _q("c", x=1), _q("c", x=-1), _q("c", x=1)])
    assert [x.valid for x in r] == [True, True, False, True] and r[3].value == 1.0
    deb.reset(["c"])
    assert deb.score([_q("c", x=1)])[0].evidence["consecutive"] == 1
    with pytest.raises(ValueError):
        Debounce(det, k=0)


def test_compositions_nest():
    det = FunctionReward(lambda q: q.state[0], name="det")
    model = Debounce(AndGate(det, StatePredicate(2, 0.05)), k=2)
    values = [model.score([_q(0, x=1.0, z=z)])[0].value for z in (0.1, 0.1, 0.0, 0.1, 0.1)]
    assert values == [0.0, 1.0, 0.0, 0.0, 1.0]
    assert model.model_version.startswith("debounce(and_gate@and(det@1 >= 0.5, state[2]>0.05), k=2")
