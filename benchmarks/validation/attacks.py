"""Attacks in the natural input box [0, 1]^d, batched, with a per-input budget ε.

- PGD (Madry et al., ICLR 2018) on the margin loss max_{j≠y} z_j − z_y (Carlini & Wagner,
  2017): random start in the ε-ball, step 2.5ε/steps, ℓ∞ steps along sign(g), ℓ2 steps along
  g/‖g‖, projection onto the ball and the box after every step; ``restarts`` independent random
  starts (the inputs repeated in one batch). An input is broken if any iterate is misclassified.
- Minimal ℓ2 distance, three attacks per input, the smallest verified distance kept:
  PGD with bisection on each input's own ε; the fast minimum-norm attack (FMN: Pintor et al.,
  NeurIPS 2021), which steers ε towards the boundary while descending the logit difference
  (here along the gradient with the components that would leave the box removed, so ε's
  linear estimate of the distance to the boundary holds in the box, and that estimate
  stretched by 1 + γ until a first adversarial point is found, so it lands beyond the boundary);
  DeepFool (Moosavi-Dezfooli et al., CVPR 2016) followed by a line search along its
  perturbation. Every returned point is re-checked (inside the box, misclassified by the
  model); a distance is an upper bound on the true minimum.
"""

import math

import torch

STEPS, RESTARTS, BISECTIONS = 40, 5, 10  # PGD steps per run, random starts, bisection halvings
FMN_STEPS, DEEPFOOL_STEPS, LINE_SEARCH = 100, 50, 12


def margin(z, y):
    """max_{j≠y} z_j − z_y (> 0 exactly when the top class is not y)."""
    zy = z.gather(1, y[:, None])[:, 0]
    other = z.scatter(1, y[:, None], float("-inf"))
    return other.max(dim=1).values - zy


def _view(e, x):
    return e.reshape(-1, *([1] * (x.dim() - 1)))


def _norm(d):
    return d.flatten(1).norm(dim=1)


def _project(delta, eps, norm):
    if norm == "linf":
        return torch.maximum(torch.minimum(delta, _view(eps, delta)), -_view(eps, delta))
    return delta * _view(torch.clamp(eps / _norm(delta).clamp_min(1e-12), max=1.0), delta)


def pgd(net, x, y, eps, norm, steps=20, seed=0, loss="margin"):
    """(broken (n,) bool, closest adversarial point found (x where none), last iterate).

    ``eps`` is a float or a tensor (n,); ``norm`` is "l2" or "linf"; ``loss`` is "margin"
    (attacks) or "ce" (adversarial training)."""
    eps = torch.as_tensor(eps, dtype=x.dtype).expand(x.shape[0]).clone()
    g = torch.Generator().manual_seed(seed)
    r = torch.rand(x.shape, generator=g) * 2 - 1
    if norm == "l2":
        r = torch.randn(x.shape, generator=g)
        r = r / _view(_norm(r), r) * _view(torch.rand(x.shape[0], generator=g) ** (1 / x[0].numel()), r)
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
            dist = _norm(delta) if norm == "l2" else delta.flatten(1).abs().amax(dim=1)
            better = hit & (dist < best_d)
            best[better] = (x + delta)[better]
            best_d[better] = dist[better]
            broken |= hit
        if i == steps:
            break
        obj = m if loss == "margin" else torch.nn.functional.cross_entropy(z, y, reduction="none")
        (grad,) = torch.autograd.grad(obj.sum(), delta)
        with torch.no_grad():
            step = grad.sign() if norm == "linf" else grad / _view(_norm(grad).clamp_min(1e-12), grad)
            delta = _project(delta + _view(alpha, x) * step, eps, norm)
            delta = ((x + delta).clamp(0, 1) - x).detach()
    return broken, best.detach(), (x + delta).detach()


def pgd_restarts(net, x, y, eps, norm, steps=STEPS, restarts=RESTARTS, seed=0):
    """PGD from ``restarts`` random starts at once: (broken, closest adversarial point found)."""
    n = x.shape[0]
    eps = torch.as_tensor(eps, dtype=x.dtype).expand(n)
    xr = x.repeat(restarts, *[1] * (x.dim() - 1))
    broken, best, _ = pgd(net, xr, y.repeat(restarts), eps.repeat(restarts), norm, steps=steps, seed=seed)
    broken, best = broken.reshape(restarts, n), best.reshape(restarts, *x.shape)
    d = torch.where(broken, (best - x[None]).flatten(2).norm(dim=2), math.inf)  # (restarts, n)
    return broken.any(dim=0), best[d.argmin(dim=0), torch.arange(n)]


