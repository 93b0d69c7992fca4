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
