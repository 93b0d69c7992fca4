"""``armflow convert src=PATH dst=PATH``: LeRobot v3 <-> robomimic HDF5, the direction read from the paths."""
from __future__ import annotations

import time
from pathlib import Path

from omegaconf import DictConfig

from armflow.data.layout import INFO_PATH

HDF5_SUFFIXES = (".hdf5", ".h5")


def path_format(path: Path, role: str) -> str:
    """``"lerobot"`` or ``"robomimic"`` for ``path``; a ValueError names the path and what was expected."""
    if path.suffix.lower() in HDF5_SUFFIXES:
        if role == "src" and not path.is_file():
            raise ValueError(f"{role}={path}: no such robomimic HDF5 file")
        return "robomimic"
    if role == "src" and (path / INFO_PATH).is_file():
        return "lerobot"
    if role == "dst" and not (path / INFO_PATH).exists() and not path.is_file():
        return "lerobot"
    want = ("a LeRobot v3 root (a directory with meta/info.json)" if role == "src"
            else "a new LeRobot root (a directory without meta/info.json)")
    raise ValueError(f"{role}={path}: expected {want} or a robomimic file ending in "
                     f"{' or '.join(HDF5_SUFFIXES)}")


def main(cfg: DictConfig) -> dict:
    from armflow.data.robomimic import export_robomimic, import_robomimic
    from armflow.workflows.common import write_json

    for key in ("src", "dst"):
        if not cfg.get(key):
            raise SystemExit(f"armflow convert: {key} is required: set {key}=PATH (configs/convert.yaml)")
    src, dst = Path(cfg.src), Path(cfg.dst)
    kinds = (path_format(src, "src"), path_format(dst, "dst"))
    t0 = time.monotonic()
    if kinds == ("lerobot", "robomimic"):
        export_robomimic(src, dst, valid_ratio=float(cfg.valid_ratio), seed=int(cfg.seed), progress=True)
    elif kinds == ("robomimic", "lerobot"):
        import_robomimic(src, dst, fps=cfg.fps, video_codec=str(cfg.video_codec), progress=True)
    else:
        raise ValueError(f"src={src} and dst={dst} are both {kinds[0]}: convert goes between LeRobot and robomimic")
    summary = {"src": str(src), "dst": str(dst), "from": kinds[0], "to": kinds[1],
               "wall_time_s": time.monotonic() - t0}
    write_json(Path(cfg.out) / "summary.json", summary)
    print(f"[convert] {kinds[0]} {src} -> {kinds[1]} {dst}")
    return summary
