"""Array-library plumbing: namespaces, devices, random numbers, dtype rules.

The estimators are written against the Python array API standard through
array-api-compat, so the same code runs on numpy, CuPy and torch arrays. This module
never imports a backend to ask about it: it looks at the array's namespace.
"""

from __future__ import annotations

import array_api_compat as _compat
import numpy as np

__all__ = ["namespace", "device", "normal", "rademacher", "to_numpy", "is_floating", "promote"]


def namespace(*arrays):
    """The array-API namespace shared by ``arrays`` (numpy, cupy, torch...)."""
    return _compat.array_namespace(*arrays)


def device(x):
    return _compat.device(x)


def is_floating(xp, x) -> bool:
    return xp.isdtype(x.dtype, "real floating")


def promote(xp, x):
    """``x`` in float64 when the backend has it (small dense eigenproblems)."""
    try:
        return xp.astype(x, xp.float64)
    except (TypeError, RuntimeError):  # e.g. a device without float64
        return x


def _torch_generator(x, seed):
    import sys

    torch = sys.modules["torch"]  # present: x is a torch tensor
    gen = torch.Generator(device=x.device)
    gen.manual_seed(int(seed))
    return torch, gen


def normal(xp, like, shape, seed):
    """Standard normal samples of ``shape`` in ``like``'s library, dtype and device.

    Drawn on the array's own device (torch generator, CuPy generator) so no host
    round trip happens; numpy uses ``numpy.random.default_rng(seed)``.
    """
    shape = tuple(int(s) for s in shape)
    if _compat.is_torch_namespace(xp):
        torch, gen = _torch_generator(like, seed)
        return torch.randn(shape, generator=gen, dtype=like.dtype, device=like.device)
    if _compat.is_cupy_namespace(xp):
        import sys

        cupy = sys.modules["cupy"]
        return cupy.random.default_rng(seed).standard_normal(shape, dtype=like.dtype)
    out = np.random.default_rng(seed).standard_normal(shape)
    return xp.asarray(out, dtype=like.dtype, device=device(like))


def rademacher(xp, like, shape, seed):
    """Independent ±1 entries of ``shape`` in ``like``'s library, dtype and device."""
    g = normal(xp, like, shape, seed)
    return xp.where(g >= 0, xp.ones_like(g), -xp.ones_like(g))


def to_numpy(x):
    """A host numpy copy of any supported array (for reports and small bookkeeping)."""
    if isinstance(x, np.ndarray):
        return x
    if _compat.is_torch_array(x):
        return x.detach().cpu().numpy()
    if _compat.is_cupy_array(x):
        return x.get()
    return np.asarray(x)
