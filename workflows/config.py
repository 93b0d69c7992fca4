"""Config composition for every command: Hydra composition plus the checks that run before any work.

One place validates what a user typed: unknown keys (with the close valid ones), group options, types
(the YAML default fixes a key's type) and numeric ranges (``VALUE_RANGES``). Errors are ``ConfigError``.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import import_module, resources
from typing import Any, Callable, Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from armflow.configs import ConfigError, did_you_mean

# Hydra keys armflow honours (they only choose output dirs); every other ``hydra.*`` override is refused.
HYDRA_DIR_KEYS = ("hydra.run.dir", "hydra.sweep.dir", "hydra.sweep.subdir")
# Config nodes whose keys are checked by the component they configure, so ``+node.KEY=V`` may add to them
# (besides every empty mapping such as ``robot_options: {}``): the policy config dataclasses list theirs.
OPEN_NODES = ("policy",)


@dataclass(frozen=True)
class Range:
    """Allowed values of a numeric key: its type, bounds and whether ``null`` is allowed."""

    kind: type  # int or float (a float key also takes an int)
    lo: float | None = None
    hi: float | None = None
    lo_strict: bool = False  # lo itself excluded
    nullable: bool = False

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is not allowed, or None."""
        if value is None:
            return None if self.nullable else "must be set"
        ok_types = (int,) if self.kind is int else (int, float)
        if isinstance(value, bool) or not isinstance(value, ok_types):
            return f"expected {'an int' if self.kind is int else 'a number'}, got {value!r}"
        if self.lo is not None and (value <= self.lo if self.lo_strict else value < self.lo):
            return f"must be {'>' if self.lo_strict else '>='} {self.lo:g}, got {value!r}"
        if self.hi is not None and value > self.hi:
            return f"must be <= {self.hi:g}, got {value!r}"
        return None


def _ranges(spec: Range, *keys: str) -> dict[str, Range]:
    return {key: spec for key in keys}


# Top-level numeric keys, checked by name in every command's config before any work: a name means the
# same thing in every config that has it. Counts are >= 1, seeds, offsets and "0 = skip" counts >= 0.
VALUE_RANGES: dict[str, Range] = {
    **_ranges(Range(int, 1), "episodes", "steps", "batch_size", "n_envs", "log_every", "save_every", "demos",
              "train_steps", "eval_episodes", "eval_n_envs", "n_eval_envs", "eval_every_iters", "save_every_iters",
              "env_steps", "iters", "roundtrips", "vec_envs", "vec_steps", "robosuite_steps", "state_dim",
              "action_dim", "horizon", "n_obs_steps", "chunk_horizon", "estop_trials", "parallel", "threads",
              "lease_timeout_ms"),
    **_ranges(Range(int, 1, nullable=True), "num_threads", "n_steps", "max_steps", "human_episode_steps"),
    **_ranges(Range(int, 0), "seed", "eval_seed", "video_episodes", "warmup", "warmup_steps", "camera_steps",
              "deploy_episodes"),
    **_ranges(Range(int, 0, nullable=True), "n_workers"),
    "rt_priority": Range(int, 0, 99),
    **_ranges(Range(float, 0), "noise_std", "demo_noise_std", "shaping_scale", "exec_latency_ms",
              "actuator_latency_ms", "inference_margin_ms", "rate_hz", "servo_seconds", "weight_decay",
              "finetune_budget_s"),
    **_ranges(Range(float, 0, lo_strict=True), "lr", "budget_s", "state_rate_hz", "grad_clip"),
    **_ranges(Range(float, 0, lo_strict=True, nullable=True), "servo_rate_hz", "t_cmd_ms"),
    "ema_decay": Range(float, 0, 1),
}


def _names(*sources: str) -> Callable[[], list[str]]:
    """The keys of registries named ``"module:ATTR"``, imported only when a value is checked."""
    def names() -> list[str]:
        return [str(n) for src in sources for n in getattr(import_module(src.split(":")[0]), src.split(":")[1])]
    return names


