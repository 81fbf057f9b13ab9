"""Certified bounds against measured Lipschitz constants, per architecture, one run.

    python benchmarks/bounds.py

For VGG-, ResNet- and DenseNet-style torch models at 3×32×32 (C = 10), exported to ONNX:
the certified bound on the logit Lipschitz constant L (fimaudit.lipschitz_bound); the best
measured lower bound, max ‖J(x)‖₂ over random inputs and an ascent on it; their ratio
(tightness); and the naive product of reshaped-kernel norms — not a bound for
convolutions — for comparison. Architectures are ranked by the certified bound.

A ViT-style model (LayerNorm, softmax attention) has no global constant: it is bounded on
declared input boxes — the whole image range [0, 1], and boxes of radius 0.01, 0.001 and 0.0001
around one input — against the largest ‖J(x)‖₂ measured inside each box.
"""

import copy
import os
import sys
import warnings

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from fimaudit_torch.testing import (  # noqa: E402
    SmallViT,
    densenet_style,
    resnet_style,
    vgg_style,
    worst_jacobian_norm_in_box,  # noqa: E402
)

import fimaudit as fa  # noqa: E402


def naive_product(net):
    """∏ ‖W reshaped to (c_out, rest)‖₂ over conv/linear layers (BN scales folded in as max |γ/σ|)."""
    out = 1.0
    for m in net.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            out *= float(np.linalg.norm(m.weight.detach().double().reshape(m.weight.shape[0], -1).numpy(), 2))
        elif isinstance(m, torch.nn.BatchNorm2d):
            out *= float((m.weight / torch.sqrt(m.running_var + m.eps)).abs().max())
    return out


def measured(net, n=20, steps=20, seed=0):
    net64 = copy.deepcopy(net).double()
    g = torch.Generator().manual_seed(seed)

    def jnorm(x, graph=False):
        J = torch.autograd.functional.jacobian(lambda a: net64(a[None])[0], x, create_graph=graph).reshape(10, -1)
        return torch.linalg.matrix_norm(J, 2)

    pts = [torch.rand(3, 32, 32, generator=g, dtype=torch.float64) for _ in range(n // 2)] + [
        3 * torch.randn(3, 32, 32, generator=g, dtype=torch.float64) for _ in range(n // 2)
    ]
    best = max(jnorm(p).item() for p in pts)
    x = pts[0].clone()
    for _ in range(steps):
        x.requires_grad_(True)
        s = jnorm(x, graph=True)
        (gx,) = torch.autograd.grad(s, x, allow_unused=True)
        x = (x + 0.05 * (gx if gx is not None else torch.randn_like(x)).sign()).detach()
        best = max(best, jnorm(x).item())
    return best


def main():
    warnings.simplefilter("ignore")
    rows = []
    for name, make in [("VGG-style", vgg_style), ("ResNet-style", resnet_style), ("DenseNet-style", densenet_style)]:
        torch.manual_seed(0)
        net = make().eval()
        b = fa.lipschitz_bound(fa.wrap(net, input_shape=(3, 32, 32)))
        low = measured(net)
        rows.append((name, b.lipschitz, low, naive_product(net), b.fisher_bound))
    torch.manual_seed(0)
    vit = SmallViT(image=32, patch=8, depth=1).eval()
    proto = fa.wrap(vit, input_shape=(3, 32, 32)).to_onnx()
    x0 = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    for label, r in (("[0, 1]", None), ("x ± 0.01", 0.01), ("x ± 0.001", 0.001), ("x ± 0.0001", 1e-4)):
        lo, hi = (
            (torch.zeros_like(x0), torch.ones_like(x0)) if r is None else ((x0 - r).clamp(0, 1), (x0 + r).clamp(0, 1))
        )
        b = fa.lipschitz_bound(proto, input_shape=(3, 32, 32), input_domain=(lo.numpy(), hi.numpy()))
        low = worst_jacobian_norm_in_box(vit, lo, hi, starts=6, steps=10)
        rows.append((f"ViT-style on {label}", b.lipschitz, low, float("nan"), b.fisher_bound))
    print(f"torch {torch.__version__}; random-init models at 3×32×32, C = 10")
    print(
        "| model | certified L | measured max ‖J(x)‖₂ | tightness (bound / measured) "
        "| naive ∏‖W‖ (not a bound) | ½L² (λ_max bound) |"
    )
    print("|---|---|---|---|---|---|")
    for name, L, low, naive, fb in rows:
        print(f"| {name} | {L:.4g} | {low:.4g} | {L / low:.1f}× | {naive:.4g} | {fb:.4g} |")
    print("ranking by certified L: " + " < ".join(r[0] for r in sorted(rows[:3], key=lambda r: r[1])))


if __name__ == "__main__":
    main()
