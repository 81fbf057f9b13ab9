"""fimaudit-http's serving-stack presets against local servers written from each specification,
the default decoder's answer keys, error answers' messages and a caller's own httpx client."""

import asyncio
import json
import threading

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fimaudit_http")

from fimaudit_http import HTTPModel  # noqa: E402
from fimaudit_http.outputs import server_message  # noqa: E402
from fimaudit_http.protocols import PROTOCOLS, default_decode, open_inference  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import fimaudit as fa  # noqa: E402
from fimaudit import errors as E  # noqa: E402
from fimaudit.testing import MLPModel  # noqa: E402
from tests.adapters.hostile_server import HostileServer  # noqa: E402
from tests.adapters.serving_stacks import ServingStack  # noqa: E402

SHAPE, C = (2, 3), 4
MLP = MLPModel.random([6, 10, C], seed=5, scale=1.5, input_shape=SHAPE)  # tanh: smooth, J by hand
X = np.random.default_rng(1).standard_normal((3, *SHAPE))
WHITE = fa.fisher_norm(MLP, X, method="exact").value  # logits + categorical: the same F as the probs


def probs(x):
    z = MLP.forward(x)
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def remote(url, **kw):
    kw.setdefault("retries", 0)
    return fa.wrap(url, input_shape=SHAPE, num_outputs=C, timeout=10.0, **kw)


# --- every preset against its stack ---------------------------------------------------------------
@pytest.mark.parametrize(
    "kind,protocol",
    [
        ("open-inference", "open-inference"),
        ("open-inference", "kserve-v2"),
        ("open-inference", "triton"),
        ("kserve-v1", "kserve-v1"),
        ("kserve-v1", "tf-serving"),
        ("mlflow", "mlflow"),
    ],
)
def test_each_protocol_audits_like_the_white_box(kind, protocol):
    with ServingStack(kind, probs, SHAPE) as stack:
        r = fa.fisher_norm(remote(stack.url, protocol=protocol), X, method="exact")
    assert np.allclose(r.value, WHITE, rtol=2e-3, atol=0)
    assert stack.rows == r.queries.sum() > 0  # rows counted by the server


def test_a_stack_refuses_the_default_format_and_its_message_is_shown():
    with ServingStack("kserve-v1", probs, SHAPE) as stack:
        with pytest.raises(E.ServiceError, match=r"HTTP 400: \"invalid request: expected \{'instances'") as info:
            fa.fisher_norm(remote(stack.url), X[:1], method="exact")
    assert "protocol=" in str(info.value) and stack.rows == 0


def test_open_inference_datatype_follows_the_rows_sent():
    with ServingStack("open-inference", probs, SHAPE, datatype="FP32") as stack:
        with pytest.raises(E.ServiceError, match="input-0 has datatype FP64, model clf expects FP32"):
            remote(stack.url, protocol="open-inference").forward(X)
        m = remote(stack.url, protocol="open-inference", dtype="float32")
        out = m.forward(X)
        r = fa.fisher_norm(m, X, method="exact")  # FP32 rows and answers: the noise estimate sizes the steps
    assert np.allclose(out, probs(X.astype(np.float32).astype(np.float64)), atol=1e-6)
    assert np.allclose(r.value, WHITE, rtol=2e-3, atol=0)


def test_open_inference_tensor_names():
    with ServingStack("open-inference", probs, SHAPE, input_name="pixels") as stack:
        with pytest.raises(E.ServiceError, match="unexpected inference input 'input-0'"):
            remote(stack.url, protocol="open-inference").forward(X)
        out = remote(stack.url, protocol="open-inference", input_name="pixels", output_name="output-0").forward(X)
        assert np.allclose(out, probs(X), rtol=1e-12)
        with pytest.raises(E.InvalidModelOutputError, match=r"no output named 'logits'.*\['output-0'\]"):
            remote(stack.url, protocol="open-inference", input_name="pixels", output_name="logits").forward(X)


def test_the_caller_encode_and_decode_win_over_the_protocol():
    with ServingStack("kserve-v1", probs, SHAPE) as stack:
        m = remote(
            stack.url,
            protocol="open-inference",
            encode=lambda b: {"instances": b.tolist()},
            decode=lambda p: p["predictions"],
        )
        assert np.allclose(m.forward(X), probs(X), rtol=1e-12)


# --- the default decoder ------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["outputs", "predictions", "probabilities", "logits", "scores", None])
def test_the_default_decoder_reads_the_common_answer_keys(key):
    rows = probs(X).tolist()
    assert default_decode(rows if key is None else {"model": "m", key: rows}) is rows