_TASKS = _names("armflow.sim.registry:ENVS")
_POLICIES = _names("armflow.policies.factory:POLICIES")
_REWARDS = _names("armflow.workflows.chunk_env:REWARD_MODES")
# (config, dotted key) -> the valid names, from the registry that will look them up: a typo fails here, not
# after envs, workers or a dataset were started. Lists (``algos``) are checked item by item; null is allowed.
CHOICES: dict[tuple[str, str], Callable[[], list[str]]] = {
    **{(c, "task"): _TASKS for c in ("collect", "evaluate", "finetune", "quickstart", "bench_finetune",
                                     "bench_multimodal", "serve")},
    ("collect", "device"): _names("armflow.workflows.collect:DEVICES"),
    ("teleop", "device"): _names("armflow.hardware.teleop:DEVICES"),
    ("serve", "robot"): _names("armflow.hardware:DRIVERS", "armflow.control.drivers:LOCAL_DRIVERS"),
    ("serve", "mode"): _names("armflow.workflows.serve:TIMING_MODES"),
    ("finetune", "reward"): _REWARDS,
    ("bench_finetune", "reward"): _REWARDS,
    ("finetune", "backend"): _names("armflow.workflows.finetune_backends:BACKENDS"),
    ("reward_serve", "backend"): _names("armflow.rewards.registry:BACKENDS"),
    ("quickstart", "policy.type"): _POLICIES,
    ("bench_train", "policy_type"): _POLICIES,
    ("bench_multimodal", "policies"): _POLICIES,
    ("bench_finetune", "algos"): lambda: group_options("algo"),
    ("quickstart", "finetune_algo"): lambda: group_options("algo"),
    ("improve", "task"): _TASKS,
    ("improve", "preset"): _names("armflow.workflows.improve.graph:PRESETS"),
    ("improve", "human_reset"): _names("armflow.workflows.improve.graph:HUMAN_RESETS"),
    ("improve", "intervention"): _names("armflow.hardware.intervention:INTERVENTION_DEVICES"),
}


# Keys a command cannot run without (their YAML default is null); checked by the CLI before the run dir is made.
REQUIRED: dict[str, tuple[str, ...]] = {"train": ("dataset",), "evaluate": ("checkpoint",),
                                        "finetune": ("checkpoint",), "deploy": ("checkpoint",),
                                        "reward_fit": ("dataset",), "reward_eval": ("dataset",)}


def config_file(config_name: str) -> str:
    return f"configs/{config_name}.yaml"


def config_text(path: str) -> str:
    """The text of a bundled config file (``"train"`` or ``"policy/flow"``), comments included."""
    return resources.files("armflow.configs").joinpath(f"{path}.yaml").read_text()


def group_options(group: str) -> list[str]:
    """Options of a config group: the YAML files in ``configs/<group>/``."""
    folder = resources.files("armflow.configs").joinpath(group)
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _compose(config_name: str, overrides: Sequence[str], hydra_cfg: bool = False) -> DictConfig:
    from hydra import compose, initialize_config_module
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_module(config_module="armflow.configs", version_base="1.3"):
            return compose(config_name=config_name, overrides=list(overrides), return_hydra_config=hydra_cfg)
    except (HydraException, OmegaConfBaseException) as exc:
        cause = exc.__cause__ or exc
        raise ConfigError(f"{config_file(config_name)}: bad override: {cause}") from None


