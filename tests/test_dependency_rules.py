"""The package dependency rules (ARCHITECTURE.md), checked two ways:

* statically: every ``import`` statement (including lazy ones inside functions) in each folder;
* dynamically: importing every module of ``control/`` and ``hardware/`` in a fresh interpreter
  must not load ``torch`` or ``armflow.policies`` (catches transitive imports the scan cannot see).
"""
import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# folder -> module prefixes it must never import
FORBIDDEN = {
    "control": ("torch", "armflow.policies"),
    "hardware": ("torch", "armflow.policies"),
    "sim": ("armflow.policies",),
    "data": ("armflow.policies",),
    "policies": ("armflow.sim", "armflow.hardware", "armflow.control"),
    "rewards": ("armflow.sim", "armflow.policies", "armflow.hardware", "armflow.control", "armflow.workflows"),
}


def _imports(path: Path, package: str) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            found.append((node.lineno, mod))
            found += [(node.lineno, f"{mod}.{alias.name}") for alias in node.names]
    return found


def _violations(folder: str) -> list[str]:
    bad = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        package = "armflow." + ".".join(rel.parts[:-1])  # a module's (or __init__'s own) package
        for lineno, mod in _imports(path, package):
            for prefix in FORBIDDEN[folder]:
                if mod == prefix or mod.startswith(prefix + "."):
                    bad.append(f"{path.relative_to(ROOT)}:{lineno} imports {mod}")
    return bad


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_static_import_rules(folder):
    assert _violations(folder) == []


def test_scanner_catches_violations(tmp_path):
    src = tmp_path / "x.py"
    src.write_text("def f():\n    import torch.nn\nfrom ..policies import flow\nfrom armflow.policies.flow import X\n")
    mods = [m for _, m in _imports(src, "armflow.control")]
    assert "torch.nn" in mods and "armflow.policies" in mods and "armflow.policies.flow" in mods


_PROBE = """
import importlib, json, pkgutil, sys
failed = {}
for pkg_name in ("armflow.control", "armflow.hardware"):
    pkg = importlib.import_module(pkg_name)
    for info in pkgutil.walk_packages(pkg.__path__, pkg_name + "."):
        try:
            importlib.import_module(info.name)
        except ImportError as exc:  # an optional vendor SDK that is not installed
            failed[info.name] = str(exc)
loaded = [m for m in sys.modules if m == "torch" or m.startswith(("torch.", "armflow.policies"))]
ours = [m for m in sys.modules if m.startswith(("armflow.control.", "armflow.hardware."))]
print(json.dumps({"loaded": loaded, "failed": failed, "ours": ours}))
"""


def test_robot_side_imports_never_load_torch():
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=300,
                         env={"MUJOCO_GL": "osmesa", "PYOPENGL_PLATFORM": "osmesa", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["loaded"] == [], f"robot-side import pulled in {result['loaded'][:5]}"
    assert {"armflow.control.server", "armflow.control.client", "armflow.hardware.driver"} <= set(result["ours"])
    # optional SDK imports may be missing, but never our own modules
    assert not [m for m, e in result["failed"].items() if "armflow" in e], result["failed"]
