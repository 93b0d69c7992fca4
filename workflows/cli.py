"""The ``armflow`` console script: ``armflow <command> [sub] key=value ...`` (Hydra overrides).

Each command has its YAML in ``configs/<config>.yaml`` and a ``main(cfg) -> dict`` in its module.
The registry below is explicit: adding a command means adding one line here.
"""
from __future__ import annotations

import importlib
import sys

# command -> (module, config name). Bench sub-commands are "bench <what>".
COMMANDS: dict[str, tuple[str, str]] = {
    "collect": ("armflow.workflows.collect", "collect"),
    "train": ("armflow.workflows.train", "train"),
    "evaluate": ("armflow.workflows.evaluate", "evaluate"),
    "quickstart": ("armflow.workflows.quickstart", "quickstart"),
    "finetune": ("armflow.workflows.finetune", "finetune"),
    "serve": ("armflow.workflows.serve", "serve"),
    "deploy": ("armflow.workflows.deploy", "deploy"),
    "teleop": ("armflow.workflows.teleop", "teleop"),
    "bench sim": ("armflow.workflows.bench_sim", "bench_sim"),
    "bench inference": ("armflow.workflows.bench_inference", "bench_inference"),
    "bench train": ("armflow.workflows.bench_train", "bench_train"),
    "bench finetune": ("armflow.workflows.bench_finetune", "bench_finetune"),
    "bench bridge": ("armflow.workflows.bench_bridge", "bench_bridge"),
    "bench multimodal": ("armflow.workflows.bench_multimodal", "bench_multimodal"),
}

USAGE = "usage: armflow <command> [key=value ...]\ncommands:\n" + "\n".join(
    f"  armflow {name}" for name in COMMANDS
)


def split_command(argv: list[str]) -> tuple[str, list[str]]:
    """Return (command name, overrides); raise SystemExit with the valid names on a miss."""
    if not argv or argv[0] in ("-h", "--help", "help"):
        raise SystemExit(USAGE)
    name, rest = argv[0], argv[1:]
    if name == "bench":
        if not rest or f"bench {rest[0]}" not in COMMANDS:
            valid = ", ".join(c.split()[1] for c in COMMANDS if c.startswith("bench "))
            got = rest[0] if rest else "(nothing)"
            raise SystemExit(f"armflow bench: unknown benchmark {got!r}; valid: {valid}")
        name, rest = f"bench {rest[0]}", rest[1:]
    if name not in COMMANDS:
        raise SystemExit(f"armflow: unknown command {name!r}; valid: {', '.join(COMMANDS)}")
    return name, rest


def main(argv: list[str] | None = None) -> int:
    from armflow.workflows.common import compose_config, prepare_run_dir

    name, overrides = split_command(list(sys.argv[1:] if argv is None else argv))
    module_name, config_name = COMMANDS[name]
    cfg = compose_config(config_name, overrides)
    prepare_run_dir(cfg, config_name)
    module = importlib.import_module(module_name)
    module.main(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
