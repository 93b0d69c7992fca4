"""One value per default: configs/algo/<algo>.yaml (what `armflow finetune` users see) states every option of
the algorithm's config dataclass (the Python API's defaults) with the same value; `armflow finetune` with no
overrides is the measured benchmark recipe (task, reward, time limit)."""
import dataclasses

import pytest
from omegaconf import OmegaConf

from armflow.policies.rl.registry import ALGOS
from armflow.workflows.common import compose_config


@pytest.mark.parametrize("algo", list(ALGOS))
def test_algo_yaml_states_every_dataclass_default_once_with_the_same_value(algo):
    yaml = OmegaConf.to_container(compose_config("finetune", [f"algo={algo}"]).algo.params)
    fields = {f.name: f.default for f in dataclasses.fields(ALGOS[algo][1])}
    assert sorted(yaml) == sorted(fields), f"configs/algo/{algo}.yaml vs {ALGOS[algo][1].__name__}"
    differ = {k: (yaml[k], fields[k]) for k in fields if yaml[k] != fields[k] or type(yaml[k]) is not type(fields[k])}
    assert not differ, f"configs/algo/{algo}.yaml vs {ALGOS[algo][1].__name__} (yaml, dataclass): {differ}"


def test_finetune_without_overrides_runs_the_benchmark_recipe():
    """Task, reward and time limit of `armflow finetune checkpoint=DIR` are the benchmark's (lift from 5 demos:
    plain reward=env pays for hovering there; the critics need the elapsed time with a terminal time limit)."""
    bench = compose_config("bench_finetune")
    for algo in ALGOS:
        cfg = compose_config("finetune", [f"algo={algo}", "checkpoint=DIR"])
        assert (cfg.task, cfg.reward) == (bench.task, bench.reward) == ("lift", "shaped")
        assert cfg.algo.params.time_limit == "terminal" and cfg.algo.params.critic_time is True
        recipe = dict(o.split("=", 1) for o in bench.algo_overrides[algo])
        assert recipe["algo.params.time_limit"] == "terminal" and recipe["algo.params.critic_time"] == "true"
