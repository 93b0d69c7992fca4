"""Frames -> bytes a VLM server reads (PNG or JPEG data URLs) and stable content hashes for caches.

PNG is written with zlib alone (lossless, deterministic, no extra dependency); JPEG goes through OpenCV
(a declared dependency), imported only when asked for.
"""
from __future__ import annotations

import base64
import hashlib
import struct
import zlib

import numpy as np

IMAGE_FORMATS = ("png", "jpeg")


def image_hash(image: np.ndarray) -> str:
    """sha256 of an image's shape, dtype and pixels (hex): the cache key part for one frame."""
    arr = np.ascontiguousarray(image)
    digest = hashlib.sha256(f"{arr.dtype.str}{arr.shape}".encode())
    digest.update(arr.tobytes())
    return digest.hexdigest()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(image: np.ndarray) -> bytes:
    """uint8 (H, W, 3) RGB -> PNG bytes (filter 0 on every row, zlib level 6)."""
    arr = _check_rgb(image)
    height, width, _ = arr.shape
    rows = np.concatenate([np.zeros((height, 1), np.uint8), arr.reshape(height, width * 3)], axis=1)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit, colour type 2 = RGB
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)) + _png_chunk(b"IEND", b""))


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    """uint8 (H, W, 3) RGB -> JPEG bytes at ``quality`` (OpenCV, which wants BGR)."""
    import cv2

    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(_check_rgb(image)[..., ::-1]),
                           [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise ValueError(f"OpenCV could not encode a {image.shape} image as JPEG")
    return buf.tobytes()


def data_url(image: np.ndarray, fmt: str = "png", jpeg_quality: int = 90) -> str:
    """``data:image/<fmt>;base64,...`` for an ``image_url`` content part."""
    if fmt == "png":
        payload, mime = encode_png(image), "image/png"
    elif fmt == "jpeg":
        payload, mime = encode_jpeg(image, jpeg_quality), "image/jpeg"
    else:
        raise ValueError(f"image format {fmt!r}: expected one of {', '.join(IMAGE_FORMATS)}")
    return f"data:{mime};base64,{base64.b64encode(payload).decode('ascii')}"


def _check_rgb(image: np.ndarray) -> np.ndarray:
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"expected a uint8 (H, W, 3) RGB image, got {arr.dtype} {arr.shape}")
    return np.ascontiguousarray(arr)