def robust_accuracy(net, x, y, eps, norm, steps=STEPS, restarts=1, seed=0):
    """Fraction of inputs still classified correctly under PGD at budget ε."""
    broken, _ = pgd_restarts(net, x, y, eps, norm, steps=steps, restarts=restarts, seed=seed)
    return float((~broken).float().mean())


def robust_accuracies(net, x, y, grid, norm, steps=STEPS, restarts=RESTARTS, seed=0):
    """({ε: accuracy under the first random start}, {ε: accuracy under all ``restarts``}) at every ε
    of ``grid``, one batch (inputs × ε × restarts): the first start alone is a single-start PGD run."""
    n, k = x.shape[0], len(grid)
    eps = torch.as_tensor(grid, dtype=x.dtype).repeat_interleave(n).repeat(restarts)
    xr, yr = x.repeat(k * restarts, *[1] * (x.dim() - 1)), y.repeat(k * restarts)
    broken = pgd(net, xr, yr, eps, norm, steps=steps, seed=seed)[0].reshape(restarts, k, n)
    single = (~broken[0]).float().mean(dim=1)
    strong = (~broken.any(dim=0)).float().mean(dim=1)
    return {e: float(a) for e, a in zip(grid, single)}, {e: float(a) for e, a in zip(grid, strong)}


def pgd_bisection(net, x, y, high, start=None, bisections=BISECTIONS, steps=STEPS, restarts=RESTARTS, seed=0):
    """Closest adversarial points of PGD with bisection on each input's ℓ2 budget. The bracket is
    [0, high], or [0, ‖start − x‖] where ``start`` (points another attack found) is adversarial:
    there the first run is skipped and ``bisections − 4`` halvings give the same relative precision."""
    n = x.shape[0]
    lo, hi = torch.zeros(n), torch.full((n,), float(high))
    best = x.clone()
    known = torch.zeros(n, dtype=torch.bool)
    if start is not None:
        with torch.no_grad():
            known = (net(start).argmax(dim=1) != y) & (_norm(start - x) > 0)
        hi[known], best[known] = _norm(start - x)[known], start[known]
    active = known.clone()
    if not known.all():
        ok, adv = pgd_restarts(net, x[~known], y[~known], hi[~known], "l2", steps, restarts, seed)
        sub = torch.nonzero(~known)[:, 0]
        active[sub[ok]], best[sub[ok]] = True, adv[ok]
    for b in range(bisections if start is None else max(bisections - 4, 1)):
        idx = torch.nonzero(active)[:, 0]
        if idx.numel() == 0:
            break
        mid = (lo[idx] + hi[idx]) / 2
        ok, adv = pgd_restarts(net, x[idx], y[idx], mid, "l2", steps, restarts, seed + 1 + b)
        closer = ok & (_norm(adv - x[idx]) < _norm(best[idx] - x[idx]))
        best[idx[closer]] = adv[closer]
        hi[idx[ok]], lo[idx[~ok]] = mid[ok], mid[~ok]
    best[~active] = x[~active]
    return best


def fmn(net, x, y, steps=FMN_STEPS, alpha=(1.0, 0.01), gamma=(0.05, 0.001)):
    """Fast minimum-norm ℓ2 attack: closest adversarial points found (x where none)."""
    n = x.shape[0]
    delta = torch.zeros_like(x)
    eps = torch.zeros(n)
    worst = torch.maximum(_norm(x), _norm(1 - x))
    best_d, best = torch.full((n,), math.inf), x.clone()
    found = torch.zeros(n, dtype=torch.bool)
    for k in range(steps):
        cos = (1 + math.cos(math.pi * k / steps)) / 2
        a, g = alpha[1] + (alpha[0] - alpha[1]) * cos, gamma[1] + (gamma[0] - gamma[1]) * cos
        delta.requires_grad_(True)
        loss = -margin(net(x + delta), y)  # z_y − max_{j≠y} z_j, < 0 when adversarial
        (grad,) = torch.autograd.grad(loss.sum(), delta)
        with torch.no_grad():
            dn, adv = _norm(delta), loss < 0
            better = adv & (dn < best_d)
            best[better], best_d[better] = (x + delta)[better], dn[better]
            found |= adv
            xa = x + delta  # descent leaves the box where a pixel sits on a face: those components can't move
            grad = torch.where(((xa <= 0) & (grad > 0)) | ((xa >= 1) & (grad < 0)), 0.0, grad)
            gn = _norm(grad).clamp_min(1e-12)
            to_boundary = (dn + loss.abs() / gn) * (1 + g)  # overshoot the linear estimate: land beyond it
            eps = torch.where(adv, torch.minimum(eps * (1 - g), best_d), torch.where(found, eps * (1 + g), to_boundary))
            eps = torch.minimum(eps, worst)
            delta = _project(delta - a * grad / _view(gn, grad), eps, "l2")
            delta = ((x + delta).clamp(0, 1) - x).detach()
    return best


