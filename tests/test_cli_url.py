"""``fimaudit audit URL ...``: a served model audited from the shell against local servers that
speak the serving stacks' formats; every option checked before any request; secrets read from
the environment reach the server and no output."""

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("httpx")
pytest.importorskip("fimaudit_http")

import fimaudit as fa  # noqa: E402
from fimaudit.audit import Audit  # noqa: E402
from fimaudit.cli import ExitCode, main  # noqa: E402
from fimaudit.testing import MLPModel  # noqa: E402
from tests.adapters.serving_stacks import ServingStack  # noqa: E402

SHAPE, C = (2, 3), 4
MLP = MLPModel.random([6, 10, C], seed=7, scale=1.5, input_shape=SHAPE)
X = np.random.default_rng(2).standard_normal((5, *SHAPE))
WHITE = fa.fisher_norm(MLP, X, method="exact").value
TOKEN = "tok-7f3a9c2e51d84b6a"


def probs(x):
    z = MLP.forward(x)
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.fixture()
def files(tmp_path):
    np.save(tmp_path / "x.npy", X)
    return tmp_path


def audit_argv(url, d, *extra):
    return ["audit", url, "--data", str(d / "x.npy"), "--out", str(d / "out"), "--method", "exact", "--quiet", *extra]


def everything_written(d):
    return b"".join(p.read_bytes() for p in d.rglob("*") if p.is_file())


def test_an_open_inference_server_is_audited_with_a_token_from_the_environment(files, monkeypatch, capsys):
    monkeypatch.setenv("VENDOR_TOKEN", TOKEN)
    cache, journal = files / "answers.sqlite", files / "run.sqlite"
    with ServingStack("open-inference", probs, SHAPE, token=TOKEN) as stack:
        argv = audit_argv(
            stack.url,
            files,
            *("--input-shape", "2,3", "--num-outputs", "4", "--protocol", "open-inference"),
            *("--header-env", "Authorization=Bearer VENDOR_TOKEN", "--max-batch", "16", "--budget", "201"),
            *("--cache", str(cache), "--cache-key", "clf-v1", "--journal", str(journal)),
        )
        assert main(argv) == ExitCode.OK
        rows = Audit.load(files / "out").rows
        sent = stack.rows
        assert main(argv) == ExitCode.OK  # a rerun: the journal and the cache answer it
        assert stack.rows == sent
    assert [r["status"] for r in rows] == ["ok"] * len(X)
    assert np.allclose([r["lambda_max"] for r in rows], WHITE, rtol=2e-3, atol=0)
    # rows counted by the server: within the budget; the noise probe's repeat is a cache hit
    assert 0 < sent <= sum(r["queries"] for r in rows) <= 201 * len(X)
    assert all(h["Authorization"] == f"Bearer {TOKEN}" for h in stack.headers_seen)  # it reached the server
    out = capsys.readouterr()
    assert TOKEN.encode() not in everything_written(files) and TOKEN not in out.out + out.err


def test_a_wrong_header_is_a_clear_incomplete_audit_without_the_secret(files, capsys):
    with ServingStack("open-inference", probs, SHAPE, token=TOKEN) as stack:
        wrong = "tok-wrong-0123456789"
        argv = audit_argv(
            stack.url, files, "--input-shape", "2,3", "--protocol", "kserve-v2", "--header", f"Authorization: {wrong}"
        )
        assert main(argv) == ExitCode.INCOMPLETE
    err = capsys.readouterr().err
    assert "HTTP 401" in err and "missing or invalid bearer token" in err
    assert wrong not in err and wrong.encode() not in everything_written(files)
    assert stack.rows == 0


def test_a_kserve_v1_server_of_logits(files):
    def logits(x):
        return MLP.forward(x)

    with ServingStack("kserve-v1", logits, SHAPE) as stack:
        argv = audit_argv(
            stack.url,
            files,
            *("--input-shape", "2,3", "--protocol", "tf-serving", "--output", "logits"),
            *("--likelihood", "categorical", "--input-domain=-4,4", "--timeout", "20"),
        )
        assert main(argv) == ExitCode.OK
    rows = Audit.load(files / "out").rows
    assert np.allclose([r["lambda_max"] for r in rows], WHITE, rtol=2e-3, atol=0)


USAGE = [
    ([], "needs --input-shape"),
    (["--input-shape", "0,3"], "--input-shape takes positive integers"),
    (["--input-shape", "two,3"], "--input-shape takes positive integers"),
    (["--input-shape", "3,2"], "--input-shape is (3, 2)"),
    (["--input-shape", "2,3", "--header", "Bearer-tok-0123456789"], "--header number 1 is not 'NAME: VALUE'"),
    (
        ["--input-shape", "2,3", "--header-env", "Authorization=Bearer UNSET_VAR_FOR_TEST"],
        "UNSET_VAR_FOR_TEST is not set",
    ),
    (["--input-shape", "2,3", "--header-env", "Authorization"], "--header-env takes NAME=VAR"),
    (["--input-shape", "2,3", "--header", "Bad Name: tok-0123456789"], "not a valid HTTP header name"),
    (["--input-shape", "2,3", "--input-domain", "1,0"], "--input-domain takes LOW,HIGH"),
    (["--input-shape", "2,3", "--protocol", "grpc"], "invalid choice"),
    (["--input-shape", "2,3", "--max-batch", "0"], "--max-batch"),
    (["--input-shape", "2,3", "--timeout", "0"], "timeout must be a finite number of seconds > 0"),
    (["--input-shape", "2,3", "--probs", "--output", "logits"], "contradict"),
    (["--input-shape", "2,3", "--cache-key", " "], "--cache-key must name"),
    (["--input-shape", "2,3", "--input-name", "x"], "options of protocol='open-inference'"),
]


@pytest.mark.parametrize("extra,match", USAGE, ids=[" ".join(e) for e, _ in USAGE])
def test_bad_options_are_usage_errors_before_any_request(files, extra, match, monkeypatch, capsys):
    monkeypatch.delenv("UNSET_VAR_FOR_TEST", raising=False)
    with ServingStack("open-inference", probs, SHAPE) as stack:
        assert main(audit_argv(stack.url, files, *extra)) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err and "tok-0123456789" not in err
    assert stack.requests == 0 and not (files / "out" / "results.json").exists()


def test_url_options_are_refused_for_a_model_file(files, capsys):
    (files / "m.onnx").write_bytes(b"")
    argv = audit_argv(str(files / "m.onnx"), files, "--protocol", "mlflow", "--header-env", "A=B")
    assert main(argv) == ExitCode.USAGE
    assert "--protocol, --header-env apply to a model behind a URL" in capsys.readouterr().err


def test_help_stays_cheap():
    code = "import sys, fimaudit.cli; print(sorted(m for m in ('numpy', 'httpx', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert out.strip() == "[]"


def test_a_url_without_the_http_plugin_says_what_to_install(files, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "fimaudit_http" else real(name, *a)
    )
    assert main(audit_argv("https://host/v2/models/m/infer", files, "--input-shape", "2,3")) == ExitCode.USAGE
    assert 'pip install "fimaudit[http]"' in capsys.readouterr().err
