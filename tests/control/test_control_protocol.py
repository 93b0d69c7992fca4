"""Codec round trips, zero-copy, schema rejection and version handling of the bridge protocol."""
import msgpack
import numpy as np
import pytest
import zmq

from armflow.control import protocol as P

DIMS = {"joint_pos": 7, "joint_vel": 7, "ee_pose": 7, "ee_delta": 6}


def _chunk(actions, **body):
    b = {"chunk_id": 1, "obs_seq": 0, "t0_ns": 10, "dt_ns": 10_000_000, "action_space": "joint_pos"}
    b.update(body)
    return P.encode("CHUNK", b, {"actions": actions}, seq=3, session="s")


@pytest.mark.parametrize("dtype", ["float32", "float64", "int32", "int64", "uint8", "bool"])
@pytest.mark.parametrize("shape", [(0,), (3,), (2, 5), (1, 2, 3, 4)])
def test_round_trip_dtypes_and_shapes(dtype, shape):
    arr = (np.arange(int(np.prod(shape))) % 7).reshape(shape).astype(dtype)
    frames = P.encode("STATE", {"state": {"a": 1}}, {"x": arr}, seq=5, session="abc", t_send_ns=42)
    msg = P.decode([bytes(f) for f in frames], max_bytes=P.MAX_PUB_BYTES)
    assert (msg.type, msg.seq, msg.session, msg.t_send_ns, msg.body) == ("STATE", 5, "abc", 42, {"state": {"a": 1}})
    assert msg.arrays["x"].dtype == arr.dtype and msg.arrays["x"].shape == shape
    np.testing.assert_array_equal(msg.arrays["x"], arr)


def test_big_endian_is_normalised():
    arr = np.arange(4, dtype=">f8")
    msg = P.decode([bytes(f) for f in P.encode("STATE", {"state": {}}, {"x": arr})])
    assert msg.arrays["x"].dtype.str == "<f8"
    np.testing.assert_array_equal(msg.arrays["x"], arr)


def test_large_arrays_are_zero_copy_on_both_ends():
    img = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)  # 230 kB > 64 kB
    frames = P.encode("STATE", {"state": {}}, {"observation.images.front": img})
    assert np.shares_memory(np.frombuffer(frames[1], np.uint8), img)  # encode: a view, no copy
    ctx = zmq.Context()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    a.bind("inproc://zc")
    b.connect("inproc://zc")
    a.send_multipart(frames, copy=False)
    got = b.recv_multipart(copy=False)
    msg = P.decode(got, max_bytes=P.MAX_PUB_BYTES)
    out = msg.arrays["observation.images.front"]
    np.testing.assert_array_equal(out, img)
    assert not out.flags.owndata and not out.flags.writeable  # a view over the ZeroMQ frame
    assert np.shares_memory(out, np.frombuffer(got[1].buffer, np.uint8))
    a.close(), b.close(), ctx.term()


def test_chunk_validation_accepts_good_chunk():
    msg = P.decode(_chunk(np.zeros((4, 7))), expect=P.REQUEST_TYPES)
    actions, grip = P.validate_chunk(msg, DIMS)
    assert actions.shape == (4, 7) and grip is None


@pytest.mark.parametrize("actions,body,code", [
    (np.full((4, 7), np.nan), {}, "not_finite"),
    (np.full((4, 7), np.inf), {}, "not_finite"),
    (np.zeros((4, 6)), {}, "bad_shape"),
    (np.zeros((4,)), {}, "bad_shape"),
    (np.zeros((0, 7)), {}, "bad_shape"),
    (np.zeros((P.MAX_CHUNK_H + 1, 7)), {}, "bad_shape"),
    (np.zeros((4, 7), np.int64), {}, "bad_shape"),
    (np.zeros((4, 7)), {"action_space": "teleport"}, "bad_mode"),
    (np.zeros((4, 7)), {"dt_ns": 0}, "bad_field"),
    (np.zeros((4, 7)), {"dt_ns": -5}, "bad_field"),
    (np.zeros((4, 7)), {"merge": "append"}, "bad_field"),
])
def test_chunk_schema_rejections(actions, body, code):
    with pytest.raises(P.ProtocolError) as err:
        P.validate_chunk(P.decode(_chunk(actions, **body)), DIMS)
    assert err.value.code == code


