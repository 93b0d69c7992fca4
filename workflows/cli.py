"""The ``armflow`` console script: ``armflow <command> [sub] [flags] key=value ...`` (Hydra overrides).

Each command has its YAML in ``configs/<config>.yaml`` and a ``main(cfg) -> dict`` in its module.
The registry below is explicit: adding a command means adding one line here. The flags are Hydra's:
``--help``, ``--cfg job [--resolve]``, ``-m``/``--multirun`` (comma sweeps, jobs run one after another
into ``<sweep dir>/<n>``); ``hydra.run.dir``/``hydra.sweep.dir``/``hydra.sweep.subdir`` choose the dirs.

Bad input is one paragraph on stderr naming the key, value or file and what was expected, never a
traceback (``ARMFLOW_DEBUG=1`` prints it too): exit 2 for a wrong command line (checked before any
work), 1 when a command fails on its inputs (a dataset that is not one, a checkpoint without config.json).
"""
from __future__ import annotations

import importlib
import itertools
import os
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from omegaconf import DictConfig

# command -> (module, config name). Sub-commands are "<group> <what>" (GROUPS: bench, reward).
COMMANDS: dict[str, tuple[str, str]] = {
    "collect": ("armflow.workflows.collect", "collect"),
    "train": ("armflow.workflows.train", "train"),
    "evaluate": ("armflow.workflows.evaluate", "evaluate"),
    "quickstart": ("armflow.workflows.quickstart", "quickstart"),
    "finetune": ("armflow.workflows.finetune", "finetune"),
    "serve": ("armflow.workflows.serve", "serve"),
    "deploy": ("armflow.workflows.deploy", "deploy"),
    "teleop": ("armflow.workflows.teleop", "teleop"),
    "convert": ("armflow.workflows.convert", "convert"),
    "bench sim": ("armflow.workflows.bench_sim", "bench_sim"),
    "bench inference": ("armflow.workflows.bench_inference", "bench_inference"),
    "bench train": ("armflow.workflows.bench_train", "bench_train"),
    "bench finetune": ("armflow.workflows.bench_finetune", "bench_finetune"),
    "bench bridge": ("armflow.workflows.bench_bridge", "bench_bridge"),
    "bench multimodal": ("armflow.workflows.bench_multimodal", "bench_multimodal"),
    "bench vision": ("armflow.workflows.bench_vision", "bench_vision"),
    "bench realtime": ("armflow.workflows.bench_realtime", "bench_realtime"),
    "reward serve": ("armflow.workflows.reward_serve", "reward_serve"),
    "bench evaluate": ("armflow.workflows.bench_evaluate", "bench_evaluate"),
    "reward fit": ("armflow.workflows.reward_fit", "reward_fit"),
    "reward eval": ("armflow.workflows.reward_eval", "reward_eval"),
    "bench reward": ("armflow.workflows.bench_reward", "bench_reward"),
    "critic": ("armflow.workflows.critic", "critic"),
    "dynamics": ("armflow.workflows.dynamics", "dynamics"),
    "bench steering": ("armflow.workflows.bench_steering", "bench_steering"),
    "bench vgps": ("armflow.workflows.bench_vgps", "bench_vgps"),
    "bench cfg": ("armflow.workflows.bench_cfg", "bench_cfg"),
    "improve": ("armflow.workflows.improve", "improve"),
}
# commands with sub-commands ("bench sim", "reward fit"): group -> what a sub-command is called in errors
GROUPS = {"bench": "benchmark", "reward": "reward command"}
FLAGS = "-h/--help, --cfg job, --resolve, -m/--multirun"


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions whose message is for the user (a file, key or value and what was expected): the data,
    policy, limits and driver errors all derive from these. Anything else is a bug and keeps its traceback."""
    from armflow.data.errors import DatasetError

    return (DatasetError, ValueError, KeyError, TypeError, OSError, RuntimeError)


def describe(config_name: str) -> str:
    """A command's one-line description: the first sentence of its YAML's header comment."""
    from armflow.workflows.config import config_text

    header = []
    for line in config_text(config_name).splitlines():
        if not line.startswith("#"):
            break
        header.append(line.lstrip("# ").strip())
    text = " ".join(header).split(": ", 1)[-1].split(". ")[0].rstrip(".")
    cut = text.rfind(", ", 0, 90)  # a long first sentence keeps its first clause
    return text[:cut] if len(text) > 100 and cut > 0 else text


def usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [f"  armflow {name:<{width}}  {describe(cfg)}" for name, (_, cfg) in COMMANDS.items()]
    return ("usage: armflow <command> [flags] [key=value ...]\n\ncommands:\n" + "\n".join(lines) +
            f"\n\nflags: {FLAGS}\n`armflow <command> --help` lists a command's config keys and their defaults.")


def split_command(argv: list[str]) -> tuple[str, list[str]]:
    """Return (command name, the rest); a miss raises ``ConfigError`` listing the valid names."""
    from armflow.configs import ConfigError, did_you_mean

    name, rest = argv[0], argv[1:]
    if name in GROUPS:
        if not rest or f"{name} {rest[0]}" not in COMMANDS:
            valid = ", ".join(c.split()[1] for c in COMMANDS if c.startswith(f"{name} "))
            got = rest[0] if rest else "(nothing)"
            raise ConfigError(f"unknown {GROUPS[name]} {got!r}; valid: {valid}")
        name, rest = f"{name} {rest[0]}", rest[1:]
    if name not in COMMANDS:
        raise ConfigError(f"unknown command {name!r}.{did_you_mean(name, COMMANDS, n=1)} Valid: {', '.join(COMMANDS)}")
    return name, rest


@dataclass
class Flags:
    help: bool = False
    cfg: str | None = None  # "job": print the composed config and exit
    resolve: bool = False
    multirun: bool = False
    overrides: list[str] = field(default_factory=list)


def parse_flags(args: list[str]) -> Flags:
    """Split Hydra's flags from the overrides; an unknown flag is a usage error."""
    from armflow.workflows.config import ConfigError

    flags, it = Flags(), iter(args)
    for arg in it:
        if arg in ("-h", "--help"):
            flags.help = True
        elif arg in ("-m", "--multirun"):
            flags.multirun = True
        elif arg == "--resolve":
            flags.resolve = True
        elif arg in ("-c", "--cfg") or arg.startswith("--cfg="):
            flags.cfg = arg.split("=", 1)[1] if "=" in arg else next(it, None)
            if flags.cfg != "job":
                raise ConfigError(f"--cfg {flags.cfg or ''}: armflow prints the job config only (--cfg job)")
        elif arg.startswith("-"):
            raise ConfigError(f"unknown flag {arg!r}; valid flags: {FLAGS}")
        else:
            flags.overrides.append(arg)
    return flags


