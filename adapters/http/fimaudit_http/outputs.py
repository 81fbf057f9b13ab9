"""The JSON of a request, the rows of outputs read from its answer, and the message of an
error answer."""

from __future__ import annotations

import json

import numpy as np

from fimaudit.errors import InvalidModelOutputError

from .protocols import HINT, UnreadableAnswer, seen

__all__ = ["json_body", "read_outputs", "server_message"]

MESSAGE_KEYS = ("error", "message", "detail", "error_message", "errors", "msg")  # "msg": FastAPI's detail list
MESSAGE_CHARS = 300


def json_body(payload):
    """The request body, as httpx's ``json=`` writes it (UTF-8, compact, no NaN)."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def read_outputs(decode, data, m, where):
    """``decode(data)`` as an (m, C) float64 array, or InvalidModelOutputError naming ``where``."""
    try:
        rows = decode(data)
    except UnreadableAnswer as err:  # a protocol's decoder: its message says what the answer holds
        raise InvalidModelOutputError(f"malformed response from {where}: {err}") from None
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
            f"malformed response from {where}: a batch of {m} inputs was answered with outputs of shape {shape}; "
            f"expected ({m}, C). The answer is {seen(data)}; {HINT}"
        )
    return arr


def server_message(body):
    """The message a JSON error answer carries (``error``, ``message``, ``detail``, ...; nested as
    ``{"error": {"message": ...}}`` or in a list of errors), at most ``MESSAGE_CHARS`` characters,
    or None."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        return None
    for _ in range(3):  # {"error": {"message": ...}} and lists of errors
        if isinstance(payload, list) and payload:
            payload = payload[0]
        if not isinstance(payload, dict):
            break
        found = next((payload[k] for k in MESSAGE_KEYS if k in payload), None)
        if isinstance(found, str):
            return found[:MESSAGE_CHARS]
        payload = found
    return None
