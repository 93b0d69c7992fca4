"""The explicit backend registry: every name builds a RewardModel; a miss lists the valid names."""
import pytest

from armflow.configs import ConfigError
from armflow.rewards.protocol import RewardModel
from armflow.rewards.registry import BACKENDS, make_reward_model


def test_openai_builds_and_checks_its_keys():
    model = make_reward_model("openai", url="http://127.0.0.1:9/v1", model="m", concurrency=3)
    assert isinstance(model, RewardModel) and model.backend == "openai" and model.cfg.concurrency == 3
    model.close()
    with pytest.raises(ConfigError, match="unknown config keys"):
        make_reward_model("openai", model="m", concurency=3)


def test_unknown_backend_lists_the_valid_ones():
    with pytest.raises(ConfigError) as err:
        make_reward_model("opena")
    assert "Did you mean 'openai'" in str(err.value) and all(name in str(err.value) for name in BACKENDS)
