"""``fa.audit``: λ_max, its bracket and the trace for every input of a dataset, with
predictions and margins, a summary, the most sensitive inputs and their directions;
resumable through a journal and spread over any ``concurrent.futures.Executor``."""

from __future__ import annotations

import numpy as np

from .._array import to_numpy
from ..errors import FimauditError, InvalidArgumentError
from ..plugins import wrap
from ..progress import tracking
from .executors import run_chunks
from .identity import data_digest, model_identity
from .journal import Journal
from .provenance import recorded
from .radius import attach, check_certify, check_options
from .result import Audit
from .rows import numbered_chunk
from .summary import precision, summarize


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
    tol=None,
    bound=True,
    journal=None,
    executor=None,
    progress=None,
    seed=0,
    batch_size=64,
    top=5,
    input_domain=None,
    certify="global",
    certify_options=None,
) -> Audit:
    """Audit every input of X (n, *input_shape). See :class:`Audit` for what comes back.

    ``tol``: for a black-box sketch, probes in rounds until each input's 95% interval is within
    ±tol of its midpoint or ``budget`` runs out (:mod:`fimaudit.blackbox.sequential`); each row
    then carries ``tol_met``, ``halfwidth`` and ``probes``, the summary the precision reached,
    and inputs that missed tol are named in one warning per chunk.
    ``journal``: a SQLite path; finished chunks are committed as they complete and a rerun
    resumes where the last one stopped (it refuses a journal from another run).
    ``executor``: any ``concurrent.futures.Executor`` (a Dask ``Client.get_executor()``
    too); chunks of ``batch_size`` inputs are submitted to it.
    ``bound``: add the certified Lipschitz bound from the model's ONNX graph (when the
    adapter can give one); ``input_domain=(low, high)`` lets Transformers be bounded on that input box.
    ``certify``: each input's certified ℓ2 radius (with a graph): ``"global"`` margin / (√2 L),
    ``"local"`` the larger of that and :func:`fimaudit.certified_radius` (seconds per input; kept
    in the journal), None for none; rows say which gave it in ``radius_from``
    (:mod:`fimaudit.audit.radius`). ``certify_options``: for ``"local"``, a dict of
    :func:`fimaudit.certified_radius`'s ``alpha``, ``branches`` and ``iterations``.
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
    certify = check_certify(certify)
    certify_options = check_options(certify, certify_options)
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
    if tol is not None:  # absent otherwise: journals written before tol existed still resume
        settings["tol"] = tol
    jr = Journal(journal, settings) if journal is not None else None
    done = jr.done() if jr else {}
    chunks = [(lo, min(len(X), lo + batch_size)) for lo in range(0, len(X), batch_size)]
    todo = [(lo, hi) for lo, hi in chunks if not all(i in done for i in range(lo, hi))]
    rows = dict(done)

    try:  # the journal stays open for the local radii, and is closed however the run ends
        with tracking(progress, "audit") as tracker:
            tracker.start(len(X), initial=len(rows))

            def finish(new):
                before = len(rows)
                rows.update({r["index"]: r for r in new})
                if jr:
                    jr.commit(new)
                tracker.advance(len(rows) - before)

            if executor is None:
                for lo, hi in todo:
                    finish(numbered_chunk(m, X, y, lo, hi, method, budget, seed, top, tracker, tol))
            else:  # retries chunks whose worker died; the data goes once (Dask) or as each chunk's rows
                run_chunks(executor, numbered_chunk, m, X, y, todo, (method, budget, seed, top, False, tol), finish)
        ordered = [rows[i] for i in range(len(X))]
        directions = {r["index"]: r.pop("direction") for r in ordered if "direction" in r}
        summary = summarize(ordered, seed=seed)
        if tol is not None:
            summary["precision"] = precision(ordered, tol)
        graph_bound = _bound(m, bound, input_domain)
        summary["radius"] = attach(m, X, ordered, graph_bound, certify, input_domain, jr, progress, certify_options)
    finally:
        if jr:
            jr.close()
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
