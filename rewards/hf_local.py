"""Loading Hugging Face models from local directories only (the HF VLM and embedding backends share it).

armflow never downloads weights: a reward model is a directory the user put on disk (``save_pretrained``
output or a snapshot they copied). Anything else -- a hub id such as ``"openai/clip-vit-base-patch32"``, a
missing directory, a directory without ``config.json`` or weights -- raises ``FileNotFoundError`` naming
the path, before transformers is asked (its own errors talk about the hub and hide the path).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

WEIGHT_SUFFIXES = (".safetensors", ".bin")


def require_local_dir(path: str | os.PathLike, what: str) -> Path:
    """``path`` as a resolved local directory holding ``config.json`` and weights; raises naming it."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{what}: model path {str(path)!r} is not a local directory "
                                f"(armflow loads local directories only, never hub ids)")
    if not (root / "config.json").is_file():
        raise FileNotFoundError(f"{what}: {root / 'config.json'} is missing (expected save_pretrained output)")
    if not weight_files(root):
        raise FileNotFoundError(f"{what}: no weights (*.safetensors or *.bin) in {root}")
    return root.resolve()


def weight_files(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)


def fingerprint(root: Path) -> str:
    """12 hex chars over config.json's bytes and each weight file's name and size.

    Sizes, not contents: hashing several GB of weights at every start-up is too slow, and a retrained
    model of the same architecture changes its config (or the user names the directory anew).
    """
    digest = hashlib.sha256((root / "config.json").read_bytes())
    for path in weight_files(root):
        digest.update(f"{path.name}:{path.stat().st_size}".encode())
    return digest.hexdigest()[:12]


def from_local(loader: Any, root: Path, what: str, **kwargs: Any) -> Any:
    """``loader.from_pretrained(root, local_files_only=True)``; its errors name the directory (a missing file
    as FileNotFoundError, a model of the wrong kind, e.g. CLIP given to hf_vlm, as ValueError)."""
    name = getattr(loader, "__name__", loader)
    try:
        return loader.from_pretrained(str(root), local_files_only=True, **kwargs)
    except OSError as err:
        raise FileNotFoundError(f"{what}: could not load {name} from {root}: {err}") from err
    except ValueError as err:
        raise ValueError(f"{what}: {name} cannot load the model in {root}: {err}") from err


def dtype_kwargs(dtype: str | None) -> dict[str, Any]:
    """The from_pretrained keyword for a dtype name: ``dtype`` in transformers 5, ``torch_dtype`` before."""
    if dtype is None:
        return {}
    import torch
    import transformers

    if not isinstance(getattr(torch, dtype, None), torch.dtype):
        raise ValueError(f"dtype={dtype!r}: expected a torch dtype name such as float32, bfloat16, float16")
    key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    return {key: getattr(torch, dtype)}


def to_pil(image: np.ndarray):
    """uint8 (H, W, 3) -> PIL image: processors read PIL unambiguously (a tiny numpy frame such as
    (3, 3, 3) could be taken as channels-first)."""
    from PIL import Image

    return Image.fromarray(np.ascontiguousarray(image))  # uint8 (H, W, 3) -> RGB