def _raw(header: dict, *frames) -> list:
    return [msgpack.packb(header)] + list(frames)


GOOD = {"v": list(P.PROTOCOL_VERSION), "type": "HEARTBEAT", "seq": 1, "session": "s", "t_send_ns": 0,
        "frames": [], "body": {}}


@pytest.mark.parametrize("frames,code", [
    ([b"\xc1\xff\x00"], "bad_msgpack"),
    ([b""], "bad_msgpack"),
    ([msgpack.packb([1, 2, 3])], "bad_header"),
    (_raw({**GOOD, "extra": 1}), "bad_header"),
    (_raw({**GOOD, "type": "SELF_DESTRUCT"}), "bad_type"),
    (_raw({**GOOD, "type": "STATE", "body": {"state": {}}}), "bad_type"),  # not a request
    (_raw({**GOOD, "seq": "1"}), "bad_field"),
    (_raw({**GOOD, "seq": -1}), "bad_field"),
    (_raw({**GOOD, "seq": True}), "bad_field"),
    (_raw({**GOOD, "v": [P.PROTOCOL_VERSION[0] + 1, 0]}), "version"),
    (_raw({**GOOD, "v": "1.0"}), "bad_version"),
    (_raw({**GOOD, "body": {"sneaky": 1}}), "bad_body"),
    (_raw({**GOOD, "type": "RESET", "body": {}}), "bad_body"),
    (_raw({**GOOD, "type": "RESET", "body": {"seed": 1.5}}), "bad_field"),
    (_raw({**GOOD, "frames": [["x", "<f8", [2]]]}), "bad_frames"),  # descriptor without frame
    (_raw({**GOOD, "frames": [["x", "<f8", [3]]]}, b"\x00" * 16), "bad_frames"),  # wrong size
    (_raw({**GOOD, "frames": [["x", "object", [1]]]}, b"\x00" * 8), "bad_frames"),
    (_raw({**GOOD, "frames": [["x", "<f8", [10**6, 10**6]]]}, b""), "too_large"),
    ([b"\x00" * (P.MAX_HEADER_BYTES + 1)], "too_large"),
])
def test_hostile_requests_rejected(frames, code):
    with pytest.raises(P.ProtocolError) as err:
        P.decode(frames, expect=P.REQUEST_TYPES)
    assert err.value.code == code


