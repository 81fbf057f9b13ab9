"""Thumbnails of image inputs and their directions as PNG data URIs, with no imaging library.

The encoder writes the PNG format (ISO/IEC 15948, W3C PNG 2nd edition): the signature, an
IHDR chunk (8-bit greyscale or RGB, no interlace), one IDAT chunk holding the zlib-deflated
scanlines, each preceded by filter type 0 (none), and IEND; every chunk carries its CRC-32.

An input is scaled to [0, 255] between its own minimum and maximum (greyscale; a
(3, H, W) input in colour, other channel counts averaged). A direction is drawn diverging
around 0, scaled by its largest magnitude: red positive, blue negative, white 0; of a
multi-channel direction the channel with the largest entry is drawn.
"""

from __future__ import annotations

import base64
import struct
import zlib

import numpy as np


def _chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(pixels):
    """PNG bytes of a uint8 array (H, W) greyscale or (H, W, 3) RGB."""
    a = np.ascontiguousarray(pixels, dtype=np.uint8)
    h, w = a.shape[:2]
    colour = 2 if a.ndim == 3 else 0
    raw = b"".join(b"\x00" + a[i].tobytes() for i in range(h))
    header = struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw, 9)) + _chunk(b"IEND", b"")
    )


def _as_image(values, shape):
    """``values`` as a float64 array of ``shape`` (2 or 3 dims), or None when they are not numbers of that shape."""
    try:
        a = np.asarray(values, dtype=np.float64).reshape(shape)
    except (TypeError, ValueError):
        return None
    if a.size == 0 or a.ndim not in (2, 3):
        return None
    return np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)


def input_pixels(values, shape):
    """uint8 pixels of an input (rule in the module docstring), or None."""
    a = _as_image(values, shape)
    if a is None:
        return None
    if a.ndim == 3:
        a = np.moveaxis(a, 0, -1) if a.shape[0] == 3 else a.mean(axis=0)
    lo, hi = a.min(), a.max()
    return np.round(255 * (a - lo) / ((hi - lo) or 1.0)).astype(np.uint8)


def direction_pixels(values, shape):
    """uint8 RGB pixels of a direction, diverging around 0 (rule in the module docstring), or None."""
    a = _as_image(values, shape)
    if a is None:
        return None
    if a.ndim == 3:
        a = a[int(np.argmax(np.abs(a).reshape(a.shape[0], -1).max(axis=1)))]
    v = a / (np.max(np.abs(a)) or 1.0)
    rgb = np.stack([1 - np.maximum(-v, 0), 1 - np.abs(v), 1 - np.maximum(v, 0)], axis=-1)
    return np.round(255 * rgb).astype(np.uint8)


def data_uri(pixels):
    """A ``data:image/png;base64,…`` URI of the pixels ("" for None)."""
    if pixels is None:
        return ""
    return "data:image/png;base64," + base64.b64encode(encode_png(pixels)).decode("ascii")
