"""fimaudit-tensorflow: Keras models, tf.Modules and tf.functions as fimaudit models.

Importing the package (as plugin discovery does) does not import TensorFlow.
"""

__all__ = ["TFModel"]


def __getattr__(name):
    if name == "TFModel":
        from .model import TFModel

        return TFModel
    raise AttributeError(name)
