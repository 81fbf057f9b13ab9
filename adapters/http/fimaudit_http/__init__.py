"""fimaudit-http: a model behind an HTTP prediction API as a fimaudit black box.

Importing the package (as plugin discovery does) does not import httpx; the classes
load on first use.
"""

__all__ = ["HTTPModel", "QueryCache"]


def __getattr__(name):
    if name == "HTTPModel":
        from .model import HTTPModel

        return HTTPModel
    if name == "QueryCache":
        from fimaudit.blackbox.cache import QueryCache

        return QueryCache
    raise AttributeError(name)