def command_help(name: str, overrides: list[str]) -> str:
    """``armflow <cmd> --help``: its description, config groups and every key with its default and comment."""
    from armflow.workflows.config import config_groups, config_text, group_options

    config_name = COMMANDS[name][1]
    groups = dict(config_groups(config_name))
    for text in overrides:  # `armflow train policy=diffusion --help` shows the diffusion keys
        key, _, value = text.partition("=")
        if key in groups and value in group_options(key):
            groups[key] = value
    parts = [f"armflow {name}: {describe(config_name)}",
             f"usage: armflow {name} [{FLAGS}] [key=value ...]"]
    if groups:
        parts.append("config groups (group=option):\n" + "\n".join(
            f"  {g}: {', '.join(group_options(g))} (default {groups[g]})" for g in groups))
    parts.append(f"config keys with their defaults (configs/{config_name}.yaml; override with key=value):\n"
                 + config_text(config_name).rstrip())
    for group, option in groups.items():
        parts.append(f"{group}={option} (configs/{group}/{option}.yaml; override with {group}.key=value):\n"
                     + config_text(f"{group}/{option}").rstrip())
    parts.append("Hydra: -m key=a,b runs every combination in <hydra.sweep.dir>/<n> (default "
                 f"runs/{config_name}/multirun/<time>/<n>); out=DIR (= hydra.run.dir=DIR) is the run dir.")
    return "\n\n".join(parts)


