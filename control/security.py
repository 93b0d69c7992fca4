"""Transport security: loopback by default, CURVE + client allow-list for anything else.

* ``ipc://`` and ``inproc://`` endpoints, and ``tcp://`` on 127.0.0.0/8, ::1 or ``localhost``,
  are local: no keys needed.
* Any other ``tcp://`` bind (a LAN address, ``0.0.0.0``, ``*``) is refused at start unless the
  server has a CURVE key pair and a directory of allowed client public keys; the ZAP
  authenticator (``zmq.auth``) then admits only those clients.
* ``generate_keys(dir, name)`` writes a ``name.key`` (public, 0644) / ``name.key_secret`` (0600) pair
  into a directory that is not world-writable; loading a secret key file that group or others can
  read or write is refused (like ssh's "unprotected private key file").
"""
from __future__ import annotations

import ipaddress
import os
import stat
import tempfile
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


def _check_private_dir(key_dir: Path) -> None:
    mode = key_dir.stat().st_mode
    if mode & stat.S_IWOTH:
        raise SecurityError(f"key directory {str(key_dir)!r} is world-writable (mode {oct(mode & 0o777)}): another "
                            f"user could replace the keys; use a private directory (chmod o-w)")


def generate_keys(key_dir: str | Path, name: str) -> tuple[str, str]:
    """Write a CURVE key pair; return (public key file, secret key file).

    The pair is written inside a fresh 0700 directory and moved into ``key_dir`` once the secret file is
    0600, so the secret is never readable by another user, not even for a moment."""
    key_dir = Path(key_dir)
    key_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    _check_private_dir(key_dir)
    staging = tempfile.mkdtemp(prefix=".keys-", dir=key_dir)  # 0700
    try:
        public, secret = zmq.auth.create_certificates(staging, name)
        os.chmod(secret, 0o600)
        os.chmod(public, 0o644)
        out = str(key_dir / Path(public).name), str(key_dir / Path(secret).name)
        os.replace(public, out[0])
        os.replace(secret, out[1])
    finally:
        for leftover in Path(staging).iterdir():
            leftover.unlink()
        os.rmdir(staging)
    return out


def load_secret_key(path: str) -> tuple[bytes, bytes]:
    """``(public, secret)`` from a secret key file that only its owner can read or write."""
    mode = os.stat(path).st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecurityError(f"secret key file {path!r} is accessible by group/others (mode {oct(mode & 0o777)}); "
                            f"run: chmod 600 {path}")
    public, secret = zmq.auth.load_certificate(path)
    if secret is None:
        raise SecurityError(f"{path!r} holds no secret key (is it the public .key file?)")
    return public, secret


def start_authenticator(ctx: zmq.Context, curve: CurveConfig) -> ThreadAuthenticator:
    """ZAP handler that admits only clients whose public key is in ``allowed_clients_dir``."""
    auth = ThreadAuthenticator(ctx)
    auth.start()
    auth.configure_curve(domain="*", location=str(curve.allowed_clients_dir))
    return auth


def make_curve_server(sock: zmq.Socket, curve: CurveConfig) -> None:
    public, secret = load_secret_key(curve.secret_key_file)
    sock.curve_secretkey, sock.curve_publickey, sock.curve_server = secret, public, True


def make_curve_client(sock: zmq.Socket, curve: CurveConfig) -> None:
    if not curve.server_public_key_file:
        raise SecurityError("client CURVE config needs server_public_key_file")
    public, secret = load_secret_key(curve.secret_key_file)
    server_public, _ = zmq.auth.load_certificate(curve.server_public_key_file)
    sock.curve_secretkey, sock.curve_publickey, sock.curve_serverkey = secret, public, server_public