class Unusual(ServingStack):
    def write_mlflow(self, out):
        return {"result": out.tolist(), "version": 3}


def test_an_unread_answer_names_its_keys_and_the_options():
    with Unusual("mlflow", probs, SHAPE) as stack:
        with pytest.raises(E.InvalidModelOutputError) as info:
            remote(stack.url).forward(X)
        msg = str(info.value)
        assert "['result', 'version']" in msg and "protocol=" in msg and "decode=" in msg
        assert np.allclose(remote(stack.url, decode=lambda p: p["result"]).forward(X), probs(X), rtol=1e-12)


def test_an_answer_of_the_wrong_shape_names_the_options():
    with ServingStack("open-inference", probs, SHAPE) as stack:
        with pytest.raises(E.InvalidModelOutputError, match=r"outputs of shape \(2,\).*protocol=.*decode="):
            remote(stack.url, protocol="open-inference", decode=lambda p: p["outputs"][0]["shape"]).forward(X)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 4),
    shape=st.lists(st.integers(1, 3), min_size=1, max_size=3),
    c=st.integers(1, 5),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**16),
)
def test_open_inference_round_trip(n, shape, c, dtype, seed):
    """The request is the batch flattened row-major with its full shape; an answer's flat data
    in its shape reads back as the (n, C) rows."""
    rng = np.random.default_rng(seed)
    batch = rng.standard_normal((n, *shape)).astype(dtype)
    oip = open_inference()
    (tensor,) = oip.encode(batch)["inputs"]
    assert tensor["shape"] == [n, *shape] and tensor["datatype"] == {np.float32: "FP32", np.float64: "FP64"}[dtype]
    assert np.array_equal(np.asarray(tensor["data"], dtype=dtype).reshape(tensor["shape"]), batch)
    rows = rng.standard_normal((n, c))
    answer = {"outputs": [{"name": "y", "shape": [n, c], "datatype": "FP64", "data": rows.ravel().tolist()}]}
    assert np.array_equal(oip.decode(json.loads(json.dumps(answer))), rows)


def test_several_outputs_need_a_name():
    out = {"name": "a", "shape": [1, 1], "datatype": "FP32", "data": [0.5]}
    with pytest.raises(ValueError, match=r"2 outputs \['a', 'b'\]: pass output_name="):
        PROTOCOLS["open-inference"].decode({"outputs": [out, {**out, "name": "b"}]})
    assert open_inference(output_name="b").decode({"outputs": [out, {**out, "name": "b", "data": [2]}]}).tolist() == [
        [2.0]
    ]


# --- error answers ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "body,message",
    [
        ('{"error": "model not ready"}', "model not ready"),
        ('{"error_code": "BAD_REQUEST", "message": "bad tensor"}', "bad tensor"),
        ('{"error": {"code": 3, "message": "nested"}}', "nested"),
        ('{"detail": [{"loc": ["body"], "msg": "field required", "type": "missing"}]}', "field required"),
        ('{"detail": "Not Found"}', "Not Found"),
        ('{"status": "failed"}', None),
        ("<html>502</html>", None),
        ('{"error": "' + "x" * 1000 + '"}', "x" * 300),
    ],
)
def test_an_error_answer_message_is_read(body, message):
    assert server_message(body.encode()) == message


# --- the caller's own client ------------------------------------------------------------------------
def test_a_caller_client_carries_its_auth_across_rounds_and_its_token_is_redacted():
    with ServingStack("open-inference", probs, SHAPE, token="tok-0123456789") as stack:
        with pytest.raises(E.ServiceError, match="HTTP 401"):
            remote(stack.url, protocol="open-inference").forward(X)
        client = httpx.AsyncClient(headers={"Authorization": "Bearer tok-0123456789"})
        m = remote(stack.url, protocol="open-inference", client=client)
        for i in range(3):  # every round on the same client: its pooled connections stay usable
            assert np.allclose(m.forward(X + i), probs(X + i), rtol=1e-12)
        assert not client.is_closed
    assert stack.headers_seen[-1]["Authorization"] == "Bearer tok-0123456789"

    def echo(req):
        req.send(400, json.dumps({"error": "denied", "headers": req.headers}))

    with HostileServer(echo) as server:
        with pytest.raises(E.ServiceError, match="denied") as info:
            HTTPModel(server.url, input_shape=(3,), client=client, retries=0).forward(np.zeros((1, 3)))
    assert "tok-0123456789" not in str(info.value) and "Bearer" in server.seen[0][1]["Authorization"]


