"""``fa.audit``: λ_max, its bracket and the trace for every input of a dataset, with
predictions and margins, a summary, the most sensitive inputs and their directions;
resumable through a journal and spread over any ``concurrent.futures.Executor``."""

from __future__ import annotations

import time

import numpy as np

from .._array import to_numpy
from ..errors import FimauditError, InvalidArgumentError
from ..first_order import per_row
from ..fisher import fisher_norm, fisher_trace
from ..hints import numbered_from
from ..likelihoods import get_likelihood
from ..plugins import wrap
from ..progress import tracking
from .executors import run_chunks
from .identity import data_digest, model_identity
from .journal import Journal
from .provenance import recorded
from .result import Audit
from .summary import summarize


def _readouts(m, z):
    """Prediction, confidence and margin of each row, read by the model's likelihood off the
    natural parameters z the estimator used (log p for a categorical model served as
    probabilities): :meth:`~fimaudit.likelihoods.Likelihood.predict` and the two after it.
    A Gaussian model has no confidence and no margin (None).

    >>> import numpy as np
    >>> from fimaudit.testing import LinearModel
    >>> _readouts(LinearModel(np.eye(2), likelihood="bernoulli"), np.array([[1.0, -3.0]]))
    ([0], [0.7310585786300049], [1.0])
    """
    lik = get_likelihood(m.likelihood, m.sigma)
    z = np.asarray(to_numpy(z), dtype=np.float64)
    conf, margin = lik.confidence(z), lik.margin(z)
    none = [None] * len(z)
    return lik.predict(z).tolist(), none if conf is None else conf.tolist(), none if margin is None else margin.tolist()


def _chunk(m, X, y, lo, hi, method, budget, seed, top=0, progress=False):
    """The rows of inputs lo..hi (with the first-order distance and class when the method was
    ``exact``); the ``top`` largest λ_max of the chunk carry their direction
    (``"direction"``), found in the same estimator call, so every row sent is on the budget.
    ``progress``: the audit's tracker (its model rows), or False."""
    t0 = time.perf_counter()
    xb = X[lo:hi]
    try:
        opts = dict(on_nonconvergence="flag", return_direction=top > 0, progress=progress)
        r = fisher_norm(m, xb, method=method, budget=budget, seed=seed + lo, **opts)
        trace = None  # white-box models only: free with exact; a trace estimator when no budget caps the calls
        if m.has_vjp and (r.trace is not None or budget is None):
            trace = to_numpy(r.trace if r.trace is not None else fisher_trace(m, xb, progress=progress).value)
        prediction, confidence, margin = _readouts(m, r.logits)
        status = ["ok" if c else "not converged" for c in r.converged]
        vals, low, up = (to_numpy(a).astype(np.float64) for a in (r.value, r.lower, r.upper))
        first, first_class = per_row(r.first_order_distance, r.first_order_class, hi - lo)
    except FimauditError as err:  # keep going: these rows say why they have no number
        msg = f"error: {type(err).__name__}: {err}"
        return [
            dict(
                index=i,
                label=None if y is None else int(y[i]),
                prediction=None,
                confidence=None,
                margin=None,
                lambda_max=None,
                lower=None,
                upper=None,
                trace=None,
                first_order_distance=None,
                first_order_class=None,
                queries=None,
                seconds=None,
                status=msg,
            )
            for i in range(lo, hi)
        ]
    seconds = (time.perf_counter() - t0) / (hi - lo)
    rows = []
    for j, i in enumerate(range(lo, hi)):
        rows.append(
            dict(
                index=i,
                label=None if y is None else int(y[i]),
                prediction=prediction[j],
                confidence=confidence[j],
                margin=margin[j],
                lambda_max=float(vals[j]),
                lower=float(low[j]),
                upper=float(up[j]),
                trace=None if trace is None else float(trace[j]),
                first_order_distance=first[j],
                first_order_class=first_class[j],
                queries=int(r.queries[j]),
                seconds=seconds,
                status=status[j],
            )
        )
    if top > 0 and r.direction is not None:
        d = to_numpy(r.direction)
        for j in np.argsort(-vals, kind="stable")[:top]:
            rows[j]["direction"] = d[j].astype(float).ravel().tolist()
    return rows


def _numbered_chunk(m, X, y, lo, hi, *rest):
    """:func:`_chunk` whose warnings name inputs by their place in X, not in the chunk."""
    with numbered_from(lo):
        return _chunk(m, X, y, lo, hi, *rest)


def _bound(m, enabled, input_domain=None):
    """The certified graph bound when an ONNX graph is available, else why not."""
    if not enabled:
        return None
    try:
        from ..bounds import lipschitz_bound

        b = lipschitz_bound(m, input_domain=input_domain)
    except (FimauditError, ImportError) as err:
        return dict(available=False, reason=f"{type(err).__name__}: {err}")
    return dict(
        available=True,
        lipschitz=b.lipschitz,
        fisher_bound=b.fisher_bound,
        layers=b.layers,
        softmax_skipped=b.softmax_skipped,
    )


