"""A zoo of small hand-built torch models shared by the tests and the benchmarks (VGG-, ResNet-,
DenseNet- and ViT-style layouts, a CIFAR-size CNN, ResNet-18), and exact Jacobian-norm search on a box.

torchvision is not required: every model is built from ``torch.nn`` layers.
"""

import copy

import numpy as np
import torch
from torch import nn


class Standardize(nn.Module):
    """(x − mean) / std with constant buffers: a model's own input normalisation."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean))
        self.register_buffer("std", torch.as_tensor(std))

    def forward(self, x):
        return (x - self.mean) / self.std


def small_cnn(C=10, width=8):
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * width, C),
    )


def relu_maxpool_cnn(seed, C=10):
    """A random-init ReLU/max-pool CNN for 3×16×16 inputs: almost every coordinate step of a
    few 1e-3 crosses some unit's kink, as in larger CNNs."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 64),
        nn.ReLU(),
        nn.Linear(64, C),
    ).eval()


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.c2, self.b2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x):
        return torch.relu(x + self.b2(self.c2(torch.relu(self.b1(self.c1(x))))))


def small_resnet(C=10, width=8):
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        Block(width),
        Block(width),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(width, C),
    )


class SmallViT(nn.Module):
    def __init__(self, C=10, patch=4, dim=32, heads=4, depth=2, image=16):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, patch, stride=patch)
        self.pos = nn.Parameter(torch.randn(1, (image // patch) ** 2, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.head = nn.Linear(dim, C)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2) + self.pos
        t = self.encoder(t)
        t = t + self.attn(t, t, t, need_weights=False)[0]
        return self.head(t.mean(1))


def small_vit(**kw):
    return SmallViT(**kw)


def mlp_from_numpy(m):
    """The torch twin of a fimaudit.testing.MLPModel (same weights, float64)."""
    layers = []
    for i, (W, b) in enumerate(zip(m.weights, m.biases)):
        lin = nn.Linear(W.shape[1], W.shape[0]).double()
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(W))
            lin.bias.copy_(torch.from_numpy(b))
        layers.append(lin)
        if i < len(m.weights) - 1:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


def smooth_cnn(C=10, width=8):
    """Smooth activations and average pooling: finite differences see no kinks."""
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1),
        nn.GELU(),
        nn.AvgPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1),
        nn.Tanh(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * width, C),
    )


def vgg_style(C=10, width=8):
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1),
        nn.BatchNorm2d(2 * width),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(2 * width * 8 * 8, 32),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(32, C),
    )


class DenseBlock(nn.Module):
    def __init__(self, c, growth, layers):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Sequential(nn.BatchNorm2d(c + i * growth), nn.ReLU(), nn.Conv2d(c + i * growth, growth, 3, padding=1))
            for i in range(layers)
        )

    def forward(self, x):
        for layer in self.layers:
            x = torch.cat([x, layer(x)], dim=1)
        return x


def densenet_style(C=10, growth=4):
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        DenseBlock(8, growth, 3),
        nn.AvgPool2d(2),
        nn.Conv2d(8 + 3 * growth, 8, 1),
        DenseBlock(8, growth, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8 + 2 * growth, C),
    )


def resnet_style(C=10, width=8):
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        Block(width),
        nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
        nn.ReLU(),
        Block(2 * width),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2 * width, C),
    )


def with_batchnorm_statistics(net):
    """``net`` with non-trivial running statistics in every BatchNorm2d (means in [−½, ½],
    variances in [½, 2], drawn from torch's global generator), so folding them is exercised."""
    with torch.no_grad():
        for mod in net.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
    return net


def _jacobian_norm(net64, x):
    J = torch.autograd.functional.jacobian(lambda a: net64(a[None])[0], x).reshape(10, -1)
    return torch.linalg.matrix_norm(J, 2).item()


def worst_jacobian_norm_in_box(net, lo, hi, starts=3, steps=6, seed=0):
    """max ‖J(x)‖₂ (logits, float64) over points sampled in the box lo ≤ x ≤ hi, then a
    projected ascent on ‖J(x)v‖ from the worst: a measured lower bound on the Lipschitz
    constant on the box."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):  # the fused kernels have no double backward
        return _ascent(copy.deepcopy(net).double(), lo, hi, starts, steps, seed)


def _ascent(net64, lo, hi, starts, steps, seed):
    lo, hi = torch.as_tensor(lo, dtype=torch.float64), torch.as_tensor(hi, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    points = [lo + (hi - lo) * torch.rand(lo.shape, generator=g, dtype=torch.float64) for _ in range(starts)]
    norms = [_jacobian_norm(net64, x) for x in points]
    x = points[int(np.argmax(norms))]
    step = float((hi - lo).max()) / 4
    for _ in range(steps):  # ascend ‖J(x)v‖ (v the top right singular vector), by central differences
        J = torch.autograd.functional.jacobian(lambda a: net64(a[None])[0], x).reshape(10, -1)
        v = torch.linalg.svd(J)[2][0].reshape(x.shape)
        x = x.clone().requires_grad_(True)
        h = 1e-4
        (grad,) = torch.autograd.grad((net64((x + h * v)[None]) - net64((x - h * v)[None])).norm(), x)
        x = torch.minimum(torch.maximum(x.detach() + step * grad.sign(), lo), hi)
        norms.append(_jacobian_norm(net64, x))
        step *= 0.8
    return max(norms)


def cifar_cnn(C=10):
    """A small CIFAR-style CNN: 3×32×32 → C (about 0.3 M parameters)."""
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(64, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 8 * 8, 64),
        nn.ReLU(),
        nn.Linear(64, C),
    )


def smooth_cifar_cnn(C=10):
    """The smooth twin of :func:`cifar_cnn` for 3×32×32: GELU and average pooling, a tanh head."""
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1),
        nn.GELU(),
        nn.AvgPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.GELU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 8 * 8, 64),
        nn.Tanh(),
        nn.Linear(64, C),
    )


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.c2, self.b2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.short = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x):
        return torch.relu(self.short(x) + self.b2(self.c2(torch.relu(self.b1(self.c1(x))))))


def resnet18(C=10, width=64):
    """ResNet-18 layout (2-2-2-2 basic blocks) for 32×32 inputs."""
    layers, cin = [nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()], width
    for i, cout in enumerate([width, 2 * width, 4 * width, 8 * width]):
        layers += [BasicBlock(cin, cout, 1 if i == 0 else 2), BasicBlock(cout, cout, 1)]
        cin = cout
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, C))
