"""PGD in the natural input box [0, 1]^d, batched with a per-input budget ε.

Projected gradient ascent (Madry et al., ICLR 2018) on the margin loss
max_{j≠y} z_j − z_y (Carlini & Wagner, 2017): random start in the ε-ball, step 2.5ε/steps,
ℓ∞ steps along sign(g), ℓ2 steps along g/‖g‖, projection onto the ball and the box after every
step. An input counts as broken if any iterate (all feasible) is misclassified.

The minimal adversarial ℓ2 distance of an input is found by bisection on its own ε
(the attack's distance is an upper bound on the true minimum); the distance reported is the
norm of the closest adversarial point found.
"""

import torch


def margin(z, y):
    """max_{j≠y} z_j − z_y (> 0 exactly when the top class is not y)."""
    zy = z.gather(1, y[:, None])[:, 0]
    other = z.scatter(1, y[:, None], float("-inf"))
    return other.max(dim=1).values - zy


def _view(e, x):
    return e.reshape(-1, *([1] * (x.dim() - 1)))


def _project(delta, eps, norm):
    if norm == "linf":
        return torch.maximum(torch.minimum(delta, _view(eps, delta)), -_view(eps, delta))
    n = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
    return delta * _view(torch.clamp(eps / n, max=1.0), delta)


def pgd(net, x, y, eps, norm, steps=20, seed=0, loss="margin"):
    """(broken (n,) bool, closest adversarial point found (x where none), last iterate).

    ``eps`` is a float or a tensor (n,); ``norm`` is "l2" or "linf"; ``loss`` is "margin"
    (attacks) or "ce" (adversarial training)."""
    eps = torch.as_tensor(eps, dtype=x.dtype).expand(x.shape[0]).clone()
    g = torch.Generator().manual_seed(seed)
    r = torch.rand(x.shape, generator=g) * 2 - 1
    if norm == "l2":
        r = torch.randn(x.shape, generator=g)
        r = r / _view(r.flatten(1).norm(dim=1), r) * _view(torch.rand(x.shape[0], generator=g) ** (1 / x[0].numel()), r)
    delta = ((x + r * _view(eps, x)).clamp(0, 1) - x).detach()
    alpha = 2.5 * eps / steps
    broken = torch.zeros(x.shape[0], dtype=torch.bool)
    best = x.clone()
    best_d = torch.full((x.shape[0],), float("inf"))
    for i in range(steps + 1):
        delta.requires_grad_(True)
        z = net(x + delta)
        m = margin(z, y)
        with torch.no_grad():
            hit = m > 0
            dist = delta.flatten(1).norm(dim=1) if norm == "l2" else delta.flatten(1).abs().amax(dim=1)
            better = hit & (dist < best_d)
            best[better] = (x + delta)[better]
            best_d[better] = dist[better]
            broken |= hit
        if i == steps:
            break
        obj = m if loss == "margin" else torch.nn.functional.cross_entropy(z, y, reduction="none")
        (grad,) = torch.autograd.grad(obj.sum(), delta)
        with torch.no_grad():
            if norm == "linf":
                step = grad.sign()
            else:
                step = grad / _view(grad.flatten(1).norm(dim=1).clamp_min(1e-12), grad)
            delta = _project(delta + _view(alpha, x) * step, eps, norm)
            delta = ((x + delta).clamp(0, 1) - x).detach()
    return broken, best.detach(), (x + delta).detach()


def robust_accuracy(net, x, y, eps, norm, steps=40, seed=0):
    """Fraction of inputs still classified correctly under the attack at budget ε."""
    broken, _, _ = pgd(net, x, y, eps, norm, steps=steps, seed=seed)
    return float((~broken).float().mean())


BISECTIONS, BISECTION_STEPS = 10, 20
# one PGD run at the ceiling and one per bisection, each `steps + 1` forward and backward passes
MINIMAL_DISTANCE_PASSES = (BISECTIONS + 1) * (BISECTION_STEPS + 1) * 2


def minimal_distance(net, x, y, high, bisections=BISECTIONS, steps=BISECTION_STEPS, seed=0):
    """Per-input ℓ2 distance to the closest adversarial point found (inf if none within
    ``high``; 0 for inputs already misclassified)."""
    with torch.no_grad():
        wrong = net(x).argmax(dim=1) != y
    lo = torch.zeros(x.shape[0])
    hi = torch.full((x.shape[0],), float(high))
    found = torch.full((x.shape[0],), float("inf"))
    found[wrong] = 0.0
    broken, adv, _ = pgd(net, x, y, hi, "l2", steps=steps, seed=seed)
    found = torch.where(broken & ~wrong, (adv - x).flatten(1).norm(dim=1), found)
    active = broken & ~wrong
    for b in range(bisections):
        mid = (lo + hi) / 2
        ok, adv, _ = pgd(net, x, y, torch.where(active, mid, hi), "l2", steps=steps, seed=seed + 1 + b)
        ok &= active
        found = torch.where(ok, torch.minimum(found, (adv - x).flatten(1).norm(dim=1)), found)
        hi = torch.where(ok, mid, hi)
        lo = torch.where(active & ~ok, mid, lo)
    return found