@recorded
def audit(
    model,
    X,
    y=None,
    *,
    method="auto",
    budget=None,
    bound=True,
    journal=None,
    executor=None,
    progress=None,
    seed=0,
    batch_size=64,
    top=5,
    input_domain=None,
) -> Audit:
    """Audit every input of X (n, *input_shape). See :class:`Audit` for what comes back.

    ``journal``: a SQLite path; finished chunks are committed as they complete and a rerun
    resumes where the last one stopped (it refuses a journal from another run).
    ``executor``: any ``concurrent.futures.Executor`` (a Dask ``Client.get_executor()``
    too); chunks of ``batch_size`` inputs are submitted to it.
    ``bound``: add the certified Lipschitz bound from the model's ONNX graph (when the
    adapter can give one) and each input's certified radius, margin / (√2 L);
    ``input_domain=(low, high)`` lets Transformers be bounded on that input box.
    ``progress``: a bar of the inputs finished and the model rows sent; None (default) when
    standard error is a terminal, True/False to force it (:mod:`fimaudit.progress`).

    >>> import numpy as np, fimaudit as fa
    >>> from fimaudit.testing import LinearModel
    >>> m = LinearModel(np.array([[1.0, 0.0], [0.0, 2.0]]))  # z = W x; at x = 0, p = (½, ½)
    >>> a = fa.audit(m, np.zeros((3, 2)), progress=False)
    >>> first = a.rows[0]
    >>> a.summary["completed"], round(first["lambda_max"], 12)
    (3, 1.25)
    """
    m = wrap(model)
    X = np.asarray(to_numpy(X))
    if X.ndim < 1 or X.shape[0] == 0:
        raise InvalidArgumentError("X is empty: pass at least one input")
    if m.input_shape is not None and tuple(X.shape[1:]) != m.input_shape:
        raise InvalidArgumentError(
            f"X has shape {X.shape}; the model expects (n, {', '.join(map(str, m.input_shape))})"
        )
    if m.input_shape is None:  # a framework module learns its input shape from the data (the bound's export needs it)
        m = m.with_options(input_shape=tuple(X.shape[1:]))
    if not np.all(np.isfinite(X)):
        bad = np.flatnonzero(~np.all(np.isfinite(X.reshape(len(X), -1)), axis=1))
        raise InvalidArgumentError(f"X has NaN or infinite values in rows {bad[:10].tolist()}; clean or drop them")
    if y is not None:
        y = np.asarray(y)
        if y.shape != (len(X),):
            raise InvalidArgumentError(f"labels have shape {y.shape}; expected ({len(X)},), one label per input")
    settings = dict(  # the journal's fingerprint: every data and label byte, the model's identity
        method=method,
        budget=budget,
        seed=seed,
        batch_size=batch_size,
        model=model_identity(m, probe=lambda: X[:2]),
        data=data_digest(X),
        labels=None if y is None else data_digest(y),
        n=len(X),
    )
    jr = Journal(journal, settings) if journal is not None else None
    done = jr.done() if jr else {}
    chunks = [(lo, min(len(X), lo + batch_size)) for lo in range(0, len(X), batch_size)]
    todo = [(lo, hi) for lo, hi in chunks if not all(i in done for i in range(lo, hi))]
    rows = dict(done)

    with tracking(progress, "audit") as tracker:
        tracker.start(len(X), initial=len(rows))

        def finish(new):
            before = len(rows)
            rows.update({r["index"]: r for r in new})
            if jr:
                jr.commit(new)
            tracker.advance(len(rows) - before)

        try:
            if executor is None:
                for lo, hi in todo:
                    finish(_numbered_chunk(m, X, y, lo, hi, method, budget, seed, top, tracker))
            else:  # retries chunks whose worker died; the data goes once (Dask) or as each chunk's rows
                run_chunks(executor, _numbered_chunk, m, X, y, todo, (method, budget, seed, top), finish)
        finally:
            if jr:
                jr.close()
    ordered = [rows[i] for i in range(len(X))]
    directions = {r["index"]: r.pop("direction") for r in ordered if "direction" in r}
    summary = summarize(ordered, seed=seed)
    graph_bound = _bound(m, bound, input_domain)
    if graph_bound and graph_bound["available"]:
        L = graph_bound["lipschitz"]
        for r in ordered:
            r["certified_radius"] = None if r["margin"] is None else r["margin"] / (np.sqrt(2.0) * L)
    summary["bound"] = graph_bound
    ranked = sorted((r for r in ordered if r["lambda_max"] is not None), key=lambda r: -r["lambda_max"])[:top]
    top_rows = []
    if ranked:  # their directions came with λ_max, from the same estimator calls
        for r in ranked:
            top_rows.append(
                dict(
                    index=r["index"],
                    lambda_max=r["lambda_max"],
                    label=r["label"],
                    prediction=r["prediction"],
                    confidence=r["confidence"],
                    input=X[r["index"]].astype(float).ravel().tolist(),
                    direction=directions.get(r["index"]),
                )
            )
    return Audit(rows=ordered, summary=summary, settings=settings, top=top_rows, input_shape=tuple(X.shape[1:]))
