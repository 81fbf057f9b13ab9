"""Benchmark models built by hand (torchvision is not usable here), and the seed paper's
white-box procedure and black-box estimator for comparison."""

import array_api_compat.numpy as npx
import numpy as np
import torch
from torch import nn

from fimaudit.likelihoods import get_likelihood


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


def seed_method(net, x):
    """The seed paper's procedure: one input at a time, one
    backward pass per class through log-softmax, then the K×K eigenproblem of
    G_ab = √(p_a p_b) ∇log p_a · ∇log p_b (the Fisher's output-space Gram matrix)."""
    out = []
    for i in range(x.shape[0]):
        xi = x[i : i + 1].clone().requires_grad_(True)
        logp = torch.log_softmax(net(xi), dim=1)[0]
        p = logp.detach().exp()
        grads = torch.stack(
            [torch.autograd.grad(logp[c], xi, retain_graph=True)[0].flatten() for c in range(logp.shape[0])]
        )
        sq = p.sqrt()
        G = sq[:, None] * (grads @ grads.T) * sq[None, :]
        out.append(torch.linalg.eigvalsh(G.double())[-1])
    return torch.stack(out)


def seed_estimator(bb, x, probes=100, seed=0):
    """max over random unit v of vᵀFv = ‖R J v‖², J v by the same central differences."""
    lin = bb.linearize(x)
    n, d = x.shape[0], x[0].size
    V = np.random.default_rng(seed).standard_normal((n, probes, d)).astype(x.dtype)
    V /= np.linalg.norm(V, axis=2, keepdims=True)
    p = lin.logits.astype(np.float64)
    Jp = lin.jvp_many(V.reshape(n, probes, *x.shape[1:])).astype(np.float64)
    R = get_likelihood("categorical").factor(npx, np.log(np.maximum(p, 1e-300)))
    Jz = Jp / np.maximum(p, 1e-300)[:, None, :]  # d log p = dp / p
    return np.max(np.sum(R.apply(Jz) ** 2, axis=2), axis=1), 1 + 2 * probes
