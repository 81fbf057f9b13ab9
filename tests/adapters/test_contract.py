"""One conformance suite for every installed adapter, and cross-framework agreement on
models with identical weights (torch, numpy, ONNX, a plain callable, an HTTP service)."""

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("fimaudit_torch")

from fimaudit_torch.testing import mlp_from_numpy, smooth_cnn  # noqa: E402

import fimaudit as fa  # noqa: E402
from fimaudit.testing import MLPModel, check_adapter  # noqa: E402

SHAPES = {"cnn": (3, 16, 16), "mlp": (12,)}


def _nets():
    torch.manual_seed(0)
    ref = MLPModel.random([12, 16, 16, 6], seed=4, scale=2.0)
    return {"cnn": (smooth_cnn().eval(), None), "mlp": (mlp_from_numpy(ref).float().eval(), ref)}


NETS = _nets()
X = {
    "cnn": np.random.default_rng(0).random((3, 3, 16, 16)).astype(np.float32),
    "mlp": np.random.default_rng(1).standard_normal((3, 12)).astype(np.float32),
}


def _probs(net):
    def service(batch):
        with torch.no_grad():
            return torch.softmax(net(torch.as_tensor(np.asarray(batch, np.float32))), 1).double().numpy()

    return service


def adapters(name):
    """(label, wrapped model, white_box) for every adapter that is installed."""
    net, ref = NETS[name]
    shape = SHAPES[name]
    out = [("torch", fa.wrap(net), True)]
    if ref is not None:
        out.append(("numpy", ref, True))
    out.append(("callable", fa.wrap(_probs(net), input_shape=shape, output="probs", accepts="numpy"), False))
    try:
        import fimaudit_tensorflow  # noqa: F401
        import keras  # noqa: F401
        from fimaudit_tensorflow.testing import mlp_twin, smooth_cnn_twin

        out.append(("tensorflow", fa.wrap(smooth_cnn_twin(net) if name == "cnn" else mlp_twin(net)), True))
    except ImportError:
        pass
    try:
        import fimaudit_onnx  # noqa: F401
        import onnxruntime  # noqa: F401

        out.append(("onnx", fa.wrap(fa.wrap(net, input_shape=shape).to_onnx()), False))
    except ImportError:
        pass
    return out


@pytest.mark.parametrize("name", list(SHAPES))
def test_every_adapter_passes_the_conformance_checks(name):
    x = X[name]
    for label, model, _white in adapters(name):
        xx = x.astype(np.float64) if label == "numpy" else x
        report = check_adapter(model, xx)
        assert "batch_consistency" in report, label


@pytest.mark.parametrize("name", list(SHAPES))
def test_frameworks_agree_on_the_same_weights(name):
    x = X[name]
    net64 = copy.deepcopy(NETS[name][0]).double()
    truth = fa.fisher_norm(net64, x.astype(np.float64), return_direction=True)
    tr = fa.fisher_trace(net64, x.astype(np.float64)).value
    for label, model, white in adapters(name):
        xx = x.astype(np.float64) if label == "numpy" else x
        r = fa.fisher_norm(model, xx, method="exact", return_direction=True)
        t = fa.fisher_trace(model, xx, method="exact").value
        rtol = 1e-4 if white else 2e-3  # float32 autodiff; finite differences on float32 outputs
        assert np.allclose(r.value, truth.value, rtol=rtol), (label, r.value / truth.value - 1)
        assert np.allclose(t, tr, rtol=rtol), (label, t / tr - 1)
        cos = np.abs(np.sum(r.direction.reshape(len(x), -1) * truth.direction.reshape(len(x), -1), axis=1))
        assert np.all(cos >= 1 - (1e-4 if white else 2e-3)), (label, cos)


def test_http_adapter_agrees(tmp_path):
    pytest.importorskip("fimaudit_http")
    from fimaudit_http.testing import FakeVendor

    net = NETS["mlp"][0]
    x = X["mlp"]
    truth = fa.fisher_norm(copy.deepcopy(net).double(), x.astype(np.float64)).value
    with FakeVendor(_probs(net)) as vendor:
        m = fa.wrap(vendor.url, input_shape=(12,), num_outputs=6, max_batch=256)
        check_adapter(m, x)
        r = fa.fisher_norm(m, x, method="exact")
    assert np.allclose(r.value, truth, rtol=2e-3)
