"""fimaudit-onnx on hand-built graphs: closed forms and every refusal."""

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("fimaudit_onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import fimaudit as fa  # noqa: E402
from fimaudit import errors as E  # noqa: E402
from fimaudit.testing import LinearModel  # noqa: E402

RNG = np.random.default_rng(0)
W = RNG.standard_normal((4, 3)).astype(np.float32)  # x (n, 4) @ W → logits (n, 3)
B = RNG.standard_normal(3).astype(np.float32)
X = RNG.standard_normal((5, 4)).astype(np.float32)
TRUTH = fa.fisher_norm(LinearModel(W.T.astype(np.float64), B.astype(np.float64)), X.astype(np.float64)).value


def graph(batch="N", features=4, softmax=True, inputs=1, broken=False):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, features])
    ins = [x] + [helper.make_tensor_value_info(f"extra{i}", TensorProto.FLOAT, [batch, 4]) for i in range(inputs - 1)]
    nodes = [helper.make_node("Gemm", ["x" if not broken else "nowhere", "W", "B"], ["logits"])]
    out = "logits"
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], axis=-1))
        out = "probs"
    g = helper.make_graph(
        nodes,
        "g",
        ins,
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, [batch, 3])],
        [numpy_helper.from_array(W, "W"), numpy_helper.from_array(B, "B")],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_softmax_graph_is_audited_on_its_logits(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(graph(), path)
    m = fa.wrap(str(path))
    assert m.inner.softmax_skipped and m.output == "logits"
    r = fa.fisher_norm(m, X, method="exact")
    assert np.allclose(r.value, TRUTH, rtol=2e-3)
    p = fa.wrap(graph(), output="probs")  # the probabilities themselves, floored where needed
    assert np.allclose(fa.fisher_norm(p, X, method="exact").value, TRUTH, rtol=2e-3)


def test_fixed_batch_of_one_runs_row_by_row():
    m = fa.wrap(graph(batch=1))
    assert m.inner.fixed_batch == 1
    plan = fa.plan(m, X, method="exact")
    assert "fixed batch of 1" in plan.note and f"{plan.total_calls} session calls" in plan.note
    assert np.allclose(fa.fisher_norm(m, X, method="exact").value, TRUTH, rtol=2e-3)


def test_symbolic_feature_dimension_needs_input_shape():
    with pytest.raises(E.InvalidModelFileError, match="input_shape"):
        fa.wrap(graph(features="D"))
    m = fa.wrap(graph(features="D"), input_shape=(4,))
    assert np.allclose(fa.fisher_norm(m, X, method="exact").value, TRUTH, rtol=2e-3)


def test_refusals(tmp_path):
    with pytest.raises(E.InvalidArgumentError, match="input_name"):
        fa.wrap(graph(inputs=2))
    with pytest.raises(E.InvalidModelFileError, match="checker"):
        fa.wrap(graph(broken=True))
    with pytest.raises(E.InvalidModelFileError, match="no ONNX file"):
        fa.wrap(str(tmp_path / "missing.onnx"))
    model = graph()
    t = model.graph.initializer[0]
    t.data_location = TensorProto.EXTERNAL
    t.ClearField("raw_data")
    t.ClearField("float_data")
    entry = t.external_data.add()
    entry.key, entry.value = "location", "../outside.bin"
    (tmp_path / "sub").mkdir()
    with open(tmp_path / "sub" / "m.onnx", "wb") as f:
        f.write(model.SerializeToString())
    with pytest.raises(E.InvalidModelFileError, match="outside the model's folder"):
        fa.wrap(str(tmp_path / "sub" / "m.onnx"))


def test_a_session_that_cannot_be_created_is_reported():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    g = helper.make_graph([helper.make_node("Mystery", ["x"], ["y"], domain="com.example")], "g", [x], [y])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    with pytest.raises(E.InvalidModelFileError, match="cannot create a session"):
        fa.wrap(model)


def test_provider_fallback_is_loud():
    with pytest.warns(RuntimeWarning, match="fell back"):
        fa.wrap(graph(), providers=["CUDAExecutionProvider", "CPUExecutionProvider"])


def test_a_newer_ir_version_is_read_by_an_older_onnxruntime(monkeypatch):
    """onnx may write IR versions an installed onnxruntime does not read yet (seen: onnx 1.23
    writes 14, onnxruntime 1.30 reads up to 13); the session is retried at the version it names."""
    import fimaudit_onnx.model as om

    real = om.ort.InferenceSession

    def picky(data, providers=None):
        if onnx.load_from_string(data).ir_version > 9:
            raise RuntimeError("Unsupported model IR version: 10, max supported IR version: 9")
        return real(data, providers=providers)

    monkeypatch.setattr(om.ort, "InferenceSession", picky)
    model = graph()
    model.ir_version = 10
    m = fa.wrap(model)
    assert np.allclose(fa.fisher_norm(m, X, method="exact").value, TRUTH, rtol=2e-3)


def test_onnx_models_pickle_for_process_executors():
    import pickle

    m = fa.wrap(graph())
    clone = pickle.loads(pickle.dumps(m))
    assert np.array_equal(clone.forward(X), m.forward(X))


def test_audit_in_worker_processes_equals_local():
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    m = fa.wrap(graph())
    xs = np.random.default_rng(3).standard_normal((12, 4)).astype(np.float32)
    local = fa.audit(m, xs, batch_size=4, progress=False, bound=False)
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as ex:
        remote = fa.audit(m, xs, batch_size=4, executor=ex, progress=False, bound=False)
    assert [r["lambda_max"] for r in remote.rows] == [r["lambda_max"] for r in local.rows]
