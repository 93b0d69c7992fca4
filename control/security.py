"""Transport security: loopback by default, CURVE + client allow-list for anything else.

* ``ipc://`` and ``inproc://`` endpoints, and ``tcp://`` on 127.0.0.0/8, ::1 or ``localhost``,
  are local: no keys needed.
* Any other ``tcp://`` bind (a LAN address, ``0.0.0.0``, ``*``) is refused at start unless the
  server has a CURVE key pair and a directory of allowed client public keys; the ZAP
  authenticator (``zmq.auth``) then admits only those clients.
* ``generate_keys(dir, name)`` writes a ``name.key`` (public) / ``name.key_secret`` pair.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator


class SecurityError(RuntimeError):
    """An endpoint/key configuration that would expose the robot; the message says how to fix it."""


@dataclass(frozen=True)
class CurveConfig:
    """Server side: its secret key file and a directory of allowed client ``*.key`` files.
    Client side: its secret key file and the server's public key file."""

    secret_key_file: str
    allowed_clients_dir: str | None = None  # server only
    server_public_key_file: str | None = None  # client only


def endpoint_host(endpoint: str) -> str | None:
    """Host part of a ``tcp://host:port`` endpoint, else None."""
    if not endpoint.startswith("tcp://"):
        return None
    rest = endpoint[len("tcp://"):]
    if rest.startswith("["):
        return rest[1:rest.index("]")]
    return rest.rsplit(":", 1)[0]


def is_loopback(endpoint: str) -> bool:
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    host = endpoint_host(endpoint)
    if host is None:
        raise SecurityError(f"endpoint {endpoint!r}: use ipc://PATH, inproc://NAME or tcp://HOST:PORT")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a hostname, an interface name or a wildcard: not provably local


def check_endpoint(endpoint: str, curve: CurveConfig | None) -> None:
    """Refuse a non-loopback bind without CURVE keys and a client allow-list."""
    if is_loopback(endpoint):
        return
    if curve is None or not curve.allowed_clients_dir:
        raise SecurityError(
            f"refusing to bind {endpoint!r}: it is not a loopback endpoint, and a robot reachable from the "
            "network needs CURVE encryption with a client allow-list. Either bind tcp://127.0.0.1:PORT / "
            "ipc://PATH, or set curve.secret_key_file and curve.allowed_clients_dir (make keys with "
            "armflow.control.security.generate_keys)")
    for path in (curve.secret_key_file, curve.allowed_clients_dir):
        if not Path(path).exists():
            raise SecurityError(f"CURVE key path {path!r} does not exist")
    if not any(Path(curve.allowed_clients_dir).glob("*.key")):
        raise SecurityError(f"allowed_clients_dir {curve.allowed_clients_dir!r} holds no client *.key files")


def generate_keys(key_dir: str | Path, name: str) -> tuple[str, str]:
    """Write a CURVE key pair; return (public key file, secret key file)."""
    Path(key_dir).mkdir(parents=True, exist_ok=True)
    return zmq.auth.create_certificates(str(key_dir), name)


def start_authenticator(ctx: zmq.Context, curve: CurveConfig) -> ThreadAuthenticator:
    """ZAP handler that admits only clients whose public key is in ``allowed_clients_dir``."""
    auth = ThreadAuthenticator(ctx)
    auth.start()
    auth.configure_curve(domain="*", location=str(curve.allowed_clients_dir))
    return auth


def make_curve_server(sock: zmq.Socket, curve: CurveConfig) -> None:
    public, secret = zmq.auth.load_certificate(curve.secret_key_file)
    sock.curve_secretkey, sock.curve_publickey, sock.curve_server = secret, public, True


def make_curve_client(sock: zmq.Socket, curve: CurveConfig) -> None:
    if not curve.server_public_key_file:
        raise SecurityError("client CURVE config needs server_public_key_file")
    public, secret = zmq.auth.load_certificate(curve.secret_key_file)
    server_public, _ = zmq.auth.load_certificate(curve.server_public_key_file)
    sock.curve_secretkey, sock.curve_publickey, sock.curve_serverkey = secret, public, server_public
