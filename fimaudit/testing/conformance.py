r"""``check_adapter``: the checks every adapter must pass, framework-free.

For a wrapped model m and a batch x it verifies, with tolerances tied to the dtype:

1. batch consistency — ``forward`` on the batch equals ``forward`` row by row;
2. determinism — two forward passes agree exactly;
3. adjointness — ``⟨u, J v⟩ = ⟨Jᵀ u, v⟩`` for random u, v (jvp and vjp are one J);
4. jvp against central differences — ``J v ≈ (z(x + h v) − z(x − h v)) / 2h`` for unit
   v, h chosen from the dtype (error O(h²) + O(eps/h));
5. ``jvp_many``/``vjp_many`` agree with the single-vector products;
6. shapes — logits (n, C), vjp (n, *input_shape).

A black-box model (jvp by finite differences, no vjp) gets checks 1, 2, 6 and the
batching of its jvps; its accuracy is checked against a white-box twin instead.

Raises ``AssertionError`` naming the failed property and the numbers; returns a dict
of the measured discrepancies on success.
"""

from __future__ import annotations

import numpy as np

from .._array import namespace, normal, to_numpy

__all__ = ["check_adapter"]


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), np.finfo(np.float64).tiny))


def check_adapter(model, x, *, rtol=None, seed=0, k=3):
    """Run the conformance checks on ``model`` at the batch ``x``; see the module docstring."""
    from ..plugins import wrap

    m = wrap(model)
    xp = namespace(x)
    n = int(x.shape[0])
    z = m.forward(x)
    eps = float(namespace(z).finfo(z.dtype).eps)
    rtol = rtol if rtol is not None else (1e-3 if eps > 1e-10 else 1e-7)
    report = {}

    assert tuple(z.shape[:1]) == (n,) and z.ndim == 2, f"forward returned shape {tuple(z.shape)}, expected ({n}, C)"
    C = int(z.shape[1])
    rows = xp.concat([m.forward(x[i : i + 1, ...]) for i in range(n)], axis=0)
    report["batch_consistency"] = _rel(to_numpy(rows), to_numpy(z))
    assert report["batch_consistency"] <= 10 * eps**0.5 * 1e-2 + 100 * eps, (
        f"batch consistency: forward on the batch differs from row by row by {report['batch_consistency']:.3g}"
    )
    again = m.forward(x)
    assert np.array_equal(to_numpy(again), to_numpy(z)), "determinism: two forward passes differ"

    if not getattr(m, "has_vjp", True):  # a black box: forward-level checks and jvp batching only
        V = normal(xp, x, (n, k, *x.shape[1:]), seed + 2)
        lin = m.linearize(x)
        JV = to_numpy(lin.jvp_many(V))
        single = np.stack([to_numpy(lin.jvp(V[:, i, ...])) for i in range(k)], axis=1)
        report["jvp_many"] = _rel(JV, single)
        assert report["jvp_many"] <= rtol, f"jvp_many disagrees with single products: {report['jvp_many']:.3g}"
        return report

    v = normal(xp, x, x.shape, seed)
    u = normal(xp, z, (n, C), seed + 1)
    Jv = m.jvp(x, v)
    Jtu = m.vjp(x, u)
    assert tuple(Jv.shape) == (n, C), f"jvp returned shape {tuple(Jv.shape)}, expected {(n, C)}"
    assert tuple(Jtu.shape) == tuple(x.shape), f"vjp returned shape {tuple(Jtu.shape)}, expected {tuple(x.shape)}"
    lhs = np.sum(to_numpy(u).astype(np.float64) * to_numpy(Jv), axis=1)
    rhs = np.sum((to_numpy(Jtu).astype(np.float64) * to_numpy(v)).reshape(n, -1), axis=1)
    report["adjointness"] = _rel(lhs, rhs)
    assert report["adjointness"] <= rtol, f"adjointness: <u, Jv> and <J^T u, v> differ by {report['adjointness']:.3g}"

    # unit directions and a step eps^(1/3)·scale/5: truncation O(h²) + rounding O(eps/h),
    # small enough to rarely cross a ReLU/max-pool kink
    vn = v / xp.reshape(xp.linalg.vector_norm(xp.reshape(v, (n, -1)), axis=1), (n,) + (1,) * (x.ndim - 1))
    scale = max(float(np.sqrt(np.mean(to_numpy(x).astype(np.float64) ** 2))), 1.0)
    h = 0.2 * scale * eps ** (1.0 / 3.0)
    fd = (to_numpy(m.forward(x + h * vn)).astype(np.float64) - to_numpy(m.forward(x - h * vn))) / (2 * h)
    jv = to_numpy(m.jvp(x, vn))
    report["central_difference"] = _rel(jv, fd)
    # plus the rounding the difference quotient itself suffers: eps·|z| / (h·|Jv|)
    rounding = 3 * eps * float(np.max(np.abs(to_numpy(z)))) / (h * max(float(np.max(np.abs(jv))), 1e-300))
    fd_tol = (2e-2 if eps > 1e-10 else 1e-6) + rounding
    assert report["central_difference"] <= fd_tol, (
        f"jvp vs central differences (h={h:.2g}): relative difference {report['central_difference']:.3g}"
    )

    V = normal(xp, x, (n, k, *x.shape[1:]), seed + 2)
    U = normal(xp, z, (n, k, C), seed + 3)
    JV, JtU = m.jvp_many(x, V), m.vjp_many(x, U)
    single_j = np.stack([to_numpy(m.jvp(x, V[:, i, ...])) for i in range(k)], axis=1)
    single_t = np.stack([to_numpy(m.vjp(x, U[:, i, :])) for i in range(k)], axis=1)
    report["jvp_many"] = _rel(to_numpy(JV), single_j)
    report["vjp_many"] = _rel(to_numpy(JtU), single_t)
    assert report["jvp_many"] <= rtol and report["vjp_many"] <= rtol, (
        f"jvp_many/vjp_many disagree with single products: {report['jvp_many']:.3g}, {report['vjp_many']:.3g}"
    )
    return report
