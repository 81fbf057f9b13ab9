"""The callable query cache is keyed on an identity the user gives (``cache_key``), never on
the function's code; what it reads back is validated like a fresh answer. Calls are counted
by the test's own wrapper around the function."""

import json
import sqlite3

import numpy as np
import pytest

import fimaudit as fa
from fimaudit import errors as E
from fimaudit.blackbox import CallableModel
from fimaudit.testing import MLPModel, dense_fisher

D, C = 5, 3
X = np.random.default_rng(4).standard_normal((4, D))


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


class Served:
    """A function serving whichever weights it holds now, counting the rows it answers."""

    def __init__(self, model):
        self.model, self.rows = model, 0

    def __call__(self, batch):
        self.rows += len(batch)
        return _softmax(self.model.forward(batch))


def _truth(model, x):
    return np.linalg.eigvalsh(dense_fisher(model, x))[:, -1]


def test_a_retrained_model_behind_the_same_function_is_queried_again(tmp_path):
    cache = tmp_path / "answers.sqlite"
    old, new = (MLPModel.random([D, 8, C], seed=s, scale=s + 1.0) for s in (1, 2))
    served = Served(old)
    first = fa.fisher_norm(fa.wrap(served, input_shape=(D,), cache=cache, cache_key="m-v1"), X, method="exact")
    assert np.allclose(first.value, _truth(old, X), rtol=1e-6)
    sent = served.rows
    assert sent > 0

    served.model = new  # retrained: same function, same code, new weights
    again = fa.fisher_norm(fa.wrap(served, input_shape=(D,), cache=cache, cache_key="m-v1"), X, method="exact")
    assert served.rows == sent  # the same key reads the cache: not a row sent
    assert np.array_equal(again.value, first.value)

    fresh = fa.fisher_norm(fa.wrap(served, input_shape=(D,), cache=cache, cache_key="m-v2"), X, method="exact")
    assert served.rows > sent  # a new key never reads the old answers
    assert np.allclose(fresh.value, _truth(new, X), rtol=1e-6)
    assert not np.allclose(fresh.value, first.value, rtol=1e-2)


def test_caching_a_callable_needs_a_key_and_the_key_is_the_identity(tmp_path):
    served = Served(MLPModel.random([D, 8, C], seed=1))
    with pytest.raises(E.InvalidArgumentError, match="cache_key=") as info:
        fa.wrap(served, input_shape=(D,), cache=tmp_path / "a.sqlite")
    assert "version" in str(info.value)
    for bad in ["", "  ", 3]:
        with pytest.raises(E.InvalidArgumentError, match="cache_key"):
            fa.wrap(served, input_shape=(D,), cache_key=bad)
    bb = fa.wrap(served, input_shape=(D,), cache_key="scorer-2026-11")
    assert bb.identity == bb.inner.identity == "scorer-2026-11" and bb.inner.cache is None
    assert fa.wrap(bb, likelihood="bernoulli").identity == "scorer-2026-11"
    assert fa.wrap(served, input_shape=(D,)).identity is None
    assert MLPModel.random([D, 4, C]).identity is None
    with pytest.raises(AttributeError):
        bb.identity = "other"


def test_a_subclass_gives_its_own_key():
    class Service(CallableModel):  # e.g. a model behind a URL, named by its endpoint
        def __init__(self, fn, url, **options):
            super().__init__(fn, cache_key=url, **options)

    m = Service(Served(MLPModel.random([D, 4, C])), "https://scores.example/v3/predict", input_shape=(D,))
    assert m.identity == "https://scores.example/v3/predict"


def _corrupt(path, n, value):
    db = sqlite3.connect(path, isolation_level=None)
    keys = [k for (k,) in db.execute("SELECT key FROM answers ORDER BY key LIMIT ?", (n,))]
    db.executemany("UPDATE answers SET outputs = ? WHERE key = ?", [(value, k) for k in keys])
    db.close()
    return len(keys)


@pytest.mark.parametrize(
    "value",
    [
        "not json at all",
        json.dumps([0.5, 0.5]),  # one output short
        json.dumps([0.2, 0.2, 0.2]),  # does not sum to 1
        json.dumps([-0.5, 1.0, 0.5]),  # negative
        "[NaN, 0.5, 0.5]",
        json.dumps(["a", "b", "c"]),
        json.dumps({"outputs": [0.2, 0.3, 0.5]}),
    ],
    ids=["unreadable", "short", "sum", "negative", "nan", "strings", "object"],
)
def test_corrupt_cached_rows_are_asked_again_and_replaced(tmp_path, value):
    cache = tmp_path / "answers.sqlite"
    served = Served(MLPModel.random([D, 8, C], seed=3))
    x = np.random.default_rng(5).standard_normal((6, D))
    m = CallableModel(served, input_shape=(D,), cache=cache, cache_key="m-v1", num_outputs=C)
    want = m.forward(x)
    assert served.rows == 6
    bad = _corrupt(cache, 2, value)
    fresh = CallableModel(served, input_shape=(D,), cache=cache, cache_key="m-v1")
    assert np.allclose(fresh.forward(x), want, rtol=1e-15)
    assert served.rows == 6 + bad and fresh.calls == bad
    assert np.allclose(CallableModel(served, input_shape=(D,), cache=cache, cache_key="m-v1").forward(x), want)
    assert served.rows == 6 + bad  # the replaced rows are read back
