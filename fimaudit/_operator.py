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

import numpy as np

from . import first_order
from ._array import device, promote
from ._probs import ProbsLinearization
from ._validate import check_finite, check_logits
from .dispatch import holds_columns, holds_jacobian
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
        self._first = (None, None)  # first-order distance and class, once a Jacobian is formed
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
        check_finite(self.xp, out, self.offset, "Jacobian-vector products", options.get("inputs"))
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
        """W = R J (n, C, d) from d jvps along the coordinate axes (jvp-only models); at the
        plain step (no ``options``) the first-order distances are read off J on the way."""
        xp, n, d = self.xp, self.n, self.d
        eye = xp.eye(d, dtype=self.logits.dtype, device=device(self.logits))
        chunk = holds_columns(n, d, d, self.itemsize, memory_limit)
        cols = [
            self.jvp_many(xp.broadcast_to(eye[None, lo : lo + chunk, :], (n, min(chunk, d - lo), d)), **options)
            for lo in range(0, d, chunk)
        ]
        JT = cols[0] if len(cols) == 1 else xp.concat(cols, axis=1)  # (n, d, C): Jᵀ
        if not options:
            J = xp.permute_dims(JT, (0, 2, 1))
            self._first = first_order.from_jacobian(xp, self.likelihood.name, self.logits, J)
        return xp.permute_dims(self.R.apply(JT), (0, 2, 1))

    # --- dense ---------------------------------------------------------------------
    @property
    def itemsize(self):
        return self.xp.finfo(self.logits.dtype).bits // 8

    def gram(self, memory_limit):
        """B (n, C, C) from C vjps (or, for a jvp-only model, d jvps: :meth:`columns`); also
        W = R J (n, C, d) when it fits ``memory_limit`` bytes (always, for jvp only).

        With vjps the cotangents are the unit vectors e_c, so the rows of J itself come back
        (the same C products as R's rows would take); ``W = R J`` and ``B = W Wᵀ`` are then
        formed in float64 (when the backend has it) and returned in float64, and the
        first-order distances are read off J (:mod:`fimaudit.first_order`). When W does not
        fit, ``J Jᵀ`` is built chunk by chunk (C vjps + C jvps) with the anchor class's row
        first, so the gradient differences are still taken between rows of J."""
        xp, n, C, d = self.xp, self.n, self.C, self.d
        if not self.model.has_vjp:
            W = self.columns(memory_limit)
            return xp.matmul(W, xp.permute_dims(W, (0, 2, 1))), W
        kind = self.likelihood.name
        R64 = self.likelihood.factor(xp, promote(xp, self.logits))
        if holds_jacobian(n, C, d, self.itemsize, memory_limit) >= C:  # J and W fit: the plan's test
            left = int(memory_limit) - n * C * d * (self.itemsize + 8)  # for the working arrays
            eye = xp.eye(C, dtype=self.logits.dtype, device=device(self.logits))
            J = self.vjp_many(xp.broadcast_to(eye[None, :, :], (n, C, C)))  # rows of J
            self._first = first_order.from_jacobian(xp, kind, self.logits, J, left)
            W = self._apply_rows(R64, J, left)
            return xp.matmul(W, xp.permute_dims(W, (0, 2, 1))), W
        # Too large to hold: G = J Jᵀ from rows of J chunk by chunk (C vjps + C jvps), then B = R G Rᵀ.
        y = first_order.anchor(kind, self.logits)
        order = np.broadcast_to(np.arange(C), (n, C))
        if y is not None:  # the anchor's row first: every chunk's differences are taken against it
            order = np.argsort(np.arange(C)[None, :] != y[:, None], axis=1, kind="stable")
        P = np.zeros((n, C, C))
        P[np.arange(n)[:, None], np.arange(C)[None, :], order] = 1.0  # row r of P is e_{order[r]}
        P = xp.asarray(P, dtype=self.logits.dtype, device=device(self.logits))
        # rows of J a chunk at a time, each with its working arrays, beside the anchor's row
        room = int(memory_limit) - n * d * (self.itemsize + 8)
        chunk = max(1, min(C, room // max(1, n * d * (self.itemsize + first_order.WORK))))
        rows, norms, Jy = [], [], None
        for lo in range(0, C, chunk):
            Jc = self.vjp_many(P[:, lo : lo + chunk, :])  # rows order[lo:hi] of J
            Jy = xp.asarray(Jc[:, 0, :], copy=True) if Jy is None else Jy  # a copy: the chunk can go
            if kind in ("categorical", "bernoulli"):
                norms.append(first_order.gradient_gaps(xp, kind, Jc, Jy))
            rows.append(promote(xp, self.jvp_many(Jc)))
        Pt = xp.permute_dims(promote(xp, P), (0, 2, 1))
        G = xp.matmul(Pt, xp.concat(rows, axis=1))  # back to class order: a permutation, exact
        if norms:
            gnorm = np.take_along_axis(np.concatenate(norms, axis=1), np.argsort(order, axis=1), axis=1)
            self._first = first_order.pick(first_order.gaps(kind, self.logits, y), gnorm, y)
        GR = R64.apply(G)  # rows R g_r: G Rᵀ
        return R64.apply(xp.permute_dims(GR, (0, 2, 1))), None

    def _apply_rows(self, R, J, memory):
        """W = R J (n, C, d) in R's dtype, a block of columns at a time so that R's temporaries
        (up to 8 float64 blocks) stay within ``memory`` bytes."""
        xp, (n, C, d) = self.xp, J.shape
        step = max(1, min(d, int(memory) // max(1, 8 * 8 * n * C)))

        def block(lo):
            return xp.permute_dims(R.apply(xp.permute_dims(promote(xp, J[:, :, lo : lo + step]), (0, 2, 1))), (0, 2, 1))

        if step >= d:
            return block(0)
        W = xp.zeros((n, C, d), dtype=promote(xp, self.logits).dtype, device=device(J))
        for lo in range(0, d, step):
            W[:, :, lo : lo + step] = block(lo)
        return W

    @property
    def first_order(self):
        """``first_order_distance`` (n,) and ``first_order_class`` (n,) of the last Jacobian
        :meth:`gram` or :meth:`columns` held (:mod:`fimaudit.first_order`); None for a
        Gaussian model or before any Jacobian was formed."""
        dist, cls = self._first
        if dist is not None:
            dist = self.xp.asarray(dist, dtype=self.logits.dtype, device=device(self.logits))
        return dict(first_order_distance=dist, first_order_class=cls)

    def cast(self, a):
        """``a`` in the logits' dtype (results come back in the caller's dtype)."""
        return None if a is None else self.xp.astype(a, self.logits.dtype)

    def lift(self, U, W=None):
        """Input-space unit vectors Jᵀ Rᵀ u for U (n, k, C) → (n, k, *input_shape)."""
        xp = self.xp
        V = self.cast(xp.matmul(U, W) if W is not None else self.vjp_many(self.R.apply_t(self.cast(U))))
        norm = xp.linalg.vector_norm(V, axis=-1, keepdims=True)
        V = xp.where(norm > 0, V / xp.where(norm > 0, norm, xp.ones_like(norm)), xp.zeros_like(V))
        return self._unflat(V, (self.n, U.shape[1]))
