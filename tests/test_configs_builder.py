"""The one config builder: every package's unknown key is the same ``ConfigError`` with the same message."""
from dataclasses import dataclass

import pytest

from armflow.configs import ConfigError, build_config
from armflow.workflows.cli import main


@dataclass(frozen=True)
class _Cfg:
    horizon: int = 16
    cameras: tuple = ()


def test_unknown_key_names_where_the_key_a_close_name_and_the_valid_keys():
    with pytest.raises(ConfigError) as info:
        build_config(_Cfg, {"horizn": 3}, "policy 'x'")
    assert str(info.value) == "policy 'x': unknown config keys ['horizn']. Did you mean 'horizon'? Valid keys: " \
                              "horizon, cameras"
    assert isinstance(info.value, ValueError)
    assert build_config(_Cfg, {"cameras": ["a", "b"]}, "x") == _Cfg(cameras=("a", "b"))  # lists -> tuples
    assert build_config(_Cfg, None, "x") == _Cfg()


def test_every_package_raises_the_cli_config_error():
    from armflow.hardware import make_driver
    from armflow.policies.rl import make_learner
    from armflow.sim import make_env
    from armflow.workflows.config import ConfigError as CliConfigError

    assert CliConfigError is ConfigError
    with pytest.raises(ConfigError, match="robot 'sim_panda': unknown config keys"):
        make_driver("sim_panda", nope=1)
    with pytest.raises(ConfigError, match="lift: unknown config keys"):
        make_env("lift", nope=1)
    with pytest.raises(ConfigError, match="algo=fpo config: unknown config keys"):
        make_learner("fpo", None, {"nope": 1}, 1)


def test_cli_unknown_task_override_is_a_usage_error(capsys, tmp_path):
    code = main(["collect", "episodes=1", "+task_overrides.cube_hlaf_m=0.03", f"out={tmp_path / 'run'}"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert "unknown config keys ['cube_hlaf_m']" in err and "Did you mean 'cube_half_m'" in err, err