def test_size_cap():
    big = np.zeros(P.MAX_REQUEST_BYTES // 8 + 8)
    with pytest.raises(P.ProtocolError) as err:
        P.decode(P.encode("CHUNK", {"chunk_id": 0, "obs_seq": 0, "t0_ns": 0, "dt_ns": 1, "action_space": "x"},
                          {"actions": big}))
    assert err.value.code == "too_large"


def test_newer_minor_fields_are_ignored_older_are_strict():
    hdr = {**GOOD, "v": [P.PROTOCOL_VERSION[0], P.PROTOCOL_VERSION[1] + 1], "body": {"future_field": 1}}
    assert P.decode(_raw(hdr)).body == {}
    with pytest.raises(P.ProtocolError):
        P.decode(_raw({**GOOD, "body": {"future_field": 1}}))


def test_hello_with_other_major_decodes_so_server_can_reject_it():
    hdr = {**GOOD, "v": [P.PROTOCOL_VERSION[0] + 1, 0], "type": "HELLO",
           "body": {"client_version": "x", "role": "controller"}}
    assert P.decode(_raw(hdr)).version[0] == P.PROTOCOL_VERSION[0] + 1


# -- issue 10: free text never breaks decoding, seeds in range, chunk times cannot overflow ---------------------

@pytest.mark.parametrize("msg_type,body", [
    ("NACK", {"ack_seq": 1, "code": "bad_field", "reason": "x" * 5000}),
    ("REJECT", {"code": "lease_held", "reason": "y" * 300}),
    ("EVENT", {"kind": "chunk_rejected", "data": {"chunk_id": 3, "reason": "z" * 2000}}),
])
def test_long_reasons_are_truncated_by_the_encoder_and_decode(msg_type, body):
    msg = P.decode([bytes(f) for f in P.encode(msg_type, body)], max_bytes=P.MAX_PUB_BYTES)
    reason = msg.body["reason"] if "reason" in msg.body else msg.body["data"]["reason"]
    assert len(reason) == P.MAX_STR and reason.endswith("\u2026") and reason[0] in "xyz"


def test_a_peer_sent_long_reason_is_truncated_on_decode_not_refused():
    raw = _raw({**GOOD, "type": "ESTOP", "body": {"reason": "r" * 300}})
    assert len(P.decode(raw, expect=P.REQUEST_TYPES).body["reason"]) == P.MAX_STR
    with pytest.raises(P.ProtocolError, match="longer than"):  # other strings stay strict
        P.decode(_raw({**GOOD, "type": "ARM", "body": {"mode": "m" * 300}}), expect=P.REQUEST_TYPES)


@pytest.mark.parametrize("seed,ok", [(0, True), (P.SEED_MAX, True), (-1, False), (P.SEED_MAX + 1, False),
                                     (-2**63, False), (2**63 - 1, False)])
def test_reset_seed_must_fit_every_simulator(seed, ok):
    raw = _raw({**GOOD, "type": "RESET", "body": {"seed": seed}})
    if ok:
        assert P.decode(raw, expect=P.REQUEST_TYPES).body["seed"] == seed
    else:
        with pytest.raises(P.ProtocolError, match="RESET.seed") as err:
            P.decode(raw, expect=P.REQUEST_TYPES)
        assert err.value.code == "bad_field"


@pytest.mark.parametrize("body", [{"t0_ns": 2**63 - 5}, {"t0_ns": 2**63 - 10**9, "dt_ns": 10**9},
                                  {"dt_ns": P.MIN_DT_NS - 1}, {"dt_ns": P.MAX_DT_NS + 1}])
def test_chunk_times_out_of_range_refused(body):
    with pytest.raises(P.ProtocolError) as err:
        P.validate_chunk(P.decode(_chunk(np.zeros((4, 7)), **body)), DIMS)
    assert err.value.code == "bad_field"


@pytest.mark.parametrize("frames", [
    _raw({**GOOD, "type": "ESTOP", "body": {"reason": 42}}),
    _raw({**GOOD, "type": "ESTOP", "body": {"reason": "r" * 100_000}}),  # header over MAX_HEADER_BYTES
    _raw({**GOOD, "type": "ESTOP", "seq": -3, "body": {"why": 1}}),
    _raw({"type": "estop ", "seq": 9}),
    [msgpack.packb({"junk": list(range(500)), "type": b"ESTOP", "v": "x"})],
    [b"", msgpack.packb({**GOOD, "type": "ESTOP"})],  # a REQ-style empty delimiter first
])
def test_peek_recognises_malformed_estops(frames):
    with pytest.raises(P.ProtocolError):
        P.decode(frames, expect=P.REQUEST_TYPES)
    assert P.peek(frames)[0] == "ESTOP"


@pytest.mark.parametrize("frames", [[b"\xc1"], [b""], [msgpack.packb([1, "ESTOP"])], _raw(GOOD)])
def test_peek_is_safe_on_garbage(frames):
    assert P.peek(frames)[0] in (None, "HEARTBEAT")


# -- protocol 1.1: ARM names the e-stop epoch it acknowledges ---------------------------------------------------

def test_protocol_1_1_arm_carries_an_estop_epoch_and_1_0_messages_still_decode():
    assert P.PROTOCOL_VERSION == (1, 1)
    arm = P.decode(P.encode("ARM", {"mode": "joint_pos", "estop_epoch": 3}), expect=P.REQUEST_TYPES)
    assert arm.body == {"mode": "joint_pos", "estop_epoch": 3}
    old_arm = P.decode(_raw({**GOOD, "v": [1, 0], "type": "ARM", "body": {"mode": "joint_pos"}}))
    assert old_arm.version == (1, 0) and "estop_epoch" not in old_arm.body  # the server applies its fallback
    welcome = {"session": "s", "robot": {}, "limits": {}, "limits_hash": "h", "servo_rate_hz": 1.0,
               "state_rate_hz": 1.0, "server_time_ns": 0, "timing": "realtime", "t_cmd_ms": 1, "role": "observer",
               "action_dims": {}, "pub_endpoint": "ipc://x"}
    assert "estop_epoch" not in P.decode(_raw({**GOOD, "v": [1, 0], "type": "WELCOME", "body": welcome})).body
    assert P.decode(P.encode("WELCOME", {**welcome, "estop_epoch": 2})).body["estop_epoch"] == 2


@pytest.mark.parametrize("epoch", [-1, True, 1.0, "3", None, -2**63])
def test_arm_estop_epoch_must_be_a_non_negative_int(epoch):
    with pytest.raises(P.ProtocolError) as err:
        P.decode(_raw({**GOOD, "type": "ARM", "body": {"mode": "joint_pos", "estop_epoch": epoch}}))
    assert err.value.code == "bad_field"


@pytest.mark.parametrize("raw", [False, True])
def test_float_frames_are_checked_for_nan_and_inf_small_or_large_alike(raw):
    """Small float frames are checked in plain Python, large ones with numpy, both raw and as ndarrays."""
    for shape in ((2, 7), (100, 7)):  # 14 and 700 elements: either side of SMALL_FLOAT_FRAME
        for bad in (np.nan, np.inf, -np.inf):
            actions = np.zeros(shape)
            actions[-1, 3] = bad
            with pytest.raises(P.ProtocolError) as err:
                P.decode([bytes(f) for f in _chunk(actions)], raw=raw)
            assert err.value.code == "not_finite"
        huge = np.full(shape, 1.5e308)  # finite, though its sum overflows: never mistaken for inf
        msg = P.decode([bytes(f) for f in _chunk(huge)], raw=raw)
        actions, _ = P.validate_chunk(msg, DIMS)
        np.testing.assert_array_equal(actions.to_numpy() if raw else actions, huge)


def test_a_raw_chunk_is_validated_like_an_ndarray_one():
    grip = np.linspace(0, 1, 4)
    frames = P.encode("CHUNK", {"chunk_id": 1, "obs_seq": 0, "t0_ns": 10, "dt_ns": 10_000_000,
                                "action_space": "joint_pos"}, {"actions": np.ones((4, 7), np.float32), "gripper": grip})
    actions, gripper = P.validate_chunk(P.decode([bytes(f) for f in frames], raw=True), DIMS)
    assert isinstance(actions, P.RawArray) and (actions.dtype, actions.shape, len(actions)) == ("<f4", (4, 7), 4)
    np.testing.assert_array_equal(actions.to_numpy(), np.ones((4, 7), np.float32))
    np.testing.assert_array_equal(np.asarray(gripper.values()), grip)
    for arrays, code in (({"actions": np.ones((4, 7)), "gripper": np.full(4, 1.5)}, "bad_field"),
                         ({"actions": np.ones((4, 7)), "gripper": np.zeros(3)}, "bad_shape"),
                         ({"actions": np.ones((4, 7), np.int64)}, "bad_shape"),
                         ({"actions": np.ones((4, 6))}, "bad_shape")):
        frames = P.encode("CHUNK", {"chunk_id": 1, "obs_seq": 0, "t0_ns": 10, "dt_ns": 10_000_000,
                                    "action_space": "joint_pos"}, arrays)
        for raw in (False, True):
            with pytest.raises(P.ProtocolError) as err:
                P.validate_chunk(P.decode([bytes(f) for f in frames], raw=raw), DIMS)
            assert err.value.code == code, (arrays, raw)
