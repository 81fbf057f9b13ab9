"""Every per-input score of the study, each with its wall time and model-call count.

fimaudit: λ_max(F(x)) white-box (exact, float64 autodiff) and black-box (exact central
differences on a float32 service that returns probabilities), tr F(x) (exact), and the graph
bound L from the model's ONNX export on the input box [0, 1]^d (which attention models need)
with its certified radius margin/(√2 L).
Baselines on the same inputs: the input-gradient norm ‖∇ₓ log p_ŷ(x)‖ (ŷ the predicted class),
the seed paper's black-box estimator (max over 100 random unit probes of vᵀF v, same finite
differences), and CLEVER (Weng et al., ICLR 2018) through IBM ART's ``clever_u``.
"""

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
    bound = {"lipschitz": None, "reason": None}
    try:
        b, t = _timed(lambda: fa.lipschitz_bound(fa.wrap(net, input_shape=input_shape), input_domain=(0.0, 1.0)))
        out["certified_radius"] = b.certified_radius(logits)
        bound.update(lipschitz=b.lipschitz, seconds=t)
    except UnsupportedOnnxOpError as err:
        bound["reason"] = str(err)
    return out, cost, bound


def gradient_norm(net, x):
    """‖∇ₓ log p_ŷ(x)‖₂ with ŷ the predicted class, batched."""
    t = torch.from_numpy(x).requires_grad_(True)
    z = net(t)
    logp = torch.log_softmax(z, dim=1).gather(1, z.argmax(1, keepdim=True)).sum()
    (g,) = torch.autograd.grad(logp, t)
    return g.flatten(1).norm(dim=1).numpy()


def clever(net, x, input_shape, C, radius, nb_batches, batch_size, seed=0):
    """CLEVER-u scores (ℓ2) per input through ART; ``radius`` caps the score."""
    from art.estimators.classification import PyTorchClassifier
    from art.metrics import clever_u

    clf = PyTorchClassifier(
        model=net, loss=torch.nn.CrossEntropyLoss(), input_shape=input_shape, nb_classes=C, clip_values=(0.0, 1.0)
    )
    np.random.seed(seed)
    return np.array(
        [
            clever_u(clf, xi, nb_batches=nb_batches, batch_size=batch_size, radius=radius, norm=2, verbose=False)
            for xi in x
        ]
    )
