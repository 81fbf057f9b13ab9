"""ONNX files that cannot be used are refused by name, before anything large is allocated:
garbage and truncated files, huge declared shapes and initializers, bad dimensions, and
integer inputs, through both ``fa.lipschitz_bound`` and ``fa.wrap`` (the onnx plugin).

Refusals of huge models run in a subprocess whose address space is capped
(``RLIMIT_AS``), so an allocation the checks missed fails the test instead of the machine."""

import json
import os
import re
import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("fimaudit_onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import fimaudit as fa  # noqa: E402
from fimaudit import errors as E  # noqa: E402
from fimaudit.bounds import memory  # noqa: E402
from fimaudit.bounds.graph import Graph  # noqa: E402

APIS = {"bound": fa.lipschitz_bound, "wrap": fa.wrap}
ADDRESS_SPACE = 3 << 30  # the subprocess' cap: far below every refused model's needs
W = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)


def model(nodes, inputs, outputs, inits=(), opset=17):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def vi(name, shape, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


def linear(x_type=TensorProto.FLOAT, x_shape=("N", 4)):
    """x (N, 4) @ W → (N, 3), with a Cast first when the input is not float32."""
    nodes, first = [], "x"
    if x_type != TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT))
        first = "xf"
    nodes.append(helper.make_node("MatMul", [first, "W"], ["y"], name="mm"))
    return model(nodes, [vi("x", list(x_shape), x_type)], [vi("y", ["N", 3])], [numpy_helper.from_array(W, "W")])


def save(proto, path):
    with open(path, "wb") as f:
        f.write(proto.SerializeToString())
    return str(path)


# garbage files -------------------------------------------------------------------------------