def deepfool_line_search(net, x, y, steps=DEEPFOOL_STEPS, overshoot=0.02, searches=LINE_SEARCH):
    """DeepFool's linearised steps to the nearest class boundary, then the smallest t ∈ (0, 1]
    along the final perturbation that still misclassifies (bisection): closest points (x where none)."""
    r = torch.zeros_like(x)
    for _ in range(steps):
        xa = (x + (1 + overshoot) * r).clamp(0, 1).requires_grad_(True)
        z = net(xa)
        live = z.argmax(dim=1) == y
        if not live.any():
            break
        grads = torch.stack([torch.autograd.grad(z[:, j].sum(), xa, retain_graph=True)[0] for j in range(z.shape[1])])
        with torch.no_grad():
            idx = torch.arange(x.shape[0])
            w = grads - grads[y, idx][None]  # (C, n, ...) ∇(z_j − z_y)
            f = (z - z.gather(1, y[:, None])).T  # (C, n)
            wn = w.flatten(2).norm(dim=2).clamp_min(1e-12)
            ratio = f.abs() / wn
            ratio[y, idx] = math.inf
            j = ratio.argmin(dim=0)
            step = _view((f[j, idx].abs() + 1e-4) / wn[j, idx] ** 2, x) * w[j, idx]
            r = r + step * _view(live.to(x.dtype), x)
    with torch.no_grad():
        delta = (x + (1 + overshoot) * r).clamp(0, 1) - x
        ok = net(x + delta).argmax(dim=1) != y
        lo, hi = torch.zeros(x.shape[0]), torch.ones(x.shape[0])
        for _ in range(searches):
            mid = (lo + hi) / 2
            hit = net(x + _view(mid, x) * delta).argmax(dim=1) != y
            hi, lo = torch.where(hit, mid, hi), torch.where(hit, lo, mid)
        out = x + _view(hi, x) * delta
        out[~ok] = x[~ok]
    return out


ATTACKS = {"pgd_bisection": pgd_bisection, "fmn": fmn, "deepfool_line_search": deepfool_line_search}


def verified_distance(net, x, y, adv):
    """‖adv − x‖₂ where adv lies in [0, 1]^d and the model misclassifies it, else inf; 0 for
    inputs the model already misclassifies."""
    with torch.no_grad():
        wrong = net(x).argmax(dim=1) != y
        ok = (net(adv).argmax(dim=1) != y) & (adv >= 0).flatten(1).all(1) & (adv <= 1).flatten(1).all(1)
    d = torch.where(ok, _norm(adv - x), math.inf)
    return torch.where(wrong, 0.0, d), ok


def minimal_distance(net, x, y, high, seed=0):
    """{attack: verified distance per input} with the ensemble minimum under "ensemble", and
    {attack: returned points that failed the check}. FMN and DeepFool run first; PGD's bisection
    starts from the closer of their points (from [0, high] where both failed)."""
    with torch.no_grad():
        wrong = net(x).argmax(dim=1) != y
    out, rejected, points = {}, {}, {}
    for name in ("fmn", "deepfool_line_search", "pgd_bisection"):
        if name == "pgd_bisection":
            nearer = _view(out["fmn"] <= out["deepfool_line_search"], x)
            start = torch.where(nearer, points["fmn"], points["deepfool_line_search"])
            adv = pgd_bisection(net, x, y, high, start=start, seed=seed)
        else:
            adv = ATTACKS[name](net, x, y)
        d, ok = verified_distance(net, x, y, adv)
        moved = (adv != x).flatten(1).any(1)  # an attack that returns x itself reports no point
        rejected[name] = int((moved & ~ok & ~wrong).sum())
        out[name], points[name] = d, torch.where(_view(ok, x), adv, x)
    out["ensemble"] = torch.stack(list(out.values())).min(dim=0).values
    return out, rejected
