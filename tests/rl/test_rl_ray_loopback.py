"""``backend=ray`` starts a private Ray with token authentication, unless the user names a cluster: Ray moves
cloudpickled data between its processes, and its ports listen on every interface."""
import os
import subprocess
import sys

import pytest

from armflow.workflows.finetune_backends import ray_init_kwargs


def test_a_private_ray_is_local(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    kwargs = ray_init_kwargs(3)
    assert kwargs["address"] == "local" and kwargs["num_cpus"] == 3
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    assert ray_init_kwargs(3) == kwargs


def test_unauthenticated_private_ray_is_refused(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    with pytest.raises(RuntimeError, match="RAY_AUTH_MODE='disabled'"):
        ray_init_kwargs(2)


def test_a_named_cluster_is_joined_as_given(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.3:6379")
    assert ray_init_kwargs(2) == {"address": "10.0.0.3:6379", "log_to_driver": False}
    assert ray_init_kwargs(2, "ray://10.0.0.2:10001")["address"] == "ray://10.0.0.2:10001"


@pytest.mark.slow
def test_real_private_ray_refuses_a_client_without_its_token(monkeypatch):
    ray = pytest.importorskip("ray")
    from ray._private.authentication.authentication_utils import is_token_auth_enabled

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    ray.init(**ray_init_kwargs(1))
    try:
        assert is_token_auth_enabled()
        assert ray.get(ray.remote(lambda: 41 + 1).remote()) == 42
        gcs = ray.get_runtime_context().gcs_address
        env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 32, "HOME": "/nonexistent"}
        intruder = subprocess.run([sys.executable, "-c", f"import ray; ray.init(address={gcs!r})"], env=env,
                                  capture_output=True, text=True, timeout=120)
        assert intruder.returncode != 0 and "uthentication" in intruder.stdout + intruder.stderr
    finally:
        ray.shutdown()
