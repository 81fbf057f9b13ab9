r"""Each audit row's certified ℓ2 radius: a distance r such that no input x' in the domain with
‖x' − x‖₂ < r has another top class than x.

``certify="global"``: r = m / (√2 L), m the logit margin z_top − z_second and L the certified
logit Lipschitz constant of the whole graph (:func:`fimaudit.lipschitz_bound`): every margin
z_top − z_j has gradient norm ≤ ‖e_top − e_j‖₂ L = √2 L, so it stays positive within m / (√2 L).
``certify="local"``: the larger of that and :func:`fimaudit.certified_radius` for the input (CROWN
margin bounds on ℓ2 balls around it, on the same ``input_domain``), computed one input at a time
in the calling process; each row's ``radius_from`` says which certificate gave its radius.
``certify=None``: no radius. Both need an ONNX graph (the summary's ``bound``); a journal keeps
the local radii it has computed, keyed by the input domain and the options, so a resumed audit
does not redo them and an audit with other options does not reuse them. ``certify_options``
({"alpha", "branches", "iterations"}, for ``certify="local"`` only) go to
:func:`fimaudit.certified_radius` and are named in the summary's entry.
References: Tsuzuku et al., NeurIPS 2018 (margin / (√2 L)); Zhang et al., NeurIPS 2018 (CROWN).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from ..errors import FimauditError, InvalidArgumentError
from ..hints import reader
from ..progress import tracking

CHOICES = ("global", "local", None)
OPTIONS = ("alpha", "branches", "iterations")  # the certified_radius keywords an audit passes on
FLAGS = {"alpha": "--certify-alpha", "branches": "--certify-branches", "iterations": "--certify-iterations"}


def check_options(certify, options):
    """``options`` as a dict of checked :data:`OPTIONS` values (empty for None), else an error
    naming the problem for its reader; they need ``certify="local"``."""
    from ..bounds.local.search import checked

    if options is None:
        return {}
    if not isinstance(options, dict) or not all(k in OPTIONS for k in options):
        raise InvalidArgumentError(
            f"certify_options takes a dict with keys among {', '.join(OPTIONS)}, got {options!r}"
        )
    if options and certify != "local":
        if reader() == "cli":
            raise InvalidArgumentError(f"{', '.join(FLAGS[k] for k in options)} need --certify local")
        raise InvalidArgumentError(f"certify_options={options!r} set the local radius' search: add certify='local'")
    values = {}
    for k, v in options.items():  # one at a time, so that an error names the flag that caused it
        given = {"iterations": 12, "alpha": 0, "branches": 0, k: v}
        try:
            iterations, _, alpha, branches = checked(given["iterations"], True, given["alpha"], given["branches"])
        except InvalidArgumentError as err:
            raise InvalidArgumentError(f"{FLAGS[k]}: {err}" if reader() == "cli" else str(err)) from None
        values[k] = dict(iterations=iterations, alpha=alpha, branches=branches)[k]
    return values


def check_certify(certify):
    """``certify`` if it is one of :data:`CHOICES`, else an error naming them for its reader."""
    if certify in CHOICES and (certify is None or isinstance(certify, str)):
        return certify
    if reader() == "cli":
        raise InvalidArgumentError(f"--certify takes global, local or none, got {certify!r}")
    raise InvalidArgumentError(
        f"certify must be 'global' (margin / (√2 L)), 'local' (also fimaudit.certified_radius per input) "
        f"or None (no radius), got {certify!r}"
    )


def domain_key(input_domain, options=None):
    """A digest of the input domain and the certify options, the key of the journal's local
    radii (the domain's alone without options, as journals were keyed before options existed)."""
    if input_domain is None and not options:
        return "none"
    parts = None if input_domain is None else [np.asarray(v, dtype=np.float64).tolist() for v in input_domain]
    if options:
        parts = dict(domain=parts, options=sorted(options.items()))
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def attach(model, X, rows, bound, certify, input_domain, journal=None, progress=None, options=None):
    """Set ``certified_radius`` and ``radius_from`` on ``rows`` (in place); the summary's entry:
    None when there is no radius, else which certificate the column holds and how many rows
    the local one improved."""
    if certify is None or not (bound and bound.get("available")):
        return None
    scale = np.sqrt(2.0) * bound["lipschitz"]
    for r in rows:
        r["certified_radius"] = None if r["margin"] is None else r["margin"] / scale
        r["radius_from"] = None if r["margin"] is None else "global"
    if certify == "global":
        return dict(certificate="global")
    options = options or {}
    key = domain_key(input_domain, options)
    known = journal.radii(key) if journal is not None else {}
    wanted = [r["index"] for r in rows if r["margin"] is not None]
    todo = [i for i in wanted if i not in known]
    local, reasons, cap = {i: known[i] for i in wanted if i in known}, {}, [True]
    with tracking(progress, "certified radius") as tracker:
        tracker.start(len(wanted), initial=len(wanted) - len(todo))
        for i in todo:
            local[i] = _one(model, X[i : i + 1], input_domain, reasons, cap, options)
            if journal is not None and local[i] is not None:
                journal.commit_radius(key, i, local[i])
            tracker.advance(1)
    improved = 0
    for r in rows:
        value = local.get(r["index"])
        if value is not None and value > r["certified_radius"]:
            r["certified_radius"], r["radius_from"] = value, "local"
            improved += 1
    out = dict(certificate="local", local_rows=improved, failed=sum(reasons.values()))
    if options:
        out["options"] = dict(options)
    if reasons:
        out["reason"] = next(iter(reasons))
    return out


def _one(model, x, input_domain, reasons, cap, options):
    """The local radius of one input, or None (its reason counted in ``reasons``). ``cap``
    (a one-item list) says whether to cap by the global bound: where that bound fails (an op with
    a local rule and no global one) it is retried uncapped (as sound: the global radius is taken
    separately) and the cap stays off for the rest."""
    from ..bounds.local import certified_radius

    while True:
        try:
            return float(certified_radius(model, x, input_domain=input_domain, global_cap=cap[0], **options)[0])
        except (FimauditError, ImportError) as err:
            if cap[0] and input_domain is not None:
                cap[0] = False
                continue
            why = f"{type(err).__name__}: {err}"
            reasons[why] = reasons.get(why, 0) + 1
            return None
