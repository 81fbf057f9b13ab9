"""fimaudit-torch: PyTorch modules as fimaudit models (forward / jvp / vjp via torch.func).

Importing the package (as plugin discovery does) does not import torch; the model
classes load on first use.
"""

__all__ = ["TorchModel", "TorchLinearization"]


def __getattr__(name):
    if name in __all__:
        from . import model

        return getattr(model, name)
    raise AttributeError(name)
