"""Entry point: ``fimaudit.wrap("https://host/predict", input_shape=..., ...)``."""

from __future__ import annotations


class _HTTPPlugin:
    name = "http"

    def claims(self, obj) -> bool:
        return isinstance(obj, str) and obj.startswith(("http://", "https://"))

    def wrap(self, obj, **options):
        from fimaudit.blackbox import black_box

        from .model import HTTPModel

        return black_box(HTTPModel, obj, **options)


PLUGIN = _HTTPPlugin()