def parse_overrides(overrides: Sequence[str]) -> list:
    """Hydra's parser over ``key=value`` strings; a syntax error names the override."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    parsed = []
    for text in overrides:
        try:
            parsed += parser.parse_overrides([text])
        except OverrideParseException as exc:
            raise ConfigError(f"cannot parse override {text!r}: {str(exc).splitlines()[0]} "
                              "(expected key=value, +key=value or ~key)") from None
    return parsed


@lru_cache(maxsize=64)
def config_groups(config_name: str) -> dict[str, str]:
    """The config groups of a command (``{"policy": "flow"}`` for train) with their default options."""
    choices = _compose(config_name, (), hydra_cfg=True).hydra.runtime.choices
    return {group: option for group, option in choices.items() if not group.startswith("hydra/")}


@lru_cache(maxsize=64)
def _baseline(config_name: str, group_overrides: tuple[str, ...]) -> DictConfig:
    """The config with only the group choices applied: what every other override must fit."""
    return _compose(config_name, group_overrides)


def _walk(cfg: DictConfig, key: str) -> tuple[bool, Any, str, list[str]]:
    """(exists, value, first missing dotted prefix, keys beside it) of dotted ``key`` in ``cfg``."""
    node: Any = cfg
    parts = key.split(".")
    for i, part in enumerate(parts):
        if not isinstance(node, DictConfig) or part not in node:
            siblings = [str(k) for k in node.keys()] if isinstance(node, DictConfig) else []
            return False, None, ".".join(parts[: i + 1]), siblings
        node = node[part]
    return True, node, "", []


def _is_open(baseline: DictConfig, parent: str) -> bool:
    """Whether ``+parent.KEY=V`` may add a key: an empty mapping, or a node its component validates."""
    if not parent:
        return False
    exists, node, _, _ = _walk(baseline, parent)
    return exists and isinstance(node, DictConfig) and (len(node) == 0 or parent in OPEN_NODES)


def _unknown_key(config_name: str, key: str, missing: str, siblings: list[str], note: str = "") -> ConfigError:
    leaf = missing.rsplit(".", 1)[-1]
    hint = did_you_mean(leaf, siblings)
    where = f" under {missing.rsplit('.', 1)[0]!r}" if "." in missing else ""
    return ConfigError(f"{config_file(config_name)}: unknown key {missing!r}{note}.{hint} "
                       f"Valid keys{where}: {', '.join(siblings) or '(none)'}")


def _check_group(override, groups: dict[str, str]) -> None:
    """Refuse a group option (``policy=nope``) that has no YAML file, listing the valid ones."""
    key = override.key_or_group
    options = group_options(key)
    values = list(override.sweep_string_iterator()) if override.is_sweep_override() else [override.value()]
    bad = [v for v in values if str(v) not in options]
    if bad:
        hint = did_you_mean(str(bad[0]), options, n=1)
        raise ConfigError(f"{key}={bad[0]}: no such {key} (no configs/{key}/{bad[0]}.yaml).{hint} "
                          f"Valid: {', '.join(options)}")


def _check_key(config_name: str, override, baseline: DictConfig) -> None:
    """Refuse an override whose key the command does not have, naming the close valid ones."""
    key = override.key_or_group
    exists, _, missing, siblings = _walk(baseline, key)
    open_parent = _is_open(baseline, key.rpartition(".")[0])
    if override.is_add() or override.is_force_add():
        if exists and override.is_add():
            raise ConfigError(f"+{key}: {config_file(config_name)} already has {key!r}; change it with {key}=VALUE")
        if not exists and not open_parent:
            raise _unknown_key(config_name, key, missing, siblings, " ('+' adds a key, but no armflow code reads it)")
    elif not exists:
        note = f" (to add a key that {key.rpartition('.')[0]!r} accepts, write +{override.input_line})" \
            if open_parent else ""
        raise _unknown_key(config_name, key, missing, siblings, note)


def _type_problem(default: Any, value: Any) -> str | None:
    """Why ``value`` cannot replace ``default`` (the YAML default fixes the type), or None."""
    if default is None or value is None:
        return None
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "expected true or false"
    if isinstance(default, int):
        return None if isinstance(value, int) and not isinstance(value, bool) else "expected an int"
    if isinstance(default, float):
        return None if isinstance(value, (int, float)) and not isinstance(value, bool) else "expected a number"
    if isinstance(default, ListConfig):
        return None if isinstance(value, ListConfig) else "expected a list, e.g. [a,b]"
    if isinstance(default, DictConfig):
        return None if isinstance(value, DictConfig) else "expected a mapping, e.g. {a: 1}"
    return None if not isinstance(value, (ListConfig, DictConfig)) else "expected a single value"


def check_values(cfg: DictConfig, config_name: str, baseline: DictConfig | None = None,
                 keys: Sequence[str] = ()) -> None:
    """Refuse values of the wrong type (``keys`` against ``baseline``'s defaults), outside ``VALUE_RANGES`` or
    not in ``CHOICES``."""
    where = config_file(config_name)
    for key in keys:
        exists, default, _, _ = _walk(baseline, key) if baseline is not None else (False, None, "", [])
        if "." not in key and key in VALUE_RANGES or not exists:
            continue
        value = OmegaConf.select(cfg, key)
        problem = _type_problem(default, value)
        if problem:
            raise ConfigError(f"{key}={_show(value)}: {problem} (default {_show(default)} in {where})")
    for key, rng in VALUE_RANGES.items():
        if key in cfg:
            problem = rng.problem(cfg[key])
            if problem:
                raise ConfigError(f"{key}={_show(cfg[key])}: {problem} ({where})")
    for (name, key), valid_names in CHOICES.items():
        value = OmegaConf.select(cfg, key) if name == config_name else None
        for item in value if isinstance(value, ListConfig) else [value]:
            if item is not None and str(item) not in (valid := valid_names()):
                hint = did_you_mean(str(item), valid, n=1)
                raise ConfigError(f"{key}={_show(value)}: unknown value {str(item)!r}.{hint} "
                                  f"Valid: {', '.join(valid)} ({where})")


def _show(value: Any) -> str:
    """A value as it is written on the command line (``[a, b]``, ``null``)."""
    if isinstance(value, ListConfig):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, DictConfig):
        return "{" + ", ".join(f"{k}: {_show(v)}" for k, v in value.items()) + "}"
    return "null" if value is None else str(value)


def check_required(cfg: DictConfig, config_name: str) -> None:
    """Refuse a run without a key it needs, quoting what the YAML says the key is."""
    for key in REQUIRED.get(config_name, ()):
        if cfg.get(key) in (None, ""):
            line = next((l for l in config_text(config_name).splitlines() if l.startswith(f"{key}:")), "")
            what = line.partition("#")[2].strip()
            raise ConfigError(f"{key} is required: set {key}=... ({config_file(config_name)}: {what})")


def resolve_dir(text: str, **job: Any) -> str:
    """A Hydra output-dir string with ``${now:...}`` and ``${hydra.job.*}`` resolved (``job``: num, name, ...)."""
    from hydra.core.utils import setup_globals

    setup_globals()
    return str(OmegaConf.create({"v": text, "hydra": {"job": job}}).v)


def compose_config(config_name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """Compose ``configs/<config_name>.yaml`` with Hydra overrides, validated before any work is done.

    A key the command does not have (also ``+key=V``: no armflow code would read it), a group option that
    does not exist, a value of another type than its default, or one outside ``VALUE_RANGES`` raises
    ``ConfigError`` naming the key and what was expected. ``hydra.run.dir=DIR`` is the same as ``out=DIR``
    (the run dir); a sweep (``a=1,2``) needs ``-m`` on the command line (``armflow.workflows.cli``).
    """
    parsed = parse_overrides(overrides)
    run_dir = None
    for o in parsed:
        if o.is_sweep_override():
            raise ConfigError(f"{o.input_line}: a sweep (several values); add -m (--multirun) to run one job "
                              f"per combination")
        if o.key_or_group == "hydra.run.dir":
            run_dir = resolve_dir(str(o.value()), name=config_name, num=0, override_dirname="")
        elif o.key_or_group.startswith("hydra"):
            extra = " (-m/--multirun only)" if o.key_or_group in HYDRA_DIR_KEYS else ""
            raise ConfigError(f"{o.input_line}: armflow honours only the Hydra keys hydra.run.dir=DIR "
                              f"(= out=DIR), hydra.sweep.dir=DIR and hydra.sweep.subdir=NAME{extra}")
    parsed = [o for o in parsed if not o.key_or_group.startswith("hydra")]
    groups = config_groups(config_name)
    for o in parsed:
        if o.key_or_group in groups:
            _check_group(o, groups)
    baseline = _baseline(config_name, tuple(o.input_line for o in parsed if o.key_or_group in groups))
    for o in parsed:
        if o.key_or_group not in groups:
            _check_key(config_name, o, baseline)
    cfg = _compose(config_name, [o.input_line for o in parsed])
    changed = [o.key_or_group for o in parsed if o.key_or_group not in groups and not o.is_delete()]
    check_values(cfg, config_name, baseline, changed)
    if run_dir is not None:
        if cfg.get("out") and str(cfg.out) != run_dir:
            raise ConfigError(f"out={cfg.out} and hydra.run.dir={run_dir} disagree; set one of them")
        with open_dict(cfg):
            cfg.out = run_dir
    return cfg