def garbage_files(tmp_path):
    good = linear().SerializeToString()
    files = {
        "random.onnx": np.random.default_rng(1).bytes(3000),
        "half.onnx": good[: len(good) // 2],
        "empty.onnx": b"",
        "text.onnx": b"ir_version: 8\nthis is a text file, not a model\n",
    }
    paths = {}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        paths[name] = str(tmp_path / name)
    (tmp_path / "folder.onnx").mkdir()
    paths["folder.onnx"] = str(tmp_path / "folder.onnx")
    return paths


@pytest.mark.parametrize("api", sorted(APIS))
@pytest.mark.parametrize("kind", ["random.onnx", "half.onnx", "empty.onnx", "text.onnx", "folder.onnx"])
def test_garbage_files_are_refused_by_name(tmp_path, api, kind):
    path = garbage_files(tmp_path)[kind]
    with pytest.raises(E.InvalidModelFileError) as err:
        APIS[api](path)
    assert path in str(err.value)


@settings(max_examples=30, deadline=None)
@given(cut=st.floats(0.0, 0.999), api=st.sampled_from(sorted(APIS)))
def test_every_truncation_of_a_model_is_refused(tmp_path_factory, cut, api):
    data = linear().SerializeToString()
    path = tmp_path_factory.mktemp("cut") / "m.onnx"
    path.write_bytes(data[: int(cut * len(data))])
    with pytest.raises(E.InvalidModelFileError, match="m.onnx"):
        APIS[api](str(path))


@settings(max_examples=30, deadline=None)
@given(data=st.binary(min_size=0, max_size=400))
def test_random_bytes_are_refused(data):
    with pytest.raises(E.InvalidModelFileError, match="the ONNX model"):
        fa.lipschitz_bound(data)


# dimensions and dtypes ----------------------------------------------------------------------------


@pytest.mark.parametrize("api", sorted(APIS))
@pytest.mark.parametrize("dims", [(-3, 4), ("N", 0), ("N", -4)], ids=["negative-batch", "zero", "negative"])
def test_zero_or_negative_declared_dimensions_are_refused(tmp_path, api, dims):
    path = save(linear(x_shape=dims), tmp_path / "dims.onnx")
    with pytest.raises(E.InvalidModelFileError, match="must be positive") as err:
        APIS[api](path)
    assert path in str(err.value) and "'x'" in str(err.value)


@pytest.mark.parametrize("api", sorted(APIS))
def test_negative_initializer_dimensions_are_refused(tmp_path, api):
    proto = linear()
    t = proto.graph.initializer[0]
    del t.dims[:]
    t.dims.extend([-4, -3])  # 12 entries, as the data holds
    with pytest.raises(E.InvalidModelFileError, match=r"initializer 'W' declares a negative dimension \(-4, -3\)"):
        APIS[api](save(proto, tmp_path / "neg.onnx"))


@pytest.mark.parametrize("api", sorted(APIS))
@pytest.mark.parametrize("shape", [(0,), (-4,), (4, 1), (2.5,)])
def test_bad_input_shapes_are_refused(api, shape):
    with pytest.raises(E.InputShapeError, match="input_shape"):
        APIS[api](linear(x_shape=("N", "D")), input_shape=shape)


@pytest.mark.parametrize("api", sorted(APIS))
@pytest.mark.parametrize("dtype", [TensorProto.INT64, TensorProto.UINT8, TensorProto.BOOL])
def test_integer_inputs_are_refused_naming_the_input_and_dtype(api, dtype):
    name = TensorProto.DataType.Name(dtype).lower()
    with pytest.raises(E.InputDtypeError, match=rf"'x' has dtype {name}.*discrete input"):
        APIS[api](linear(x_type=dtype))


def test_a_float_input_still_bounds_and_wraps_exactly():
    b = fa.lipschitz_bound(linear())
    assert b.lipschitz == pytest.approx(np.linalg.norm(W.astype(np.float64), 2), rel=1e-12)
    m = fa.wrap(linear())
    x = np.random.default_rng(2).standard_normal((3, 4)).astype(np.float32)
    assert np.allclose(m.inner.forward(x), x @ W, atol=1e-5)


# external data --------------------------------------------------------------------------------------


def external(tmp_path, location, dims=(4, 3), file_bytes=None):
    proto = linear()
    t = proto.graph.initializer[0]
    del t.dims[:]
    t.dims.extend(dims)
    t.ClearField("raw_data")
    t.ClearField("float_data")
    t.data_location = TensorProto.EXTERNAL
    entry = t.external_data.add()
    entry.key, entry.value = "location", location
    if file_bytes is not None:
        with open(tmp_path / location, "wb") as f:
            f.truncate(file_bytes)  # sparse: nothing is written
    return save(proto, tmp_path / "ext.onnx")


@pytest.mark.parametrize("api", sorted(APIS))
def test_external_data_outside_the_folder_is_still_refused(tmp_path, api):
    (tmp_path / "sub").mkdir()
    path = external(tmp_path / "sub", "../w.bin")
    with pytest.raises(E.InvalidModelFileError, match="outside the model's folder"):
        APIS[api](path)


@pytest.mark.parametrize("api", sorted(APIS))
def test_truncated_external_data_is_refused(tmp_path, api):
    path = external(tmp_path, "w.bin", file_bytes=20)  # 48 bytes declared
    with pytest.raises(E.InvalidModelFileError, match="w.bin.*truncated"):
        APIS[api](path)


# memory ----------------------------------------------------------------------------------------------


def huge_models(tmp_path):
    """{case: path} of small files that declare tensors of tens of GiB."""
    out = {}
    big = [1, 3, 60000, 60000]  # 1.08e10 entries
    conv = model(
        [
            helper.make_node("Conv", ["x", "K"], ["c"], pads=[1, 1, 1, 1], name="conv"),
            helper.make_node("GlobalAveragePool", ["c"], ["p"]),
            helper.make_node("Flatten", ["p"], ["y"]),
        ],
        [vi("x", ["N", *big[1:]])],
        [vi("y", ["N", 2])],
        [numpy_helper.from_array(np.ones((2, 3, 3, 3), np.float32), "K")],
    )
    out["declared-input"] = save(conv, tmp_path / "declared.onnx")
    shape = numpy_helper.from_array(np.array([1, 4, 60000, 60000], np.int64), "shape")
    const = model(
        [
            helper.make_node("ConstantOfShape", ["shape"], ["big"], name="fill"),
            helper.make_node("ReduceMean", ["big"], ["r"], axes=[2, 3], keepdims=0),
            helper.make_node("Add", ["x", "r"], ["y"]),
        ],
        [vi("x", ["N", 4])],
        [vi("y", ["N", 4])],
        [shape],
    )
    out["constant-of-shape"] = save(const, tmp_path / "const.onnx")
    tail = numpy_helper.from_array(np.array([60000, 60000], np.int64), "tail")
    runtime = model(
        [
            helper.make_node("Shape", ["x"], ["s"]),
            helper.make_node("Concat", ["s", "tail"], ["t"], axis=0),
            helper.make_node("ConstantOfShape", ["t"], ["big"], name="fill_like_x"),
            helper.make_node("ReduceMean", ["big"], ["r"], axes=[2, 3], keepdims=0),
            helper.make_node("Add", ["x", "r"], ["y"]),
        ],
        [vi("x", ["N", 4])],
        [vi("y", ["N", 4])],
        [tail],
    )
    out["shape-of-input"] = save(runtime, tmp_path / "runtime.onnx")
    for op, arg in (("Expand", [60000, 60000, 4]), ("Tile", [60000, 60000])):
        x = vi("x", [1, 4])
        g = model(
            [
                helper.make_node(op, ["x", "arg"], ["big"], name=op.lower()),
                helper.make_node("ReduceMax", ["big"], ["y"], axes=list(range(len(arg) - 1)), keepdims=0),
            ],
            [x],
            [vi("y", [4] if op == "Expand" else [240000])],
            [numpy_helper.from_array(np.array(arg, np.int64), "arg")],
        )
        out[op.lower()] = save(g, tmp_path / f"{op.lower()}.onnx")
    out["external-initializer"] = external(tmp_path, "w.bin", dims=(60000, 60000), file_bytes=60000 * 60000 * 4)
    return out


CASES = [  # (case, api, options, what the refusal names)
    ("declared-input", "bound", {}, "DFT grid of Conv node 'conv'.*(2, 3, 60002, 30002)"),
    ("declared-input", "bound", {"input_domain": (0, 1)}, "im2col columns of Conv node 'conv'"),
    ("declared-input", "wrap", {}, "tensor 'x' of shape (1, 3, 60000, 60000)"),
    ("constant-of-shape", "bound", {}, "'big' of ConstantOfShape node 'fill'.*(1, 4, 60000, 60000)"),
    ("constant-of-shape", "wrap", {}, "tensor 'big' of shape (1, 4, 60000, 60000)"),
    ("shape-of-input", "bound", {}, "'big' of ConstantOfShape node 'fill_like_x'"),
    ("shape-of-input", "wrap", {}, "tensor 'big' of shape (1, 4, 60000, 60000)"),
    ("expand", "bound", {"input_domain": (0, 1)}, "tensor 'big' (Expand node 'expand').*(60000, 60000, 4)"),
    ("expand", "wrap", {}, "tensor 'big' of shape (60000, 60000, 4)"),
    ("tile", "bound", {"input_domain": (0, 1)}, "tensor 'big' (Tile node 'tile').*(60000, 240000)"),
    ("tile", "wrap", {}, "tensor 'big' of shape (60000, 240000)"),
    ("external-initializer", "bound", {}, "initializer 'W' of shape (60000, 60000) needs 14400000000 bytes"),
    ("external-initializer", "wrap", {}, "initializer 'W' of shape (60000, 60000) needs 14400000000 bytes"),
]

RUNNER = textwrap.dedent(
    """
    import json, resource, sys
    resource.setrlimit(resource.RLIMIT_AS, ({cap}, {cap}))
    import fimaudit as fa
    out = []
    for path, api, options in json.loads(sys.argv[1]):
        if "input_domain" in options:
            options["input_domain"] = tuple(options["input_domain"])
        try:
            (fa.lipschitz_bound if api == "bound" else fa.wrap)(path, **options)
            out.append(["no error", ""])
        except BaseException as err:
            out.append([type(err).__name__, str(err)])
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def refusals(tmp_path_factory):
    paths = huge_models(tmp_path_factory.mktemp("huge"))
    jobs = [[paths[c], api, opts] for c, api, opts, _ in CASES]
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER.format(cap=ADDRESS_SPACE), json.dumps(jobs)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=os.getcwd(),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return paths, json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("k", range(len(CASES)), ids=[f"{c[0]}-{c[1]}{'-domain' * bool(c[2])}" for c in CASES])
def test_huge_declared_tensors_are_refused_before_allocation(refusals, k):
    paths, results = refusals
    case, _, _, names = CASES[k]
    kind, message = results[k]
    assert os.path.getsize(paths[case]) < 2000  # the file declares the tensors; it does not hold them
    assert kind == "MemoryLimitError", message
    assert re.search(".*".join(re.escape(part) for part in names.split(".*")), message), message
    assert "memory_limit" in message and "bytes" in message


def test_the_memory_limit_is_settable():
    proto = linear()
    with pytest.raises(E.MemoryLimitError, match=r"memory_limit=100 .*lipschitz_bound\(\.\.\., memory_limit=\.\.\.\)"):
        fa.lipschitz_bound(proto, memory_limit=100)
    with pytest.raises(E.MemoryLimitError, match=r"fa\.wrap\(\.\.\., memory_limit=\.\.\.\)"):
        fa.wrap(proto, memory_limit=40)
    assert fa.lipschitz_bound(proto, memory_limit=1 << 20).lipschitz > 0
    with pytest.raises(E.InvalidArgumentError, match="memory_limit"):
        fa.lipschitz_bound(proto, memory_limit=0)


def _small_cnn():
    rng = np.random.default_rng(3)
    K1 = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "K1")
    K2 = numpy_helper.from_array(rng.standard_normal((8, 8, 3, 3)).astype(np.float32), "K2")
    D = numpy_helper.from_array(rng.standard_normal((8, 5)).astype(np.float32), "D")
    return model(
        [
            helper.make_node("Conv", ["x", "K1"], ["c1"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c1"], ["r1"]),
            helper.make_node("Conv", ["r1", "K2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
            helper.make_node("Relu", ["c2"], ["r2"]),
            helper.make_node("GlobalAveragePool", ["r2"], ["p"]),
            helper.make_node("Flatten", ["p"], ["f"]),
            helper.make_node("MatMul", ["f", "D"], ["y"]),
        ],
        [vi("x", ["N", 3, 24, 24])],
        [vi("y", ["N", 5])],
        [K1, K2, D],
    )


@pytest.mark.parametrize("domain", [None, (0.0, 1.0)], ids=["global", "on-a-box"])
def test_the_estimate_covers_what_bounding_allocates(domain):
    proto = _small_cnn()
    estimate = memory.bound_cost(Graph(proto), domain is not None)[0]
    fa.lipschitz_bound(proto, input_domain=domain)  # imports (the reference evaluator's ops) happen here
    tracemalloc.start()
    try:
        fa.lipschitz_bound(proto, input_domain=domain)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= estimate * 1.25, (peak, estimate)
    with pytest.raises(E.MemoryLimitError):
        fa.lipschitz_bound(proto, input_domain=domain, memory_limit=estimate // 2)
