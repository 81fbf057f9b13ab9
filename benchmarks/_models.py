"""The seed paper's white-box procedure and black-box estimator, for comparison."""

import array_api_compat.numpy as npx
import numpy as np
import torch

from fimaudit.likelihoods import get_likelihood


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
