r"""The Fisher operator of one batch, built from the adapter's products.

At a batch x with logits z and Jacobian J (C × d per input) the input Fisher is
``F = (R J)ᵀ (R J)`` with ``RᵀR = M(z)`` (see :mod:`fimaudit.likelihoods`). This
module exposes, batched over inputs and counting every model evaluation:

* ``b_matvec(u)``  = ``R J Jᵀ Rᵀ u``  (output space, C-dim; one vjp + one jvp),
* ``quadratic(V)`` = ``‖R J v‖²`` per probe (input space; one jvp each),
* ``gram()``       = ``B = R J Jᵀ Rᵀ`` densely from C vjps (``W = R J``), or for a
  jvp-only model from d jvps along the coordinate axes (``columns``),
* ``lift(U)``      = unit ``Jᵀ Rᵀ u``: the input-space eigenvector of F for an
  eigenvector u of B, since ``F Jᵀ Rᵀ u = Jᵀ Rᵀ B u`` and ``‖JᵀRᵀu‖² = uᵀ B u``.

Every model evaluation goes through the call's :class:`~fimaudit.ledger.QueryLedger`,
charged before it is made (:func:`fimaudit.ledger.linearize`); ``queries`` reads it.
``fd`` is the linearization's diagnostics record (finite differences), None otherwise.
"""

from __future__ import annotations

import math

from ._array import device
from ._probs import ProbsLinearization
from ._validate import check_finite, check_logits
from .dispatch import holds_columns
from .errors import InvalidArgumentError
from .ledger import QueryLedger, linearize
from .likelihoods import get_likelihood


