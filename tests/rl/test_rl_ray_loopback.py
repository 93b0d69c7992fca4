"""``backend=ray`` starts a private Ray on loopback unless the user names a cluster (Ray moves cloudpickled
data over unauthenticated ports). Ray itself is the vendor boundary: a stub records what ``ray.init`` gets."""
import sys
import types

import pytest

from armflow.workflows.finetune_backends import RayBackend, ray_init_kwargs


class _Stop(Exception):
    pass


@pytest.fixture
def fake_ray(monkeypatch):
    calls = []

    def remote(**_):
        raise _Stop  # enough: ray.init has been called by then

    monkeypatch.setitem(sys.modules, "ray", types.SimpleNamespace(is_initialized=lambda: False,
                                                                  init=lambda **kw: calls.append(kw), remote=remote))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return calls


def test_ray_starts_on_loopback_by_default(fake_ray):
    with pytest.raises(_Stop):
        RayBackend(None, None, None, {}, num_cpus=3)
    assert fake_ray == [{"address": "local", "num_cpus": 3, "include_dashboard": False, "log_to_driver": False,
                         "_node_ip_address": "127.0.0.1"}]


def test_a_named_cluster_is_joined_as_given(fake_ray, monkeypatch):
    with pytest.raises(_Stop):
        RayBackend(None, None, None, {}, address="ray://10.0.0.2:10001")
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.3:6379")
    assert ray_init_kwargs(2) == {"address": "10.0.0.3:6379", "log_to_driver": False}
    assert fake_ray[0] == {"address": "ray://10.0.0.2:10001", "log_to_driver": False}
