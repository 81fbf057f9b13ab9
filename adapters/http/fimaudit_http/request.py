"""One POST and its answer under one deadline.

``timeout`` bounds the whole attempt — waiting for a pooled connection, connecting, sending
and reading every byte of the answer — not each network read, so a server that trickles
its answer cannot hold the client past it (``asyncio.wait_for`` around the attempt; the
connection is dropped when the deadline passes). The body is read through
:func:`~fimaudit_http.body.read_body`: a successful answer over the size cap raises
:class:`~fimaudit_http.body.BodyTooLarge`, an error answer's body is read up to
``ERROR_BODY_CAP`` bytes and cut there.
"""

from __future__ import annotations

import asyncio
from typing import NamedTuple

import httpx

from .body import CorruptBody, read_body

__all__ = ["ERROR_BODY_CAP", "Answer", "exchange"]

ERROR_BODY_CAP = 1 << 20


class Answer(NamedTuple):
    status: int | None  # None: no answer (timeout, transport error, corrupt body)
    headers: httpx.Headers | None
    body: bytes | bytearray
    cut: bool  # the body was longer than what was read
    failure: str | None  # why there is no usable answer


async def exchange(client, url, content, headers, timeout, cap):
    """POST ``content`` (bytes) and read the answer, all within ``timeout`` seconds."""
    try:
        return await asyncio.wait_for(_exchange(client, url, content, headers, cap), timeout)
    except asyncio.TimeoutError:
        return Answer(None, None, b"", False, f"no complete answer within timeout={timeout:g} s")
    except httpx.TransportError as err:
        return Answer(None, None, b"", False, type(err).__name__)
    except CorruptBody as err:
        return Answer(None, None, b"", False, str(err))


async def _exchange(client, url, content, headers, cap):
    async with client.stream("POST", url, content=content, headers=headers) as resp:
        ok = 200 <= resp.status_code < 300
        body, cut = await read_body(resp, cap if ok else min(cap, ERROR_BODY_CAP), cut=not ok)
        return Answer(resp.status_code, resp.headers, body, cut, None)
