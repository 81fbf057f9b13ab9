"""fimaudit-torch: PyTorch modules as fimaudit models (forward / jvp / vjp via torch.func)."""

from .model import TorchModel, TorchLinearization

__all__ = ["TorchModel", "TorchLinearization"]
