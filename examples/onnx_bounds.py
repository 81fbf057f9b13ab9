"""Certified bounds from an ONNX graph: export a torch CNN, bound its logits, rank two models.

python examples/onnx_bounds.py
"""

import torch

import fimaudit as fa
from fimaudit.bounds import rank_models


def cnn(width):
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, width, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(width * 8 * 8, 10),
    ).eval()


torch.manual_seed(0)
models = {f"width {w}": fa.wrap(cnn(w), input_shape=(3, 16, 16)) for w in (4, 16)}
for name, bound in rank_models(models):
    print(f"{name}: certified L ≤ {bound.lipschitz:.4g}, λ_max(F(x)) ≤ {bound.fisher_bound:.4g} for every x")
net = models["width 4"]
b = fa.lipschitz_bound(net)
print("per-layer:", [(layer["op"], round(layer["cumulative"], 3)) for layer in b.layers])
logits = net.forward(torch.rand(3, 3, 16, 16))
print("certified radii:", b.certified_radius(logits.numpy()).round(4).tolist())