def test_the_deadline_and_the_row_cap_hold_around_a_caller_client():
    gate = threading.Event()

    def slow(req):
        gate.wait(5)
        req.outputs(np.zeros((len(req.inputs), 2)).tolist())

    client = httpx.AsyncClient(timeout=None)  # the caller's client would wait forever
    with HostileServer(slow) as server:
        m = HTTPModel(server.url, input_shape=(3,), output="logits", client=client, timeout=0.5, retries=0)
        with pytest.raises(E.ServiceError, match="no complete answer within timeout=0.5 s"):
            m.forward(np.zeros((2, 3)))
        gate.set()
        capped = HTTPModel(server.url, input_shape=(3,), output="logits", client=client, max_rows_sent=3, max_batch=2)
        with pytest.raises(E.QueryBudgetExceeded):
            capped.forward(np.arange(15.0).reshape(5, 3))
        assert capped.sent <= 3 and server.rows == 2 + capped.sent


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"protocol": "grpc"}, "protocol must be one of"),
        ({"protocol": None}, "protocol must be one of"),
        ({"input_name": "x"}, "options of protocol='open-inference'"),
        ({"protocol": "open-inference", "output_name": ""}, "output_name must be a non-empty string"),
        ({"client": "https://proxy"}, "client must be an open httpx.AsyncClient"),
    ],
)
def test_bad_protocol_options_are_refused_up_front(kw, match):
    with pytest.raises(E.InvalidArgumentError, match=match):
        HTTPModel("http://127.0.0.1:9/v2/models/m/infer", input_shape=(3,), **kw)


def test_a_closed_client_is_refused():
    client = httpx.AsyncClient()
    asyncio.run(client.aclose())
    with pytest.raises(E.InvalidArgumentError, match="open httpx.AsyncClient"):
        HTTPModel("http://127.0.0.1:9/p", input_shape=(3,), client=client)


def test_the_cache_is_keyed_by_cache_key_when_given(tmp_path):
    cache = tmp_path / "answers.sqlite"
    with ServingStack("mlflow", probs, SHAPE) as stack:
        remote(stack.url, protocol="mlflow", cache=cache, cache_key="clf-v1").forward(X)
        remote(stack.url, protocol="mlflow", cache=cache, cache_key="clf-v1").forward(X)
        assert stack.rows == len(X)  # the same model: answered from the cache
        remote(stack.url, protocol="mlflow", cache=cache, cache_key="clf-v2").forward(X)
        assert stack.rows == 2 * len(X)  # a retrained model behind the same URL is asked again


def test_models_sharing_a_caller_client_share_its_event_loop():
    def answer(req):
        req.outputs(np.asarray(req.inputs)[:, :2].tolist())

    x = np.random.default_rng(3).standard_normal((4, 3))
    client = httpx.AsyncClient()  # kept-alive connections (HTTP/1.1) are reused across models
    with HostileServer(answer) as server:
        a, b = (HTTPModel(server.url, input_shape=(3,), output="logits", client=client, retries=0) for _ in "ab")
        for i in range(3):
            assert np.array_equal(a.forward(x + i), (x + i)[:, :2])
            assert np.array_equal(b.forward(x - i), (x - i)[:, :2])
    assert server.requests == 6


def test_a_caller_client_basic_auth_is_redacted():
    def echo(req):
        req.send(403, json.dumps({"error": f"denied: {req.headers['Authorization']}", "headers": req.headers}))

    client = httpx.AsyncClient(auth=("alice-corp", "s3cret-pw-42"))
    with HostileServer(echo) as server:
        with pytest.raises(E.ServiceError, match=r"HTTP 403: 'denied: \*\*\*'") as info:
            HTTPModel(server.url, input_shape=(3,), client=client, retries=0).forward(np.zeros((1, 3)))
    sent = server.seen[0][1]["Authorization"]
    assert sent.startswith("Basic ")  # the client's auth reached the server
    msg = str(info.value)
    assert "s3cret-pw-42" not in msg and "alice-corp" not in msg and sent.split()[1] not in msg


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=200),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=400),
            lambda kids: (
                st.lists(kids, max_size=4)
                | st.dictionaries(st.sampled_from(["error", "message", "detail", "msg", "x"]), kids, max_size=4)
            ),
            max_leaves=20,
        ).map(lambda v: json.dumps(v).encode()),
    )
)
def test_reading_an_error_answer_never_fails(body):
    said = server_message(body)
    assert said is None or (isinstance(said, str) and len(said) <= 300)
