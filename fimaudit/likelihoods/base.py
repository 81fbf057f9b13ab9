"""The likelihood interface: the factor R, the metric's rank and norm bound, the map from
probabilities to natural parameters, and the readouts an audit reports."""

from __future__ import annotations

import numpy as np

from .._factor import Factor
from .._validate import _show
from ..errors import InvalidArgumentError


class Likelihood:
    """A likelihood: its name, the factor of its metric, its rank and norm bounds, the map
    from a model's outputs to natural parameters, and the readouts an audit reports."""

    name = ""

    def __init__(self, sigma: float = 1.0):
        if not (sigma > 0):
            raise InvalidArgumentError(f"sigma must be > 0 (the Gaussian noise scale), got {sigma!r}")
        self.sigma = float(sigma)

    def factor(self, xp, z) -> Factor:  # pragma: no cover - abstract
        raise NotImplementedError

    def metric_rank(self, C: int) -> int:
        """The largest possible rank of M (so of F) for C outputs."""
        return C

    def metric_norm_bound(self) -> float:
        """A bound on λ_max(M(z)) valid for every z."""
        raise NotImplementedError

    def min_outputs(self) -> int:
        return 1

    # --- outputs → natural parameters ------------------------------------------------
    def check_output(self, output):
        """Refuse an output kind ("logits" or "probs") this likelihood cannot read.

        >>> from fimaudit.likelihoods import get_likelihood
        >>> get_likelihood("gaussian").check_output("probs")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        fimaudit.errors.InvalidArgumentError: a Gaussian likelihood reads a model's outputs as means, ...
        """

    def natural_from_probs(self, xp, p):
        """``(z, dz_dp, live)`` for probabilities p (n, C): the natural parameters, their
        derivative in p entry by entry (0 where clipped) and the mask of entries not clipped.

        >>> from fimaudit.likelihoods import get_likelihood
        >>> import numpy as np
        >>> z, dz, live = get_likelihood("bernoulli").natural_from_probs(np, np.array([[0.5, 0.8, 1.0]]))
        >>> np.round(z[0, :2], 6).tolist(), np.round(dz[0], 6).tolist(), live[0].tolist()
        ([0.0, 1.386294], [4.0, 6.25, 0.0], [True, True, False])
        """
        self.check_output("probs")
        raise NotImplementedError

    def invalid_probs(self, p, tol):
        """``(bad, why)`` for probabilities p (numpy, (m, C)): the mask of rows this likelihood
        cannot read as probabilities within ``tol``, and what is wrong with them (None if none).

        >>> from fimaudit.likelihoods import get_likelihood
        >>> import numpy as np
        >>> bad, why = get_likelihood("categorical").invalid_probs(np.array([[0.5, 0.5], [0.9, 0.9]]), 1e-3)
        >>> bad.tolist(), why.split(";")[0]
        ([False, True], 'probabilities in rows [1] sum to 1.8, not 1 (tolerance 0.001)')
        """
        self.check_output("probs")
        finite = np.all(np.isfinite(p), axis=1)
        neg = finite & np.any(p < -tol, axis=1)
        over = finite & np.any(p > 1.0 + tol, axis=1)
        bad = ~finite | neg | over
        if not finite.all():
            why = f"the model returned NaN or infinite probabilities in rows {_show(np.flatnonzero(~finite))}"
        elif neg.any():
            why = (
                f"the model returned negative probabilities in rows {_show(np.flatnonzero(neg))} (min {p.min():.3g}); "
                "if it returns logits or log-probabilities, wrap it with output='logits'"
            )
        elif over.any():
            why = (
                f"the model returned probabilities above 1 in rows {_show(np.flatnonzero(over))} (max {p.max():.6g}); "
                "if it returns scores, wrap it with output='logits'"
            )
        else:
            why = None
        return bad, why

    def hard_labels(self, p):
        """Why probabilities p (numpy, (m, C)) are hard labels — every entry of every row
        exactly 0 or 1, so for a categorical model every row one-hot — or None if they are
        not. The Fisher information of such outputs is not defined: the output distribution
        does not vary smoothly with the input, it jumps where the label changes.

        >>> from fimaudit.likelihoods import get_likelihood
        >>> import numpy as np
        >>> get_likelihood("categorical").hard_labels(np.array([[0.0, 1.0], [1.0, 0.0]])).split(":")[0]
        'the model answered every row of a batch of 2 with hard labels (probabilities exactly 0 or 1)'
        >>> get_likelihood("categorical").hard_labels(np.array([[0.0, 1.0], [0.25, 0.75]])) is None
        True
        """
        if p.size == 0 or not np.all((p == 0.0) | (p == 1.0)):
            return None
        return (
            f"the model answered every row of a batch of {p.shape[0]} with hard labels (probabilities exactly 0 "
            "or 1): the Fisher information is not defined for hard-label outputs, since the output distribution "
            "does not vary smoothly with the input (it jumps where the label changes); ask the service for its "
            "probabilities, or for its scores or logits and wrap it with output='logits'"
        )

    # --- what an audit reports -------------------------------------------------------
    def predict(self, z):
        """The decision read off natural parameters z (numpy, (n, C)), one per row."""
        raise NotImplementedError

    def confidence(self, z):
        """The probability the model gives its decision, per row; None if it has none."""
        raise NotImplementedError

    def margin(self, z):
        """The smallest change of one logit that changes the decision, per row; None if none."""
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}()"


def _tiny(xp, p):
    return float(xp.finfo(p.dtype).smallest_normal)
