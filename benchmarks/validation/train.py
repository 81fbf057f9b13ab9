"""Training with the options the family varies.

- ``epochs`` (training length), ``weight_decay`` (AdamW's decoupled decay),
- ``jacobian``: λ · C‖vᵀJ‖² with v uniform on the unit sphere of R^C, an unbiased estimate of
  λ‖J‖_F² (Hoffman, Roberts & Yaida, 2019, "Robust learning with Jacobian regularization"),
- ``spectral``: every Linear layer divided by its spectral norm (power iteration; Miyato et
  al., ICLR 2018) — a Lipschitz constraint; the parametrisation is folded into the weights
  after training so the model exports as plain layers,
- ``adversarial``: (norm, ε) — train on PGD examples (5 steps, cross-entropy; Madry et al.).

Training is deterministic: every random draw comes from generators seeded by ``seed`` (batch
order, PGD starts, Jacobian probes) or the global seed set here (initialisation of the
spectral-norm vectors), it runs in one thread (multi-threaded BLAS reductions can sum in a
different order from run to run) with ``torch.use_deterministic_algorithms``. The same weights
come back on the same CPU type and torch build.
"""

import contextlib

import torch
from torch import nn
from torch.nn.utils import parametrizations, parametrize

from .attacks import pgd


@contextlib.contextmanager
def deterministic():
    """One thread and deterministic kernels inside, the caller's settings restored after."""
    threads, flag = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(flag)


def train(net, X, y, **opts):
    """Train ``net`` in place (see ``deterministic``) and return it in eval mode."""
    with deterministic():
        return _train(net, X, y, **opts)


def _train(
    net, X, y, epochs=60, weight_decay=0.0, jacobian=0.0, spectral=False, adversarial=None, lr=2e-3, batch=64, seed=0
):
    torch.manual_seed(seed)
    if spectral:
        for m in list(net.modules()):
            if isinstance(m, nn.Linear):
                parametrizations.spectral_norm(m)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    X, y = torch.from_numpy(X), torch.from_numpy(y)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(X.shape[0], generator=g)
        for lo in range(0, X.shape[0], batch):
            xb, yb = X[order[lo : lo + batch]], y[order[lo : lo + batch]]
            if adversarial is not None:
                net.eval()
                norm, eps = adversarial
                xb = pgd(
                    net, xb, yb, eps, norm, steps=5, loss="ce", seed=int(torch.randint(1 << 30, (1,), generator=g))
                )[2]
                net.train()
            xb = xb.clone().requires_grad_(jacobian > 0)
            z = net(xb)
            loss = nn.functional.cross_entropy(z, yb)
            if jacobian > 0:
                v = torch.randn(z.shape, generator=g)
                v = v / v.norm(dim=1, keepdim=True)
                (gx,) = torch.autograd.grad((z * v).sum(), xb, create_graph=True)
                loss = loss + jacobian * z.shape[1] * gx.flatten(1).pow(2).sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    if spectral:
        for m in list(net.modules()):
            if isinstance(m, nn.Linear):
                parametrize.remove_parametrizations(m, "weight")
    return net.eval()
