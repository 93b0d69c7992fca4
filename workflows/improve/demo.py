"""The assets of ``armflow improve``'s measured demonstration on ``lift`` (used for a skill without a checkpoint or
a detector without a path), each stage cached in ``demo.assets`` (default ``<out>/assets``) / ``<stage>`` so a rerun skips what is done:

1. forward skill: ``demo.forward_demos`` scripted ``lift`` demos -> a flow policy (``demo.train_steps``);
2. reset skill: ``demo.reset_demos`` scripted ``place`` demos (cube carried to a new spot, released; starts as in
   ``TASK_OVERRIDES``: held as forward leaves it, or on the table spread and turned as failed attempts leave it)
   -> a flow policy;
3. detectors: per skill ``demo.detector_episodes`` scripted episodes with both outcomes (half scripted failures,
   success frames held), the served cameras only -> ``armflow reward fit`` success classifiers.
"""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from armflow.workflows.config import compose_config

STATE_KEYS = ["observation.state", "observation.environment_state"]
SKILL_TASKS = {"forward": "lift", "reset": "place"}  # the scripted task whose demos teach each demo skill
# the reset skill also fetches a cube a failed forward attempt left on the table (half its demos start there), and
# its demos go on 10 steps after success (released, rising): the policy learns to stay released, not to re-grasp.
# Its table starts are spread wider than lift's region and turned (+-0.2 m, +-0.8 rad): in the stream a failed
# forward attempt pushes and turns the cube, and cubes left to drift ended out of the workspace (19 of 62 needs-human
# events in the first measured hour); fetching from there takes the expert 45-53 steps, hence 80 steps per demo.
# Its held starts are raised 0-5 cm more (cube at 8-14 cm): the forward skill lifts the cube to 8-14 cm, and a reset skill that only saw
# the pick's 6 cm let go at once, dropping the cube where it was
TASK_OVERRIDES = {"place": {"held_start_prob": 0.5, "table_start_xy_m": [0.2, 0.2], "table_start_yaw_rad": 0.8,
                            "max_episode_steps": 80, "held_extra_lift_m": [0.0, 0.05]}}
HOLD_STEPS = {"place": 10}


def _policy(task: str, demos: int, steps: int, cfg: DictConfig, out: Path) -> str:
    from armflow.workflows import train
    from armflow.workflows.collect import collect_scripted

    ckpt = out / "policy" / "checkpoint"
    if (ckpt / "config.json").exists():
        return str(ckpt)
    dataset = out / "demos"
    if not (dataset / "meta" / "info.json").exists():
        collect_scripted(task, dataset, demos, 0.0, int(cfg.demo.seed), progress=bool(cfg.progress),
                         env_overrides={**dict(cfg.env or {}), **TASK_OVERRIDES.get(task, {})},
                         success_hold_steps=HOLD_STEPS.get(task, 0))
    tcfg = compose_config("train", [f"dataset={dataset}", f"out={out / 'policy'}", f"steps={steps}",
                                    f"seed={cfg.demo.seed}", f"obs_keys=[{','.join(STATE_KEYS)}]",
                                    f"obs_std_floor={cfg.demo.obs_std_floor}"])
    return train.train(tcfg)["checkpoint"]


def _detector(task: str, cfg: DictConfig, out: Path) -> str:
    from armflow.workflows import reward_fit
    from armflow.workflows.collect import collect_scripted

    ckpt = out / "checkpoint"
    if (ckpt / "config.json").exists():
        return str(ckpt)
    dataset = out / "episodes"
    if not (dataset / "meta" / "info.json").exists():
        collect_scripted(task, dataset, int(cfg.demo.detector_episodes), 0.0, int(cfg.demo.seed) + 1000,
                         cameras=list(cfg.cameras), only_success=False, failures=0.5, success_hold_steps=10,
                         progress=bool(cfg.progress),
                         env_overrides={"image_size": int(cfg.image_size), **TASK_OVERRIDES.get(task, {})})
    fcfg = compose_config("reward_fit", [f"dataset={dataset}", f"out={out}", f"cameras=[{','.join(cfg.cameras)}]",
                                         f"seed={cfg.demo.seed}", "progress=false"])
    return reward_fit.main(fcfg)["checkpoint"]


def prepare_assets(cfg: DictConfig) -> DictConfig:
    """Fill every missing skill checkpoint / detector path of ``cfg`` (a copy) with the demonstration's assets."""
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    root = Path(cfg.demo.assets or Path(cfg.out) / "assets")
    for name, skill in cfg.skills.items():
        task = SKILL_TASKS.get(name)
        need = not skill.checkpoint or (skill.detector.backend == "classifier" and not skill.detector.path)
        if need and task is None:
            raise SystemExit(f"armflow improve: skills.{name} has no checkpoint / detector path and the demonstration "
                             f"only builds {sorted(SKILL_TASKS)}; give skills.{name}.checkpoint and .detector.path")
        with open_dict(cfg):
            if not skill.checkpoint:
                demos, steps = ((cfg.demo.forward_demos, cfg.demo.train_steps) if name == "forward" else
                                (cfg.demo.reset_demos, cfg.demo.reset_train_steps))
                skill.checkpoint = _policy(task, int(demos), int(steps), cfg, root / f"{name}_policy")
            if skill.detector.backend == "classifier" and not skill.detector.path:
                skill.detector.path = _detector(task, cfg, root / f"{name}_detector")
    return cfg