def plan_jobs(config_name: str, flags: Flags) -> list[tuple[list[str], DictConfig]]:
    """Every job's overrides and composed config, all validated before any job runs.

    Without ``-m`` one job; with it the cartesian product of the comma sweeps, each job's ``out`` set to
    ``<sweep dir>/<subdir>`` (``hydra.sweep.dir``, else ``out=``, else ``runs/<config>/multirun/<time>``;
    subdir ``hydra.sweep.subdir``, default the job number).
    """
    from armflow.workflows.config import ConfigError, parse_overrides, resolve_dir

    if not flags.multirun:
        return [(flags.overrides, compose_job(config_name, flags.overrides, flags))]
    axes, dirs = [], {}
    for o in parse_overrides(flags.overrides):
        if o.key_or_group in ("hydra.sweep.dir", "hydra.sweep.subdir", "out"):
            if o.is_sweep_override():
                raise ConfigError(f"{o.input_line}: the output dir cannot be swept; each job gets <dir>/<n>")
            dirs[o.key_or_group] = str(o.value()) if o.value() is not None else None
        elif o.key_or_group == "hydra.run.dir":
            raise ConfigError(f"{o.input_line}: with -m the jobs write under hydra.sweep.dir=DIR (or out=DIR)")
        elif o.is_sweep_override():
            if not o.is_discrete_sweep():
                raise ConfigError(f"{o.input_line}: only comma lists and range(...) sweeps are supported")
            axes.append([f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()])
        else:
            axes.append([o.input_line])
    if dirs.get("hydra.sweep.dir") and dirs.get("out") and dirs["hydra.sweep.dir"] != dirs["out"]:
        raise ConfigError(f"out={dirs['out']} and hydra.sweep.dir={dirs['hydra.sweep.dir']} disagree; set one")
    from datetime import datetime

    default = f"runs/{config_name}/multirun/{datetime.now():%Y%m%d-%H%M%S}"
    sweep_dir = resolve_dir(dirs.get("hydra.sweep.dir") or dirs.get("out") or default, name=config_name)
    jobs = []
    for num, combo in enumerate(itertools.product(*axes)):
        subdir = resolve_dir(dirs.get("hydra.sweep.subdir") or "${hydra.job.num}", num=num, name=config_name,
                             override_dirname=",".join(combo))
        job_overrides = [*combo, f"out={Path(sweep_dir) / subdir}"]
        jobs.append((list(combo), compose_job(config_name, job_overrides, flags)))
    return jobs


def compose_job(config_name: str, overrides: list[str], flags: Flags) -> DictConfig:
    """One job's validated config (``--cfg job`` may print a config that still lacks a required key)."""
    from armflow.workflows.config import check_required, compose_config

    cfg = compose_config(config_name, overrides)
    if not flags.cfg:
        check_required(cfg, config_name)
    return cfg


def run(argv: list[str]) -> int:
    """Parse, validate every job, then run them; returns the exit code (errors raise)."""
    from omegaconf import OmegaConf

    from armflow.workflows.common import prepare_run_dir

    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    name, rest = split_command(argv)
    module_name, config_name = COMMANDS[name]
    flags = parse_flags(rest)
    if flags.help:
        print(command_help(name, flags.overrides))
        return 0
    jobs = plan_jobs(config_name, flags)
    if flags.cfg:
        for num, (overrides, cfg) in enumerate(jobs):
            if flags.multirun:
                print(f"# job {num}: {' '.join(overrides)}")
            print(OmegaConf.to_yaml(cfg, resolve=flags.resolve), end="")
        return 0
    module = importlib.import_module(module_name)
    if flags.multirun:
        print(f"[armflow] launching {len(jobs)} jobs of `armflow {name}` one after another", flush=True)
    for num, (overrides, cfg) in enumerate(jobs):
        prepare_run_dir(cfg, config_name, overrides)
        if flags.multirun:
            print(f"[armflow] #{num} : {' '.join(overrides)} -> {cfg.out}", flush=True)
        module.main(cfg)
    return 0


def error_message(exc: BaseException) -> str:
    """The user-facing text of an exception: its message, without the KeyError quotes."""
    if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        return exc.args[0]
    return str(exc) or type(exc).__name__


def classify(exc: BaseException, command: str) -> tuple[int, str] | None:
    """(exit code, message) for an error meant for the user; None for a bug (it keeps its traceback)."""
    from armflow.workflows.config import ConfigError

    if isinstance(exc, SystemExit):  # workflows raise SystemExit("message") for a missing or wrong setting
        return (2, exc.code.removeprefix(f"{command}: ")) if isinstance(exc.code, str) else None
    if isinstance(exc, ConfigError):
        return 2, error_message(exc)
    if isinstance(exc, user_errors()):
        return 1, f"{type(exc).__name__}: {error_message(exc)}"
    return None


def main(argv: list[str] | None = None) -> int:
    """The console entry: run the command; report a bad input as one paragraph and an exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = "armflow " + (" ".join(argv[:2]) if argv[:1] and argv[0] in GROUPS else argv[0]) if argv else "armflow"
    debug = os.environ.get("ARMFLOW_DEBUG", "") not in ("", "0")
    try:
        return run(argv)
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return 130
    except BaseException as exc:
        report = classify(exc, command)
        if report is None:
            raise
        if debug:
            traceback.print_exception(exc)
        hint = "" if debug else " (ARMFLOW_DEBUG=1 shows the traceback)"
        print(f"{command}: error: {report[1]}{hint}", file=sys.stderr)
        return report[0]


if __name__ == "__main__":
    sys.exit(main())
