"""fimaudit-http: a model behind an HTTP prediction API as a fimaudit black box."""

from .cache import QueryCache
from .model import HTTPModel

__all__ = ["HTTPModel", "QueryCache"]
