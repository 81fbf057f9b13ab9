"""Every raise, from one table: the fimaudit error, its built-in base, and the fix named."""

import numpy as np
import pytest

import fimaudit as fa
from fimaudit import errors as E
from fimaudit.testing import ForwardLinearModel, LinearModel, MLPModel

RNG = np.random.default_rng(0)
MLP = MLPModel.random([4, 6, 3], seed=0)
X = RNG.standard_normal((3, 4))


class NaNModel(LinearModel):
    def forward(self, x):
        z = super().forward(x)
        z[x[:, 0] == X[1, 0], 0] = np.nan  # the second row of X, wherever it sits in a batch
        return z


class WrongShapeModel(LinearModel):
    def forward(self, x):
        return super().forward(x)[:, :, None]


class BadJvpModel(LinearModel):
    def jvp(self, x, v):
        out = super().jvp(x, v)
        out[2] = np.inf
        return out


def _spread_model():
    """C = 40 categorical with a spread spectrum: Lanczos cannot finish in 2 steps."""
    return MLPModel.random([30, 40, 40], seed=1, scale=3.0)


CASES = [
    (
        "wrong shape",
        lambda: fa.fisher_norm(MLP, RNG.standard_normal((3, 5))),
        E.InputShapeError,
        ValueError,
        "expected (n, 4)",
    ),
    ("missing batch axis", lambda: fa.fisher_norm(MLP, X[0]), E.InputShapeError, ValueError, "x[None]"),
    (
        "integer dtype",
        lambda: fa.fisher_norm(MLP, np.ones((2, 4), dtype=np.int64)),
        E.InputDtypeError,
        TypeError,
        "astype",
    ),
    ("not an array", lambda: fa.fisher_norm(MLP, "x"), E.InputDtypeError, TypeError, "must be an array"),
    ("empty batch", lambda: fa.fisher_norm(MLP, np.zeros((0, 4))), E.EmptyBatchError, ValueError, "empty batch"),
    (
        "NaN input",
        lambda: fa.fisher_norm(MLP, np.where(np.arange(12).reshape(3, 4) == 5, np.nan, X)),
        E.InvalidArgumentError,
        ValueError,
        "rows [1]",
    ),
    (
        "non-finite logits",
        lambda: fa.fisher_norm(NaNModel(np.eye(3, 4)), X),
        E.NonFiniteOutputError,
        FloatingPointError,
        "inputs [1]",
    ),
    (
        "non-finite jvp",
        lambda: fa.fisher_norm(BadJvpModel(np.eye(3, 4)), X, method="lanczos"),
        E.NonFiniteOutputError,
        ArithmeticError,
        "inputs [2]",
    ),
    (
        "logits not 2-D",
        lambda: fa.fisher_norm(WrongShapeModel(np.eye(3, 4)), X),
        E.InvalidArgumentError,
        ValueError,
        "expected (3, C)",
    ),
    (
        "num_outputs mismatch",
        lambda: fa.fisher_norm(MLP.with_options(num_outputs=5), X),
        E.InvalidArgumentError,
        ValueError,
        "num_outputs=5",
    ),
    (
        "categorical, 1 class",
        lambda: fa.fisher_norm(LinearModel(np.ones((1, 4))), X),
        E.InvalidArgumentError,
        ValueError,
        "likelihood='bernoulli'",
    ),
    ("k > rank", lambda: fa.fisher_spectrum(MLP, X, k=3), E.InvalidArgumentError, ValueError, "k <= 2"),
    (
        "k > d",
        lambda: fa.fisher_spectrum(LinearModel(np.ones((5, 2)), likelihood="gaussian"), X[:, :2], k=3),
        E.InvalidArgumentError,
        ValueError,
        "d=2",
    ),
    ("tol = 0", lambda: fa.fisher_norm(MLP, X, tol=0), E.InvalidArgumentError, ValueError, "tol must be a positive"),
    ("tol < 0", lambda: fa.fisher_norm(MLP, X, method="lanczos", tol=-1e-3), E.InvalidArgumentError, ValueError, "tol"),
    ("tol NaN", lambda: fa.fisher_norm(MLP, X, tol=float("nan")), E.InvalidArgumentError, ValueError, "tol"),
    ("unknown method", lambda: fa.fisher_norm(MLP, X, method="svd"), E.InvalidArgumentError, ValueError, "'lanczos'"),
    (
        "unknown trace method",
        lambda: fa.fisher_trace(MLP, X, method="girard"),
        E.InvalidArgumentError,
        ValueError,
        "'hutchpp'",
    ),
    (
        "unknown likelihood",
        lambda: MLP.with_options(likelihood="poisson"),
        E.InvalidArgumentError,
        ValueError,
        "categorical",
    ),
    (
        "sigma <= 0",
        lambda: MLP.with_options(likelihood="gaussian", sigma=0),
        E.InvalidArgumentError,
        ValueError,
        "sigma",
    ),
    ("unknown wrap option", lambda: fa.wrap(MLP, temperature=2), E.InvalidArgumentError, ValueError, "temperature"),
    (
        "budget below exact",
        lambda: fa.fisher_norm(MLP, X, method="exact", budget=3),
        E.InvalidArgumentError,
        ValueError,
        "needs 4 products",
    ),
    (
        "budget below one step",
        lambda: fa.fisher_norm(MLP, X, method="lanczos", budget=2),
        E.InvalidArgumentError,
        ValueError,
        "budget >= 3",
    ),
    (
        "bad nonconvergence policy",
        lambda: fa.fisher_norm(MLP, X, on_nonconvergence="ignore"),
        E.InvalidArgumentError,
        ValueError,
        "'flag'",
    ),
    (
        "Lanczos not converged",
        lambda: fa.fisher_norm(_spread_model(), RNG.standard_normal((4, 30)), method="lanczos", max_steps=2, tol=1e-12),
        E.NotConvergedError,
        ArithmeticError,
        ".partial",
    ),
    ("unsupported object", lambda: fa.wrap(object()), E.UnsupportedModelError, TypeError, "subclass fimaudit.Model"),
    ("batch_size 0", lambda: fa.fisher_norm(MLP, X, batch_size=0), E.InvalidArgumentError, ValueError, "batch_size"),
]


