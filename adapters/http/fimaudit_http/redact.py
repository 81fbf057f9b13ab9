"""Credentials kept out of every text the HTTP plugin shows: error messages, the request log
and ``repr``.

The secrets are the URL's userinfo (``https://user:pass@host``, also as the Basic
credentials sent for it), the values of its query string (``?key=...``; a bare ``?token``
counts as a value) and the value of every header except a few standard, non-credential
ones (``Content-Type``, ``Accept``, ...); for
``"<scheme> <credentials>"`` header values the credentials are a secret on their own, and a
``Basic`` credential's decoded ``user:password`` too. A service may echo a secret back in
another spelling, so each is also matched percent-encoded (RFC 3986 §2.1), with ``+`` for
spaces, JSON-escaped, HTML-escaped and as Python's ``repr`` writes it. Strings shorter than
``MIN_SECRET`` characters are not treated as secrets (they would blank out digits of every
message). :class:`Redactor` is the one place that decides what is shown.
"""

from __future__ import annotations

import base64
import binascii
import html
import json
import re
from urllib.parse import parse_qsl, quote, quote_plus, unquote, unquote_plus, urlsplit

__all__ = ["MASK", "Redactor"]

MASK = "***"
MIN_SECRET = 4
# standard headers that never carry a credential; every other header value is a secret
PUBLIC_HEADERS = frozenset(
    ["accept", "accept-encoding", "accept-language", "cache-control", "connection", "content-type", "user-agent"]
)


class Redactor:
    """``Redactor(url, headers)(text)`` is ``text`` with every secret of ``url`` and
    ``headers`` replaced by ``MASK``; ``.url`` is the URL as it may be shown."""

    def __init__(self, url, headers=None):
        secrets = set()
        parts = _split(url)
        if parts is not None:
            secrets.update(_url_secrets(parts))
        for name, value in (headers or {}).items():
            if str(name).lower() not in PUBLIC_HEADERS:
                secrets.update(_header_secrets(str(value)))
        forms = {form for s in secrets for form in _spellings(s)}
        forms = sorted((f for f in forms if len(f) >= MIN_SECRET), key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, forms))) if forms else None
        self.longest = len(forms[0]) if forms else 0  # a text cut short may end in a secret's head
        self.url = self(_shown_url(parts)) if parts is not None else "<an unparsable URL>"

    def __call__(self, text) -> str:
        text = text if isinstance(text, str) else str(text)
        # again until none is left: a mask next to a secret's head could spell one; every secret
        # is longer than the mask, so each pass shortens the text and this ends
        while self._pattern is not None and self._pattern.search(text):
            text = self._pattern.sub(MASK, text)
        return text

    def cut(self, text) -> str:
        """A text that was cut short, redacted, without its last characters: a secret cut in
        two by the cut would not be recognised."""
        text = self(text)
        return text[: max(0, len(text) - self.longest)]

    def scrub(self, err):
        """Redact an exception's message in place (its ``args``) and drop its chained causes,
        whose messages could hold a secret; returns ``err``."""
        err.args = tuple(self(a) if isinstance(a, str) else a for a in err.args)
        err.__cause__ = None
        err.__suppress_context__ = True
        return err


def _split(url):
    try:
        return urlsplit(url)
    except (ValueError, TypeError, AttributeError):
        return None


def _url_secrets(parts):
    out = set()
    netloc = parts.netloc
    if "@" in netloc:
        userinfo = netloc.rpartition("@")[0]
        out.add(userinfo)
        out.update(userinfo.split(":", 1))
        user, _, password = userinfo.partition(":")
        plain = f"{unquote(user)}:{unquote(password)}".encode()
        out.add(base64.b64encode(plain).decode())  # the Basic credentials the client sends for it
    for pair in parts.query.split("&"):
        name, eq, value = pair.partition("=")
        out.add(value if eq else name)
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        out.add(value if value else name)
    return {s for s in out if s}


def _header_secrets(value):
    out = {value, value.strip()}
    scheme, _, credentials = value.strip().partition(" ")
    if credentials.strip():
        out.add(credentials.strip())
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8", "replace")
            except (binascii.Error, ValueError):
                decoded = ""
            if decoded:
                out.add(decoded)
                out.update(decoded.split(":", 1))
    return {s for s in out if s}


def _spellings(secret):
    forms = {secret, unquote(secret), unquote_plus(secret)}
    for s in list(forms):
        forms.update(
            {
                quote(s, safe=""),
                quote(s),
                quote_plus(s),
                json.dumps(s)[1:-1],
                json.dumps(s, ensure_ascii=False)[1:-1],
                html.escape(s),
                repr(s)[1:-1],
            }
        )
    return forms


def _shown_url(parts):
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{MASK}@{host}" if "@" in parts.netloc else host
    query = "&".join(
        f"{name}={MASK}" if eq else MASK for name, eq, _ in (p.partition("=") for p in parts.query.split("&") if p)
    )
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")
