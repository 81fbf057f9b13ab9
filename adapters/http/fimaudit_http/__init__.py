"""fimaudit-http: a model behind an HTTP prediction API as a fimaudit black box.

What it promises against any server:

- Deadline: ``timeout`` bounds each attempt as a whole (connecting, sending and reading every
  byte of the answer), so a server that trickles its answer is cut off after ``timeout`` seconds.
- Retry wait: a ``Retry-After`` ask (delta-seconds or HTTP-date) is waited for only up to
  ``max_retry_wait`` seconds; a longer ask fails the call at once with a ``ServiceError``.
- Size cap: an answer is read as a stream and refused once it passes ``max_response_bytes``
  after decompression, so neither a huge body nor a compression bomb is held in memory.
- Row cap: every row sent, each resend included, is charged to ``max_rows_sent`` before it is
  sent, so the rows that reach the service never exceed it.
- Redaction: credentials in the URL's userinfo and query string and in header values never
  appear in an error message, the request log or ``repr``, neither as given nor percent-encoded,
  JSON-, HTML- or repr-escaped as a server may echo them (``redact.py`` lists the rules).
- The caller's client: with ``client=`` (an ``httpx.AsyncClient`` carrying auth, proxies or
  client certificates) every promise above still holds, and the client's own header values
  and Basic credentials are redacted too.

``protocol=`` reads and writes the formats of common serving stacks (``protocols.py``: the Open
Inference Protocol of KServe V2 and Triton, KServe V1 / TF-Serving, MLflow); ``encode=`` and
``decode=`` of the caller's own win over it.

Importing the package (as plugin discovery does) does not import httpx; the classes
load on first use.
"""

__all__ = ["HTTPModel", "QueryCache", "open_inference"]


def __getattr__(name):
    if name == "HTTPModel":
        from .model import HTTPModel

        return HTTPModel
    if name == "open_inference":
        from .protocols import open_inference

        return open_inference
    if name == "QueryCache":
        from fimaudit.blackbox.cache import QueryCache

        return QueryCache
    raise AttributeError(name)
