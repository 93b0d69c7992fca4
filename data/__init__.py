"""armflow.data: LeRobot v3.0 datasets (writer, reader, training windows) and robomimic I/O.

`armflow.data` itself imports only numpy/pyarrow/av so the writer runs on a robot PC;
`WindowDataset` (torch) and the robomimic functions (h5py) load on first access.
"""

from armflow.data.errors import DatasetError
from armflow.data.lerobot import LeRobotWriter
from armflow.data.padding import pad_window
from armflow.data.reader import LeRobotDataset
from armflow.data.stats import aggregate_stats, compute_image_stats, compute_stats
from armflow.data.validate import validate_lerobot_v3

_LAZY = {  # name -> module that defines it (imports torch or h5py)
    "WindowDataset": "armflow.data.window",
    "import_robomimic": "armflow.data.robomimic",
    "export_robomimic": "armflow.data.robomimic",
}

__all__ = ["DatasetError", "LeRobotDataset", "LeRobotWriter", "WindowDataset", "aggregate_stats",
           "compute_image_stats", "compute_stats", "export_robomimic", "import_robomimic", "pad_window",
           "validate_lerobot_v3"]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'armflow.data' has no attribute {name!r}")
