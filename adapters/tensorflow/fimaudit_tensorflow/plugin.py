"""Entry point of fimaudit-tensorflow. Importing this module imports no framework."""

from __future__ import annotations

import sys


class _TFPlugin:
    name = "tensorflow"

    def claims(self, obj) -> bool:
        keras = sys.modules.get("keras")
        if keras is not None and isinstance(obj, keras.Model):
            return True
        tf = sys.modules.get("tensorflow")
        if tf is None:
            return False
        return isinstance(obj, tf.Module) or isinstance(obj, tf.types.experimental.GenericFunction)

    def wrap(self, obj, **options):
        from .model import TFModel

        return TFModel(obj, **options)


PLUGIN = _TFPlugin()
