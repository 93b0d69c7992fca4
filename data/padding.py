"""Window extraction with edge padding (numpy only; shared by WindowDataset and its tests)."""

from __future__ import annotations

import numpy as np


def pad_window(values: np.ndarray, start: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows `[start, start + length)` of one episode's `values (L, ...)`, edge-padded.

    Indices before 0 repeat the first row, indices past `L - 1` repeat the last row.
    Returns `(window (length, ...), is_pad (length,) bool)`, `is_pad` True on padded rows.
    """
    n_rows = len(values)
    if n_rows == 0:
        raise ValueError("pad_window: empty episode")
    if length <= 0:
        raise ValueError(f"pad_window: length must be positive, got {length}")
    idx = np.arange(start, start + length)
    is_pad = (idx < 0) | (idx >= n_rows)
    return values[np.clip(idx, 0, n_rows - 1)], is_pad
