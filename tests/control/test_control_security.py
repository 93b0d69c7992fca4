"""Transport security: loopback by default; non-loopback TCP needs CURVE + an allow-list; a client whose key
is not allow-listed cannot connect."""
import pytest

from armflow.control.client import BridgeClient, BridgeError
from armflow.control.launch import ServerProcess
from armflow.control.security import CurveConfig, SecurityError, check_endpoint, generate_keys, is_loopback
from armflow.control.server import BridgeServer, ServerConfig

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("endpoint,local", [
    ("ipc:///tmp/x", True), ("inproc://x", True), ("tcp://127.0.0.1:5555", True), ("tcp://127.8.0.1:1", True),
    ("tcp://localhost:5555", True), ("tcp://[::1]:5555", True), ("tcp://0.0.0.0:5555", False),
    ("tcp://*:5555", False), ("tcp://192.168.1.20:5555", False), ("tcp://eth0:5555", False),
])
def test_loopback_detection(endpoint, local):
    assert is_loopback(endpoint) is local


def test_non_loopback_tcp_without_curve_refused_with_clear_message():
    with pytest.raises(SecurityError) as err:
        BridgeServer(ServerConfig(endpoint="tcp://0.0.0.0:5555"))
    msg = str(err.value)
    assert "0.0.0.0" in msg and "CURVE" in msg and "allowed_clients_dir" in msg and "127.0.0.1" in msg
    with pytest.raises(SecurityError, match="CURVE"):  # a derived PUB endpoint is checked as well
        check_endpoint("tcp://10.0.0.5:6000", None)


def test_curve_config_is_checked(tmp_path):
    pub, secret = generate_keys(tmp_path / "server", "server")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SecurityError, match="no client"):
        check_endpoint("tcp://0.0.0.0:1", CurveConfig(secret, str(tmp_path / "empty")))
    with pytest.raises(SecurityError, match="does not exist"):
        check_endpoint("tcp://0.0.0.0:1", CurveConfig(str(tmp_path / "missing"), str(tmp_path / "empty")))


def test_curve_allow_list(tmp_path):
    server_pub, server_secret = generate_keys(tmp_path / "server", "server")
    good_pub, good_secret = generate_keys(tmp_path / "allowed", "alice")
    _, bad_secret = generate_keys(tmp_path / "others", "mallory")
    cfg = ServerConfig(robot="fake_arm", robot_options={"rate_hz": 100.0}, endpoint="tcp://0.0.0.0:*",
                       pub_endpoint="tcp://0.0.0.0:*",
                       curve=CurveConfig(server_secret, allowed_clients_dir=str(tmp_path / "allowed")))
    with ServerProcess(cfg) as sp:
        port = sp.endpoint.rsplit(":", 1)[1]
        endpoint = f"tcp://127.0.0.1:{port}"
        with BridgeClient(endpoint, curve=CurveConfig(good_secret, server_public_key_file=server_pub)) as ok:
            ok.heartbeat()
            assert ok.read_state().joint_pos_rad.shape == (7,)  # the encrypted PUB stream works too
        for secret in (bad_secret, None):
            curve = None if secret is None else CurveConfig(secret, server_public_key_file=server_pub)
            intruder = BridgeClient(endpoint, curve=curve, connect_timeout_s=1.0)
            with pytest.raises(BridgeError) as err:
                intruder.connect()
            assert err.value.code == "timeout"
            intruder.close()


def test_generated_secret_keys_are_private_and_loading_a_readable_one_is_refused(tmp_path):
    import os
    import stat

    import zmq

    from armflow.control.security import load_secret_key, make_curve_server

    public, secret = generate_keys(tmp_path / "keys", "server")  # was 0644: world-readable secret
    assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(public).st_mode) == 0o644
    assert not os.stat(tmp_path / "keys").st_mode & stat.S_IWOTH
    assert sorted(p.name for p in (tmp_path / "keys").iterdir()) == ["server.key", "server.key_secret"]
    assert load_secret_key(secret)[1] is not None
    os.chmod(secret, 0o644)
    sock = zmq.Context.instance().socket(zmq.ROUTER)
    with pytest.raises(SecurityError, match="chmod 600"):
        make_curve_server(sock, CurveConfig(secret, str(tmp_path / "keys")))
    sock.close()
    os.chmod(public, 0o600)
    with pytest.raises(SecurityError, match="holds no secret key"):
        load_secret_key(public)
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    with pytest.raises(SecurityError, match="world-writable"):
        generate_keys(shared, "alice")
