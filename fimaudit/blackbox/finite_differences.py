r"""Finite differences for forward-only models: the model and its options.

``FiniteDifferenceModel(inner)`` gives a forward-only model a batched jvp
(:mod:`fimaudit.blackbox.products`). Set-up per input, before the first product: the base
point, the noise table and slope points (:mod:`fimaudit.blackbox.noise`), the step
(:mod:`fimaudit.blackbox.step`) and its step-halving check; central quotients across kinks
are repaired or extrapolated (:mod:`fimaudit.blackbox.kinks`); the error estimate that
widens the brackets is :mod:`fimaudit.blackbox.fd_error`. It is a
:class:`~fimaudit.ledger.MeteredModel`: every row sent to ``inner`` is charged to the
estimator call's ledger before it is sent, and :meth:`costs` is the cost table plans use.
Reference: Nocedal & Wright, *Numerical Optimization*, 2nd ed., §8.1.
"""

from __future__ import annotations

from ..errors import InvalidArgumentError
from ..ledger import Costs, MeteredModel
from ..models import Model
from . import noise as _noise
from .callable import CallableModel
from .products import FiniteDifferenceLinearization, check_rows
from .step import SCHEMES

__all__ = ["FiniteDifferenceModel", "FiniteDifferenceLinearization", "FD_OPTIONS"]

FD_OPTIONS = ("scheme", "step", "noise", "on_nondeterminism", "max_rows", "kinks")


class FiniteDifferenceModel(MeteredModel, Model):
    """A forward-only model with a batched jvp by finite differences.

    ``scheme``: "central" (default), "forward" or "richardson". ``step``: "auto" (from the
    measured noise) or an absolute step for unit directions. ``noise``: "auto" (measured) or
    a known noise level in nats. ``on_nondeterminism``: "widen" (flag it and widen brackets
    by the measured noise) or "raise". ``max_rows``: rows held at once in probe batches.
    ``kinks``: "repair" (default; central only: re-measure probes whose one-sided quotients
    disagree, 2 rows each, without a budget), "extrapolate" (central only: ``exact`` also
    measures every column at twice the step and extrapolates the Gram to step 0) or "ignore".
    """

    has_jvp = True
    has_vjp = False

    def __init__(
        self,
        inner,
        *,
        scheme="central",
        step="auto",
        noise="auto",
        on_nondeterminism="widen",
        max_rows=1 << 16,
        kinks="repair",
    ):
        super().__init__(inner=inner)
        if scheme not in SCHEMES:
            raise InvalidArgumentError(f"scheme must be one of {list(SCHEMES)}, got {scheme!r}")
        if not (step == "auto" or (isinstance(step, (int, float)) and step > 0)):
            raise InvalidArgumentError(f"step must be 'auto' or a positive number, got {step!r}")
        if not (noise == "auto" or (isinstance(noise, (int, float)) and noise >= 0)):
            raise InvalidArgumentError(f"noise must be 'auto' or a number >= 0 (nats), got {noise!r}")
        if on_nondeterminism not in ("widen", "raise"):
            raise InvalidArgumentError(f"on_nondeterminism must be 'widen' or 'raise', got {on_nondeterminism!r}")
        if kinks not in ("repair", "extrapolate", "ignore"):
            raise InvalidArgumentError(f"kinks must be 'repair', 'extrapolate' or 'ignore', got {kinks!r}")
        if kinks == "extrapolate" and scheme != "central":
            raise InvalidArgumentError(
                f"kinks='extrapolate' works on central differences, got scheme={scheme!r}: "
                "use scheme='central' or kinks='ignore'"
            )
        self.inner = inner
        self.kinks = kinks
        self.scheme, self.step, self.noise = scheme, step, noise
        self.on_nondeterminism = on_nondeterminism
        self.max_rows = int(max_rows)
        self.calls = 0  # rows sent to inner so far, by this model's products and forward passes

    def costs(self):
        per = SCHEMES[self.scheme][0]
        measured = self.noise == "auto"
        check = check_rows(self.scheme)
        setup = 1 + (_noise.TABLE_ROWS + check if measured else 0)
        note = "base point" + (
            f", noise table and slope ({_noise.TABLE_ROWS}; {_noise.TABLE_ROWS} more per widening when outputs are "
            f"quantised: under a budget a sketch takes fewer probes, or the call is refused), step check ({check})"
            if measured
            else ""
        )
        repair = self.kinks == "repair" and self.scheme == "central"
        return Costs(
            setup=setup,
            jvp=per,
            vjp=None,
            column=2 * per if self.kinks == "extrapolate" else per,
            setup_note=note,
            extras="plus 2 per probe re-measured across a kink (ReLU, max-pool; counted in queries)" if repair else "",
            batch=self.inner.batch_size if isinstance(self.inner, CallableModel) else None,
        )

    def forward(self, x):
        self.calls += int(x.shape[0])
        out = self.inner.forward(x)
        self.num_outputs = self.num_outputs or int(out.shape[1])
        return out

    def linearize(self, x, ledger=None):
        return FiniteDifferenceLinearization(self, x, ledger)

    def jvp(self, x, v):
        return self.linearize(x).jvp(v)

    def vjp(self, x, u):
        raise NotImplementedError("finite differences give jvps only")
