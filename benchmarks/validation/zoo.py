"""The model family: architectures (MLP, CNN, residual, attention) × training options.

Every model starts with a fixed ``Standardize`` layer (training-split mean/std), so it takes
inputs in their natural [0, 1] range. Attention blocks are written out (Q/K/V projections,
softmax(QKᵀ/√h)V) so they export to ONNX and differentiate forward and backward.
"""

import math

import torch
from torch import nn


class Standardize(nn.Module):
    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer(
            "std", torch.as_tensor(std, dtype=torch.float32).clamp_min(0.1)
        )  # constant pixels: no ×1000 blow-up

    def forward(self, x):
        return (x - self.mean) / self.std


class Residual(nn.Module):
    def __init__(self, body):
        super().__init__()
        self.body = body

    def forward(self, x):
        return x + self.body(x)


class Attention(nn.Module):
    """Single-head self-attention over tokens (n, T, h), pre-LayerNorm, with an MLP block."""

    def __init__(self, h):
        super().__init__()
        self.n1, self.n2 = nn.LayerNorm(h), nn.LayerNorm(h)
        self.q, self.k, self.v, self.o = (nn.Linear(h, h) for _ in range(4))
        self.mlp = nn.Sequential(nn.Linear(h, 2 * h), nn.GELU(), nn.Linear(2 * h, h))

    def forward(self, t):
        a = self.n1(t)
        w = torch.softmax(self.q(a) @ self.k(a).transpose(1, 2) / math.sqrt(a.shape[-1]), dim=-1)
        t = t + self.o(w @ self.v(a))
        return t + self.mlp(self.n2(t))


