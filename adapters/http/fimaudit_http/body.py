"""Reading an answer's body with a cap on its size after decompression.

The body is read as a stream of raw (still content-encoded) chunks and decompressed here in
pieces of at most ``PIECE`` bytes (``zlib``'s ``max_length``), counting as it goes, so the
memory held for one answer never exceeds the cap plus one piece, whatever the compression
ratio (a gzip bomb stops at the cap). Content codings: identity, gzip / x-gzip and deflate
(zlib-wrapped, or raw as some servers send it), RFC 9110 §8.4.1. :func:`excerpt` keeps the
head and the tail of a long text (servers often echo the request first and put the cause at
the end).
"""

from __future__ import annotations

import zlib

__all__ = ["ACCEPT_ENCODING", "BodyTooLarge", "CorruptBody", "UnsupportedCoding", "excerpt", "read_body"]

PIECE = 1 << 16
ACCEPT_ENCODING = "gzip, deflate"


class BodyTooLarge(Exception):
    """More than ``cap`` bytes (after decompression)."""

    def __init__(self, cap):
        super().__init__(cap)
        self.cap = cap


class CorruptBody(Exception):
    """A compressed body that does not decompress (or ends too soon)."""


class UnsupportedCoding(Exception):
    """A content coding this client did not ask for and cannot decode."""


async def read_body(response, cap, *, cut=False):
    """The decoded body of an ``httpx`` streaming response (a bytearray), at most ``cap``
    bytes. Over the cap: raise :class:`BodyTooLarge`, or with ``cut=True`` stop reading and
    return what was read. Returns ``(body, was_cut)``."""
    coding = response.headers.get("content-encoding", "identity").strip().lower() or "identity"
    decoder = _decoder(coding)
    declared = response.headers.get("content-length", "")
    if coding == "identity" and declared.isdigit() and int(declared) > cap and not cut:
        raise BodyTooLarge(cap)
    body = bytearray()  # grown in place: no second copy of the whole body

    def take(piece):  # False once the cap is reached
        if len(body) + len(piece) > cap:
            if not cut:
                raise BodyTooLarge(cap)
            body.extend(piece[: cap - len(body)])
            return False
        body.extend(piece)
        return True

    async for raw in response.aiter_raw():
        if not all(take(piece) for piece in decoder.feed(raw)):
            return body, True
    if not all(take(piece) for piece in decoder.finish()):
        return body, True
    return body, False


def excerpt(text, head=300, tail=700):
    """``text`` if short, else its first ``head`` and last ``tail`` characters around a note
    of how many were left out."""
    if len(text) <= head + tail:
        return text
    return f"{text[:head]} …[{len(text) - head - tail} characters left out]… {text[-tail:]}"


def _decoder(coding):
    if coding == "identity":
        return _Identity()
    if coding in ("gzip", "x-gzip"):
        return _Inflate(zlib.MAX_WBITS | 16)
    if coding == "deflate":
        return _Inflate(zlib.MAX_WBITS, fallback=-zlib.MAX_WBITS)
    raise UnsupportedCoding(
        f"content coding {coding!r}, which this client cannot decode (it asks for {ACCEPT_ENCODING})"
    )


class _Identity:
    def feed(self, data):
        for lo in range(0, len(data), PIECE):
            yield data[lo : lo + PIECE]

    def finish(self):
        return ()


class _Inflate:
    """zlib decompression in pieces of at most PIECE bytes. With a ``fallback`` (raw deflate
    for ``deflate``), the input is kept until the first output (at most PIECE bytes): if the
    zlib wrapper is refused before then, decoding starts again from the first byte in the
    fallback format."""

    def __init__(self, wbits, fallback=None):
        self.d = zlib.decompressobj(wbits)
        self.fallback = fallback
        self.seen = bytearray() if fallback is not None else None  # input before the first output

    def feed(self, data):
        if self.seen is not None:
            self.seen.extend(data)
        while not self.d.eof:
            try:
                out = self.d.decompress(data, PIECE)
            except zlib.error as err:
                if self.seen is None:
                    raise CorruptBody(f"the compressed body is corrupt ({err})") from None
                self.d, data, self.seen = zlib.decompressobj(self.fallback), bytes(self.seen), None  # raw deflate
                continue
            if out or (self.seen is not None and len(self.seen) > PIECE):
                self.seen = None  # settled (zlib judges its wrapper on the first 2 bytes)
            if out:
                yield out
            data = self.d.unconsumed_tail
            if not data and len(out) < PIECE:  # input used up and nothing pending
                return

    def finish(self):
        yield from self.feed(b"")
        if not self.d.eof:
            raise CorruptBody("the compressed body ends before its compressed stream does (truncated)")
