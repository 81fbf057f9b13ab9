"""fimaudit-http against the real serving packages: MLflow, KServe, BentoML and LitServe serve the
same tanh MLP on 127.0.0.1 (tests/adapters/serving_real.py), and an audit through each agrees with
the float64 autodiff of the same weights: the estimate within 0.2%, the truth inside every bracket,
and the rows the server was sent those the audit counted.

Each package is optional: a test whose package is not installed is skipped, unless
FIMAUDIT_REQUIRE_SERVING=1 (an environment made for these tests), where it fails instead.
"""

import importlib.util
import os

import numpy as np
import pytest

pytest.importorskip("fimaudit_http")

import fimaudit as fa  # noqa: E402
from fimaudit.testing import MLPModel  # noqa: E402
from tests.adapters.serving_real import LOOPBACK, PACKAGES, Served, listening_addresses  # noqa: E402

SHAPE, C = (6,), 3
MLP = MLPModel.random([6, 8, C], seed=11, scale=1.5)
X = np.random.default_rng(12).standard_normal((5, *SHAPE))
TRUTH = fa.fisher_norm(MLP, X, method="exact").value  # float64 autodiff, the same weights


def need(package):
    if importlib.util.find_spec(package) is not None:
        return
    if os.environ.get("FIMAUDIT_REQUIRE_SERVING") == "1":
        pytest.fail(f"{package} is not installed, and FIMAUDIT_REQUIRE_SERVING=1 requires it")
    pytest.skip(f"{package} is not installed")


@pytest.fixture()
def weights(tmp_path):
    (W0, W1), (b0, b1) = MLP.weights, MLP.biases
    np.savez(tmp_path / "weights.npz", W0=W0, b0=b0, W1=W1, b1=b1)
    return tmp_path / "weights.npz"


@pytest.mark.parametrize("kind", sorted(PACKAGES))
def test_an_audit_through_a_real_server_matches_float64_autodiff(kind, weights, tmp_path):
    need(PACKAGES[kind])
    with Served(kind, weights, tmp_path / kind) as server:
        print(f"{kind} answered its health check {server.start_s:.1f} s after it was started")
        assert listening_addresses(server.port) <= LOOPBACK, server.tail()  # loopback only
        model = fa.wrap(server.url, input_shape=SHAPE, num_outputs=C, protocol=server.protocol, timeout=30.0)
        a = fa.audit(model, X, method="exact", progress=False, bound=False, top=0)
    lam = np.array([r["lambda_max"] for r in a.rows])
    low, up = (np.array([r[k] for r in a.rows]) for k in ("lower", "upper"))
    assert all(r["status"] == "ok" for r in a.rows), [r["status"] for r in a.rows]
    np.testing.assert_allclose(lam, TRUTH, rtol=2e-3)
    assert np.all((low <= TRUTH) & (TRUTH <= up))
    assert model.inner.sent == sum(r["queries"] for r in a.rows)  # every row the server answered, counted