@pytest.mark.parametrize("name,call,exc,builtin,fix", CASES, ids=[c[0] for c in CASES])
def test_each_bad_input_raises_a_clear_error(name, call, exc, builtin, fix):
    with pytest.raises(exc) as info:
        call()
    assert isinstance(info.value, E.FimauditError) and isinstance(info.value, builtin)
    assert fix in str(info.value), str(info.value)


def test_non_finite_output_error_lists_indices():
    with pytest.raises(E.NonFiniteOutputError) as info:
        fa.fisher_norm(NaNModel(np.eye(3, 4)), X, batch_size=1)
    assert info.value.indices == [1]


def test_not_converged_carries_a_true_partial_result():
    model, x = _spread_model(), RNG.standard_normal((4, 30))
    exact = fa.fisher_norm(model, x, method="exact").value
    with pytest.raises(E.NotConvergedError) as info:
        fa.fisher_norm(model, x, method="lanczos", max_steps=2, tol=1e-12)
    part = info.value.partial
    assert isinstance(part, fa.FisherNormResult) and not part.converged.any()
    assert np.all(part.residual > 1e-12 * part.value)
    assert np.all(part.lower <= exact * (1 + 1e-12))  # a certified lower bound
    assert np.all(np.isinf(part.upper))  # no certified upper bound before convergence


def test_flag_policy_returns_flagged_result_with_warning():
    model, x = _spread_model(), RNG.standard_normal((4, 30))
    with pytest.warns(E.NotConvergedWarning, match="did not converge"):
        r = fa.fisher_norm(model, x, method="lanczos", max_steps=2, tol=1e-12, on_nonconvergence="flag")
    assert not r.converged.any() and np.all(r.steps == 2)


def test_missing_plugin_names_what_to_install(monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(fa.plugins, "_entry_points", lambda: [])
    with pytest.raises(E.MissingAdapterError) as info:
        fa.wrap(torch.nn.Linear(3, 2))
    assert isinstance(info.value, ImportError) and isinstance(info.value, TypeError)
    assert 'pip install "fimaudit[torch]"' in str(info.value)


class _NaNForThirdInput(ForwardLinearModel):
    def jvp_many(self, x, V):
        out = super().jvp_many(x, V)
        out[x[:, 0] == X[2, 0]] = np.nan
        return out


def test_non_finite_products_of_a_subset_name_the_inputs_they_belong_to():
    """Products sent for some inputs only (a sequential sketch's later rounds) number their
    failures as in the call's data, not within the subset."""
    from fimaudit._operator import FisherOperator
    from fimaudit.plugins import wrap

    model = wrap(_NaNForThirdInput(np.eye(3, 4)))
    op = FisherOperator(model, np, X[:, :], offset=10)
    with pytest.raises(E.NonFiniteOutputError) as info:
        op.jvp_many(np.ones((1, 2, 4)), inputs=np.array([2]))
    assert info.value.indices == [12]
    assert op.jvp_many(np.ones((2, 2, 4)), inputs=np.array([0, 1])).shape == (2, 2, 3)


def test_assembled_result_keeps_fields_only_later_batches_have():
    """Batches that chose different methods: a field the first batch lacks is still kept,
    NaN (−1 for integers) on the rows of the batches without it."""
    from fimaudit._assemble import assemble
    from fimaudit.results import FisherNormResult

    def part(n, method, **extra):
        base = dict(value=np.ones(n), lower=np.ones(n), upper=np.ones(n), queries=np.full(n, 3))
        return np, {**base, **extra}, method, "categorical"

    out = assemble(
        FisherNormResult,
        [part(2, "lanczos"), part(1, "exact", first_order_distance=np.array([0.5]), first_order_class=np.array([4]))],
    )
    assert out.method == "exact+lanczos"
    np.testing.assert_array_equal(out.first_order_distance, [np.nan, np.nan, 0.5])
    np.testing.assert_array_equal(out.first_order_class, [-1, -1, 4])
