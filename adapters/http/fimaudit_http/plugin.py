"""Entry point: ``fimaudit.wrap("https://host/predict", input_shape=..., ...)``."""

from __future__ import annotations


class _HTTPPlugin:
    name = "http"

    def claims(self, obj) -> bool:
        return isinstance(obj, str) and obj.startswith(("http://", "https://"))

    def wrap(self, obj, **options):
        from fimaudit.blackbox import FiniteDifferenceModel
        from fimaudit.blackbox.finite_differences import FD_OPTIONS

        from .model import HTTPModel

        fd = {k: options.pop(k) for k in FD_OPTIONS if k in options}
        return FiniteDifferenceModel(HTTPModel(obj, **options), **fd)


PLUGIN = _HTTPPlugin()
