"""Up-front checks of HTTPModel's arguments: each bad value raises InvalidArgumentError
naming the argument and what it accepts. Messages never echo a URL's credentials or a
header's value."""

from __future__ import annotations

import math
import numbers
import re
import sys
import warnings
from collections.abc import Mapping
from urllib.parse import urlsplit

from fimaudit.errors import InvalidArgumentError

from .protocols import open_inference, protocol
from .redact import Redactor

__all__ = ["check_client", "check_headers", "check_url", "client_secrets", "count", "preset", "rows_cap", "seconds"]

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # a header name, RFC 9110 §5.6.2


def check_url(url):
    if not isinstance(url, str):
        raise InvalidArgumentError(f"url must be a string such as 'https://host/predict', got {type(url).__name__}")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises on a malformed port)
    except ValueError:
        raise InvalidArgumentError("url is not a valid URL: write it as 'https://host[:port]/path'") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise InvalidArgumentError(f"url must be an http:// or https:// URL with a host, got {Redactor(url).url!r}")
    return url


def seconds(name, value, *, positive=False, unit="seconds"):
    """A finite number (of ``unit``), > 0 with ``positive`` else >= 0."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (positive and value == 0):
        need = "> 0" if positive else ">= 0"
        raise InvalidArgumentError(f"{name} must be a finite number of {unit} {need}, got {value!r}")
    return float(value)


def count(name, value, *, least=0, none=False):
    """An integer >= ``least`` (or None when ``none``)."""
    if value is None and none:
        return None
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < least:
        extra = " or None" if none else ""
        raise InvalidArgumentError(f"{name} must be an integer >= {least}{extra}, got {value!r}")
    return int(value)


def check_headers(headers):
    """A str → str mapping of valid header names to ASCII values without line breaks."""
    if headers is None:
        return {}
    if not isinstance(headers, Mapping):
        raise InvalidArgumentError(f"headers must be a mapping of str to str, got {type(headers).__name__}")
    out = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise InvalidArgumentError(
                f"header name {name!r} is not a valid HTTP header name (letters, digits and !#$%&'*+-.^_`|~)"
            )
        if not isinstance(value, str):
            raise InvalidArgumentError(f"the value of header {name!r} must be a str, got {type(value).__name__}")
        if any(c in value for c in "\r\n\0") or not value.isascii():
            raise InvalidArgumentError(
                f"the value of header {name!r} contains a line break, NUL or non-ASCII character: remove it"
            )
        out[name] = value
    return out


def rows_cap(max_rows_sent, budget):
    """``max_rows_sent``, or the deprecated ``budget=`` (warned) that it replaces."""
    if budget is None:
        return max_rows_sent
    if max_rows_sent is not None:
        raise InvalidArgumentError("pass max_rows_sent= only; budget= is its deprecated former name")
    warnings.warn(
        "HTTPModel(budget=) is deprecated and will be removed: pass max_rows_sent= (rows sent over the "
        "model's life); budget= of fisher_norm and plan counts calls per input",
        DeprecationWarning,
        stacklevel=caller_level(),
    )
    return budget


def caller_level():
    """The stack level of the first frame outside fimaudit and its plugins."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__", "").split(".")[0] in ("fimaudit", "fimaudit_http"):
        frame, level = frame.f_back, level + 1
    return level


def preset(spec, input_name, output_name):
    """The :class:`~fimaudit_http.protocols.Protocol` named by ``protocol=`` (with the Open
    Inference Protocol's tensor names, if given)."""
    chosen = protocol(spec)
    if chosen is None:
        raise InvalidArgumentError(
            "protocol must be one of 'default', 'open-inference' (or 'kserve-v2', 'triton'), 'kserve-v1' "
            f"(or 'tf-serving'), 'mlflow', got {spec!r}; pass encode=/decode= for another format"
        )
    if input_name is None and output_name is None:
        return chosen
    if chosen.name != "open-inference":
        raise InvalidArgumentError("input_name= and output_name= are options of protocol='open-inference'")
    for name, value in (("input_name", input_name), ("output_name", output_name)):
        if value is not None and not (isinstance(value, str) and value):
            raise InvalidArgumentError(f"{name} must be a non-empty string (a tensor's name), got {value!r}")
    return open_inference(input_name or "input-0", output_name)


def client_secrets(client):
    """The header values a caller's client sends by itself (its default headers, Basic auth)."""
    if client is None:
        return {}
    found = dict(client.headers.items())
    auth = getattr(client.auth, "_auth_header", None)  # httpx.BasicAuth keeps its header here
    if isinstance(auth, str):
        found["Authorization"] = auth
    return found


def check_client(client):
    """None, or an ``httpx.AsyncClient`` the caller made (and closes)."""
    if client is None:
        return None
    import httpx

    if not isinstance(client, httpx.AsyncClient) or client.is_closed:
        raise InvalidArgumentError(
            "client must be an open httpx.AsyncClient (with your auth, proxies, certificates), "
            f"got {type(client).__name__}"
        )
    return client
