"""The record of how finite-difference products were made, per input of a batch.

One typed record the estimators read (steps, noise, the step check, kink repairs,
nondeterminism); every array has one entry per input and one meaning. The rows each
part cost are on the estimator call's :class:`~fimaudit.ledger.QueryLedger`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["FDDiagnostics"]


def _zeros():
    return np.zeros(0)


@dataclass
class FDDiagnostics:
    scheme: str  # "central", "forward" or "richardson"
    step: np.ndarray  # h for unit directions
    noise: np.ndarray  # output noise σ (nats, on logits or log p)
    truncation: np.ndarray  # τ: relative change of a product when the step is halved, beyond noise
    nondeterministic: np.ndarray  # bool: the repeated base query was answered differently
    extrapolate: bool = False  # exact extrapolates the Gram to step 0 from steps h and 2h
    unresolved: np.ndarray = field(default_factory=_zeros)  # bool: the noise table never resolved the outputs
    repaired: np.ndarray = field(default_factory=_zeros)  # probes re-measured across a kink
    repair_rows: np.ndarray = field(default_factory=_zeros)  # rows those re-measures sent
    kink_error2: np.ndarray = field(default_factory=_zeros)  # Σ ‖(D₊ − D₋)/2‖² over unresolved kinks (log scale)
    kink_count: np.ndarray = field(default_factory=_zeros)  # how many probes that sum runs over
    gap_error2: np.ndarray = field(default_factory=_zeros)  # Σ ‖(D₊ − D₋)/2‖² over probes not re-measured
    gap_count: np.ndarray = field(default_factory=_zeros)  # how many probes that sum runs over

    def __post_init__(self):
        n = len(self.step)
        kinds = dict(repaired=np.int64, repair_rows=np.int64, kink_error2=np.float64, kink_count=np.float64)
        kinds.update(gap_error2=np.float64, gap_count=np.float64)
        for name, dtype in {**kinds, "unresolved": bool}.items():
            if len(getattr(self, name)) != n:
                setattr(self, name, np.zeros(n, dtype=dtype))
