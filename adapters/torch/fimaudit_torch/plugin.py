"""Entry point of the fimaudit-torch plugin. Importing this module does not import torch."""

from __future__ import annotations

import sys


class _TorchPlugin:
    name = "torch"

    def claims(self, obj) -> bool:
        torch = sys.modules.get("torch")  # a torch object implies torch is already imported
        return torch is not None and isinstance(obj, torch.nn.Module)

    def wrap(self, obj, **options):
        from .model import TorchModel

        return TorchModel(obj, **options)


PLUGIN = _TorchPlugin()
