"""The JSON of a request and the rows of outputs read from its answer."""

from __future__ import annotations

import json

import numpy as np

from fimaudit.errors import InvalidModelOutputError

__all__ = ["json_body", "read_outputs"]


def json_body(payload):
    """The request body, as httpx's ``json=`` writes it (UTF-8, compact, no NaN)."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def read_outputs(decode, data, m, where):
    """``decode(data)`` as an (m, C) float64 array, or InvalidModelOutputError naming ``where``."""
    try:
        rows = decode(data)
    except Exception as err:  # noqa: BLE001 (a hostile answer can make decode= fail in any way)
        raise InvalidModelOutputError(
            f"malformed response from {where}: decode() failed with {type(err).__name__}: {err}; "
            "pass decode= to read the outputs from its JSON"
        ) from None
    try:
        arr = np.asarray(rows, dtype=np.float64)
    except (ValueError, TypeError, OverflowError):
        arr = None
    if arr is None or arr.ndim != 2 or arr.shape[0] != m:
        shape = None if arr is None else arr.shape
        raise InvalidModelOutputError(
            f"{where} answered a batch of {m} inputs with outputs of shape {shape}; expected ({m}, C)"
        )
    return arr