class Tokens(nn.Module):
    """Images: non-overlapping p×p patches → linear embedding; tables: one token per feature
    (value × learned vector + feature embedding). Adds positions; returns (n, T, h)."""

    def __init__(self, input_shape, h, patch=2):
        super().__init__()
        self.image = len(input_shape) == 3
        if self.image:
            c, H, W = input_shape
            self.patch, T = patch, (H // patch) * (W // patch)
            self.embed = nn.Linear(c * patch * patch, h)
        else:
            T = input_shape[0]
            self.scale = nn.Parameter(torch.randn(T, h) / math.sqrt(h))
        self.pos = nn.Parameter(torch.randn(T, h) * 0.02)

    def forward(self, x):
        if self.image:
            n, c, H, W = x.shape
            p = self.patch
            x = x.reshape(n, c, H // p, p, W // p, p).permute(0, 2, 4, 1, 3, 5).reshape(n, -1, c * p * p)
            return self.embed(x) + self.pos
        return x.unsqueeze(-1) * self.scale + self.pos


class MeanTokens(nn.Module):
    def forward(self, t):
        return t.mean(dim=1)


def build(arch, input_shape, C, mean, std, width=64):
    """A fresh model of architecture ``arch`` ∈ {mlp, cnn, resnet, resmlp, attention}."""
    d = math.prod(input_shape)
    layers = [Standardize(mean, std)]
    if arch == "mlp":
        layers += [
            nn.Flatten(),
            nn.Linear(d, width),
            nn.ReLU(),
            nn.Linear(width, width),
            nn.ReLU(),
            nn.Linear(width, C),
        ]
    elif arch == "cnn" and len(input_shape) == 3:
        layers += [
            nn.Conv2d(input_shape[0], 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(32 * (input_shape[1] // 2) * (input_shape[2] // 2), width),
            nn.ReLU(),
            nn.Linear(width, C),
        ]
    elif arch == "cnn":  # signals (channels, length): the same layout in 1-D, kernel 5
        layers += [
            nn.Conv1d(input_shape[0], 16, 5, padding=2),
            nn.ReLU(),
            nn.Conv1d(16, 32, 5, stride=2, padding=2),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(32 * ((input_shape[1] + 1) // 2), width),
            nn.ReLU(),
            nn.Linear(width, C),
        ]
    elif arch == "resnet":

        def block():
            return Residual(nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1)))

        layers += [
            nn.Conv2d(input_shape[0], 16, 3, padding=1),
            nn.ReLU(),
            block(),
            nn.ReLU(),
            block(),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(16, C),
        ]
    elif arch == "resmlp":
        block = lambda: Residual(nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width)))  # noqa: E731
        layers += [
            nn.Flatten(),
            nn.Linear(d, width),
            nn.ReLU(),
            block(),
            nn.ReLU(),
            block(),
            nn.ReLU(),
            nn.Linear(width, C),
        ]
    elif arch == "attention":
        h = 32
        layers += [Tokens(input_shape, h), Attention(h), MeanTokens(), nn.LayerNorm(h), nn.Linear(h, C)]
    else:
        raise ValueError(f"unknown architecture {arch!r}")
    return nn.Sequential(*layers)


# name, dataset, architecture, width, training options (see train.train; "seed" also seeds the initialisation).
# Models named "-s1", "-s2" differ from the one without the suffix only by that seed. Long and short training
# (epochs) and the regularisers vary one option against the dataset's default (``SETTINGS`` in ``__main__``).
FAMILY = [
    ("breast_cancer/mlp-w16", "breast_cancer", "mlp", 16, {}),
    ("breast_cancer/mlp-w16-s1", "breast_cancer", "mlp", 16, {"seed": 1}),
    ("breast_cancer/mlp-w16-s2", "breast_cancer", "mlp", 16, {"seed": 2}),
    ("breast_cancer/mlp-w128", "breast_cancer", "mlp", 128, {}),
    ("breast_cancer/mlp-w128-wd", "breast_cancer", "mlp", 128, {"weight_decay": 0.5}),
    ("breast_cancer/mlp-w128-5ep", "breast_cancer", "mlp", 128, {"epochs": 5}),
    ("breast_cancer/mlp-w128-500ep", "breast_cancer", "mlp", 128, {"epochs": 500}),
    ("breast_cancer/mlp-w128-jacreg", "breast_cancer", "mlp", 128, {"jacobian": 0.05}),
    ("breast_cancer/mlp-w128-spectral", "breast_cancer", "mlp", 128, {"spectral": True}),
    ("breast_cancer/mlp-w128-pgd", "breast_cancer", "mlp", 128, {"adversarial": ("l2", 0.2)}),
    ("breast_cancer/resmlp", "breast_cancer", "resmlp", 64, {}),
    ("breast_cancer/attention", "breast_cancer", "attention", 64, {}),
    ("digits/mlp-w32", "digits", "mlp", 32, {}),
    ("digits/mlp-w32-s1", "digits", "mlp", 32, {"seed": 1}),
    ("digits/mlp-w32-s2", "digits", "mlp", 32, {"seed": 2}),
    ("digits/mlp-w256", "digits", "mlp", 256, {}),
    ("digits/mlp-w256-wd", "digits", "mlp", 256, {"weight_decay": 0.5}),
    ("digits/mlp-w256-3ep", "digits", "mlp", 256, {"epochs": 3}),
    ("digits/mlp-w256-150ep", "digits", "mlp", 256, {"epochs": 150}),
    ("digits/mlp-w256-jacreg", "digits", "mlp", 256, {"jacobian": 0.05}),
    ("digits/mlp-w256-spectral", "digits", "mlp", 256, {"spectral": True}),
    ("digits/mlp-w256-pgd", "digits", "mlp", 256, {"adversarial": ("l2", 1.0), "epochs": 15}),
    ("mnist1d/mlp-w64", "mnist1d", "mlp", 64, {}),
    ("mnist1d/mlp-w64-s1", "mnist1d", "mlp", 64, {"seed": 1}),
    ("mnist1d/mlp-w64-s2", "mnist1d", "mlp", 64, {"seed": 2}),
    ("mnist1d/mlp-w256", "mnist1d", "mlp", 256, {}),
    ("mnist1d/mlp-w256-wd", "mnist1d", "mlp", 256, {"weight_decay": 0.5}),
    ("mnist1d/mlp-w256-jacreg", "mnist1d", "mlp", 256, {"jacobian": 0.05}),
    ("mnist1d/mlp-w256-spectral", "mnist1d", "mlp", 256, {"spectral": True}),
    ("mnist1d/mlp-w256-pgd", "mnist1d", "mlp", 256, {"adversarial": ("l2", 0.05), "epochs": 15}),
    ("digits/attention", "digits", "attention", 64, {}),
    ("digits/attention-wd", "digits", "attention", 64, {"weight_decay": 0.5}),
    ("digits/cnn", "digits", "cnn", 64, {}),
    ("mnist1d/cnn", "mnist1d", "cnn", 64, {}),
    ("mnist1d/cnn-wd", "mnist1d", "cnn", 64, {"weight_decay": 0.5}),
    ("digits/resnet", "digits", "resnet", 64, {}),
    ("mnist1d/cnn-jacreg", "mnist1d", "cnn", 64, {"jacobian": 0.05}),
    ("digits/resnet-jacreg", "digits", "resnet", 64, {"jacobian": 0.05}),
    ("digits/cnn-pgd", "digits", "cnn", 64, {"adversarial": ("linf", 0.1), "epochs": 15}),
    ("mnist1d/cnn-pgd", "mnist1d", "cnn", 64, {"adversarial": ("linf", 0.01), "epochs": 15}),
]  # cheapest first, so a run cut short keeps the most models

# CLEVER (a baseline costing ~10⁴ class gradients per input) runs on these models only, on the first
# ``clever_inputs`` of each: a small MLP and a Jacobian-regularised one per dataset, and digits' wide MLP.
CLEVER_MODELS = {
    "breast_cancer/mlp-w16", "breast_cancer/mlp-w128-jacreg",
    "digits/mlp-w32", "digits/mlp-w256", "digits/mlp-w256-jacreg",
    "mnist1d/mlp-w64", "mnist1d/mlp-w256-jacreg",
}  # fmt: skip