class FisherOperator:
    def __init__(self, model, xp, x, offset=0, ledger=None):
        self.xp = xp
        self.model = model
        self.x = x
        self.offset = offset
        self.n = int(x.shape[0])
        self.input_shape = tuple(x.shape[1:])
        self.d = math.prod(self.input_shape)
        self.ledger = QueryLedger(None, self.n) if ledger is None else ledger
        lin = linearize(model, x, self.ledger)
        self.fd = lin.diagnostics
        self.floored = None
        self.likelihood = get_likelihood(model.likelihood, model.sigma)
        if model.output == "probs":  # the likelihood maps probabilities to its natural parameters
            lin = ProbsLinearization(xp, lin, self.likelihood)
            self.floored = lin.floored
        self.lin = lin
        z = lin.logits
        check_logits(xp, z, self.n, model.num_outputs, offset)
        self.logits = z
        self.C = int(z.shape[1])
        if self.C < self.likelihood.min_outputs():
            raise InvalidArgumentError(
                f"a {self.likelihood.name} likelihood needs at least {self.likelihood.min_outputs()} "
                f"outputs, the model has {self.C}; for one logit use likelihood='bernoulli'"
            )
        self.R = self.likelihood.factor(xp, z)
        self.rank = min(self.likelihood.metric_rank(self.C), self.d)

    @property
    def queries(self):
        """(n,) rows sent per input so far."""
        return self.ledger.spent.copy()

    # --- products (each charged by the linearization before it is made) --------------
    def _flat(self, a, lead):
        return self.xp.reshape(a, (*lead, self.d))

    def _unflat(self, a, lead):
        return self.xp.reshape(a, (*lead, *self.input_shape))

    def jvp_many(self, V, **options):  # (n, k, d) -> (n, k, C); options: the linearization's own
        n, k = V.shape[0], V.shape[1]
        out = self.lin.jvp_many(self._unflat(V, (n, k)), **options)
        check_finite(self.xp, out, self.offset, "Jacobian-vector products")
        return out

    def vjp_many(self, U):  # (n, k, C) -> (n, k, d)
        k = U.shape[1]
        out = self._flat(self.lin.vjp_many(U), (self.n, k))
        check_finite(self.xp, out, self.offset, "vector-Jacobian products")
        return out

    def b_matvec(self, u):
        """(n, C) → R J Jᵀ Rᵀ u."""
        w = self.lin.vjp(self.R.apply_t(u))
        check_finite(self.xp, w, self.offset, "vector-Jacobian products")
        Jw = self.lin.jvp(w)
        check_finite(self.xp, Jw, self.offset, "Jacobian-vector products")
        return self.R.apply(Jw)

    def b_matmat(self, U):
        """(n, m, C) → R J Jᵀ Rᵀ U."""
        W = self.vjp_many(self.R.apply_t(U))
        return self.R.apply(self.jvp_many(W))

    def quadratic(self, V):
        """(n, k, d) probes → (n, k) values vᵀ F v = ‖R J v‖²."""
        Y = self.R.apply(self.jvp_many(V))
        return self.xp.sum(Y * Y, axis=-1)

    def sketch(self, Q, **options):
        """S = R J Qᵀ, shape (n, C, k), from k jvps along the rows of Q (n, k, d). With
        ``inputs=`` (numpy ints), Q's rows belong to those inputs, and only they are sent."""
        idx = options.get("inputs")
        Y = self.jvp_many(Q, **options)
        if idx is not None:  # R of the whole batch, applied to the rows of those inputs
            xp = self.xp
            ii = xp.asarray(idx, device=device(Y))
            full = xp.zeros((self.n, *Y.shape[1:]), dtype=Y.dtype, device=device(Y))
            full[ii] = Y
            return xp.permute_dims(xp.take(self.R.apply(full), ii, axis=0), (0, 2, 1))
        return self.xp.permute_dims(self.R.apply(Y), (0, 2, 1))

    def columns(self, memory_limit, **options):
        """W = R J (n, C, d) from d jvps along the coordinate axes (jvp-only models)."""
        xp, n, d = self.xp, self.n, self.d
        eye = xp.eye(d, dtype=self.logits.dtype, device=device(self.logits))
        chunk = holds_columns(n, d, d, self.itemsize, memory_limit)
        cols = [
            self.sketch(xp.broadcast_to(eye[None, lo : lo + chunk, :], (n, min(chunk, d - lo), d)), **options)
            for lo in range(0, d, chunk)
        ]
        return cols[0] if len(cols) == 1 else xp.concat(cols, axis=2)

    # --- dense ---------------------------------------------------------------------
    @property
    def itemsize(self):
        return self.xp.finfo(self.logits.dtype).bits // 8

    def gram(self, memory_limit):
        """B (n, C, C) from C vjps (or, for a jvp-only model, d jvps: :meth:`columns`); also
        W = R J (n, C, d) when it fits ``memory_limit`` bytes (always, for jvp only)."""
        xp, n, C, d = self.xp, self.n, self.C, self.d
        if not self.model.has_vjp:
            W = self.columns(memory_limit)
            return xp.matmul(W, xp.permute_dims(W, (0, 2, 1))), W
        Rd = self.R.dense(n, C, self.logits)  # (n, C, C); row c of R is the cotangent of W_c
        chunk = holds_columns(n, C, d, self.itemsize, memory_limit)
        if chunk >= C:
            W = self.vjp_many(Rd)  # rows of W = R J
            return xp.matmul(W, xp.permute_dims(W, (0, 2, 1))), W
        # Too large to hold: B[:, :, c] = R J (W_c)ᵀ, chunk by chunk (C vjps + C jvps).
        cols = []
        for lo in range(0, C, chunk):
            Wc = self.vjp_many(Rd[:, lo : lo + chunk, :])
            cols.append(self.R.apply(self.jvp_many(Wc)))
        B = xp.permute_dims(xp.concat(cols, axis=1), (0, 2, 1))
        return B, None

    def lift(self, U, W=None):
        """Input-space unit vectors Jᵀ Rᵀ u for U (n, k, C) → (n, k, *input_shape)."""
        xp = self.xp
        V = xp.matmul(U, W) if W is not None else self.vjp_many(self.R.apply_t(U))
        norm = xp.linalg.vector_norm(V, axis=-1, keepdims=True)
        V = xp.where(norm > 0, V / xp.where(norm > 0, norm, xp.ones_like(norm)), xp.zeros_like(V))
        return self._unflat(V, (self.n, U.shape[1]))
