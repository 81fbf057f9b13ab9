"""Every per-input score of the study, each with its wall time and model-call count.

fimaudit: λ_max(F(x)) white-box (exact, float64 autodiff) and black-box (exact central
differences on a float32 service that returns probabilities), tr F(x) (exact), and the graph
bound L from the model's ONNX export on the input box [0, 1]^d (which attention models need)
with its certified radius margin/(√2 L).
Baselines on the same inputs: the input-gradient norm ‖∇ₓ log p_ŷ(x)‖ (ŷ the predicted class),
the seed paper's black-box estimator (max over 100 random unit probes of vᵀF v, same finite
differences), the logit margin z_ŷ − max_{j≠ŷ} z_j, the first-order (one DeepFool step)
distance to the boundary d₁ = min_{j≠ŷ} (z_ŷ − z_j)/‖∇ₓ(z_ŷ − z_j)‖ (Moosavi-Dezfooli et al.,
CVPR 2016), a per-pair certified radius min_j (z_ŷ − z_j)/(‖w_ŷ − w_j‖ L_h) with L_h the graph
bound of the layers before the last linear one (|Δ(z_ŷ − z_j)| ≤ ‖w_ŷ − w_j‖ ‖Δh‖ ≤
‖w_ŷ − w_j‖ L_h ‖Δx‖), and CLEVER (Weng et al., ICLR 2018) through IBM ART's ``clever_u``,
with every class-gradient row it asks for counted.
"""

import copy
import time

import numpy as np
import torch

import fimaudit as fa
from fimaudit.errors import UnsupportedOnnxOpError

from .._models import seed_estimator


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def service(net):
    """The model as a vendor would serve it: float32 numpy in, probabilities out."""

    def fn(batch):
        with torch.no_grad():
            return torch.softmax(net(torch.from_numpy(np.asarray(batch, dtype=np.float32))), dim=1).numpy()

    return fn


def fimaudit_scores(net, x, input_shape):
    """dict of per-input arrays, per-metric seconds per input, model calls per input, and the
    graph bound (None with the reason when the graph has an op without a certified rule)."""
    n = x.shape[0]
    out, cost = {}, {}
    wb = fa.wrap(net, dtype=torch.float64)
    r, t = _timed(lambda: fa.fisher_norm(wb, x.astype(np.float64), method="exact"))
    out["lambda_whitebox"], out["trace"], logits = r.value, r.trace, r.logits
    cost["lambda_whitebox"] = (t / n, float(np.mean(r.queries)))
    bb = fa.wrap(service(net), input_shape=input_shape, output="probs")
    r, t = _timed(lambda: fa.fisher_norm(bb, x, method="exact"))
    out["lambda_blackbox"] = r.value
    cost["lambda_blackbox"] = (t / n, float(np.mean(r.queries)))
    (est, calls), t = _timed(lambda: seed_estimator(bb, x))
    out["seed_estimator"] = est
    cost["seed_estimator"] = (t / n, float(calls))
    z = np.sort(np.asarray(logits, dtype=np.float64), axis=1)
    out["margin"] = z[:, -1] - z[:, -2]
    bound = {"lipschitz": None, "reason": None, "lipschitz_features": None}
    try:
        b, t = _timed(lambda: fa.lipschitz_bound(fa.wrap(net, input_shape=input_shape), input_domain=(0.0, 1.0)))
        out["certified_radius"] = b.certified_radius(logits)
        bound.update(lipschitz=b.lipschitz, seconds=t)
        h, t = _timed(lambda: fa.lipschitz_bound(fa.wrap(net[:-1], input_shape=input_shape), input_domain=(0.0, 1.0)))
        out["certified_radius_pair"] = pair_radius(np.asarray(logits, dtype=np.float64), net[-1].weight, h.lipschitz)
        bound.update(lipschitz_features=h.lipschitz, seconds_pair=t)
    except UnsupportedOnnxOpError as err:
        bound["reason"] = str(err)
    return out, cost, bound


def pair_radius(z, W, L_h):
    """min_{j≠ŷ} (z_ŷ − z_j)/(‖w_ŷ − w_j‖ L_h), from logits z (n, C) and the last weight W (C, k)."""
    W = W.detach().double().numpy()
    top = z.argmax(axis=1)
    gap = z[np.arange(len(z)), top][:, None] - z
    wn = np.linalg.norm(W[top][:, None, :] - W[None, :, :], axis=2)
    r = gap / np.where(wn > 0, wn * L_h, np.nan)
    r[np.arange(len(z)), top] = np.inf
    return np.nanmin(r, axis=1)


def first_order_distance(net, x):
    """d₁ = min_{j≠ŷ} (z_ŷ − z_j)/‖∇ₓ(z_ŷ − z_j)‖ in float64 (C backward passes)."""
    net64 = copy.deepcopy(net).double()
    t = torch.from_numpy(x.astype(np.float64)).requires_grad_(True)
    z = net64(t)
    top = z.argmax(dim=1)
    grads = torch.stack([torch.autograd.grad(z[:, j].sum(), t, retain_graph=True)[0] for j in range(z.shape[1])])
    idx = torch.arange(len(x))
    w = (grads[top, idx][None] - grads).flatten(2).norm(dim=2)  # (C, n)
    gap = (z.gather(1, top[:, None]) - z).T.detach()
    d = gap / w
    d[top, idx] = float("inf")
    return d.min(dim=0).values.numpy()


def gradient_norm(net, x):
    """‖∇ₓ log p_ŷ(x)‖₂ with ŷ the predicted class, batched."""
    t = torch.from_numpy(x).requires_grad_(True)
    z = net(t)
    logp = torch.log_softmax(z, dim=1).gather(1, z.argmax(1, keepdim=True)).sum()
    (g,) = torch.autograd.grad(logp, t)
    return g.flatten(1).norm(dim=1).numpy()


def art_classifier(net, input_shape, C):
    """ART's PyTorchClassifier for ``net`` with its per-call overhead removed from the one call
    CLEVER makes (the gradient of one class logit for a batch, computed as ART does: the model
    has no preprocessing) and every gradient row it returns counted in ``rows``."""
    from art.estimators.classification import PyTorchClassifier

    class Counting(PyTorchClassifier):
        rows = 0

        def class_gradient(self, x, label=None, **kw):
            if isinstance(label, (int, np.integer)) and not kw:
                t = torch.from_numpy(np.asarray(x, dtype=np.float32)).requires_grad_(True)
                (g,) = torch.autograd.grad(net(t)[:, int(label)].sum(), t)
                g = g.numpy()[:, None]
            else:
                g = super().class_gradient(x, label=label, **kw)
            self.rows += int(np.prod(g.shape[:2]))  # (samples, classes asked for, ...)
            return g

    return Counting(
        model=net, loss=torch.nn.CrossEntropyLoss(), input_shape=input_shape, nb_classes=C, clip_values=(0.0, 1.0)
    )


def clever(net, x, input_shape, C, radius, nb_batches, batch_size, seed=0):
    """(CLEVER-u scores (ℓ2) per input through ART's ``clever_u``, class-gradient rows per
    input): ``radius`` caps the score; a row is one input's gradient of one class logit."""
    from art.metrics import clever_u

    clf = art_classifier(net, input_shape, C)
    np.random.seed(seed)
    scores = [
        clever_u(clf, xi, nb_batches=nb_batches, batch_size=batch_size, radius=radius, norm=2, verbose=False)
        for xi in x
    ]
    return np.array(scores), clf.rows / max(len(x), 1)
