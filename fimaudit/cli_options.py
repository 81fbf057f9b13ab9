"""The model options of ``fimaudit audit``: how the command reaches a served model (URL) or
reads an ONNX file, turned into the options of :func:`fimaudit.wrap`.

Every value is checked here, before the model is loaded or any request is made; a bad one
raises :class:`~fimaudit.errors.InvalidArgumentError` (exit status 2). Header values are
secrets: no message quotes one, and ``--header-env NAME=VAR`` reads the value from the
environment variable ``VAR`` (``NAME=SCHEME VAR``: ``SCHEME <value of VAR>``, e.g.
``Authorization=Bearer VENDOR_TOKEN``) so it stays out of shell history and ``ps``. This module
imports nothing heavy (``fimaudit --help`` stays immediate).
"""

from __future__ import annotations

import importlib.util
import math
import os

from .errors import InvalidArgumentError, MissingAdapterError

__all__ = ["URL_EXAMPLE", "URL_ONLY", "add_model_options", "input_domain", "input_shape", "is_url", "model_options"]

PROTOCOLS = ("default", "open-inference", "kserve-v2", "triton", "kserve-v1", "tf-serving", "mlflow")
LIKELIHOODS = ("categorical", "bernoulli", "gaussian")
# option → its name on the command line; these reach a served model only
URL_ONLY = {
    "num_outputs": "--num-outputs",
    "protocol": "--protocol",
    "header": "--header",
    "header_env": "--header-env",
    "max_batch": "--max-batch",
    "timeout": "--timeout",
    "dtype": "--dtype",
    "cache": "--cache",
    "cache_key": "--cache-key",
}

URL_EXAMPLE = (
    "Audit a model on the inputs of a .npy file, e.g. a served one:\n"
    "  fimaudit audit https://host/v2/models/clf/infer --data X.npy --out report \\\n"
    "    --input-shape 1,16,16 --num-outputs 10 --protocol open-inference \\\n"
    "    --header-env 'Authorization=Bearer VENDOR_TOKEN' --budget 201 --cache answers.sqlite --cache-key clf-v3"
)


def is_url(model):
    return model.lower().startswith(("http://", "https://"))


def add_model_options(au, positive_int, positive_float):
    g = au.add_argument_group("the model behind a URL (fimaudit-http) or in an ONNX file")
    g.add_argument("--input-shape", help="one input's shape without the batch axis, e.g. 1,16,16 (needed for a URL)")
    g.add_argument("--num-outputs", type=positive_int, help="outputs per input (URL; else read from the first answer)")
    g.add_argument("--protocol", choices=PROTOCOLS, help="the server's request/answer format (URL; default 'default')")
    g.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="a request header (URL; repeatable). Visible in shell history and ps: prefer --header-env for secrets",
    )
    g.add_argument(
        "--header-env",
        action="append",
        default=[],
        metavar="NAME=VAR",
        help="a request header read from the environment variable VAR (URL; repeatable); "
        "NAME='SCHEME VAR' sends 'SCHEME <value>', e.g. --header-env 'Authorization=Bearer VENDOR_TOKEN'",
    )
    g.add_argument("--max-batch", type=positive_int, help="rows per request (URL; default 64)")
    g.add_argument("--timeout", type=positive_float, help="seconds per request attempt (URL; default 30)")
    g.add_argument("--dtype", choices=["float32", "float64"], help="send rows as this dtype (URL; FP32 servers)")
    g.add_argument("--input-name", help="the model's input tensor name (ONNX, or a URL with --protocol open-inference)")
    g.add_argument("--output-name", help="the output tensor to audit (ONNX, or open-inference)")
    g.add_argument("--cache", metavar="FILE", help="SQLite cache of the answers: a rerun sends no row twice (URL)")
    g.add_argument(
        "--cache-key", metavar="NAME", help="the model and its version, e.g. fraud-v3: the cache's key (URL)"
    )
    g.add_argument("--output", choices=["probs", "logits"], help="what the model outputs (default: probs for a URL)")
    g.add_argument("--likelihood", choices=LIKELIHOODS, help="the output distribution (default categorical)")
    g.add_argument(
        "--input-domain",
        metavar="LOW,HIGH",
        help="the inputs' range, for the certified bound of LayerNorm/attention models; "
        "write --input-domain=-1,1 when LOW is negative",
    )


def input_domain(text):
    """``LOW,HIGH`` as a pair of finite numbers with LOW < HIGH, or None for None."""
    if text is None:
        return None
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        low = high = math.nan
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise InvalidArgumentError(f"--input-domain takes LOW,HIGH (two finite numbers, LOW < HIGH), got {text!r}")
    return low, high


def model_options(args, environ=None):
    """The options of :func:`fimaudit.wrap` that the command line asks for."""
    environ = os.environ if environ is None else environ
    url = is_url(args.model)
    if not url:
        given = [flag for key, flag in URL_ONLY.items() if getattr(args, key) not in (None, [])]
        if given:
            raise InvalidArgumentError(f"{', '.join(given)} apply to a model behind a URL, not to {args.model!r}")
    elif args.input_shape is None:
        raise InvalidArgumentError(
            "auditing a URL needs --input-shape (one input's shape without the batch axis, e.g. --input-shape 1,16,16)"
        )
    elif importlib.util.find_spec("fimaudit_http") is None:
        raise MissingAdapterError('auditing a URL needs the fimaudit-http plugin: pip install "fimaudit[http]"')
    if args.cache_key is not None and not args.cache_key.strip():
        raise InvalidArgumentError("--cache-key must name the model and its version, e.g. --cache-key fraud-v3")
    if args.probs and args.output == "logits":
        raise InvalidArgumentError("--probs and --output logits contradict each other: pass one")
    options = {}
    if args.input_shape is not None:
        options["input_shape"] = input_shape(args.input_shape)
    for key in ("num_outputs", "protocol", "max_batch", "timeout", "dtype", "input_name", "output_name", "likelihood"):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    if args.cache is not None:
        options["cache"] = args.cache
    if args.cache_key is not None:
        options["cache_key"] = args.cache_key.strip()
    output = "probs" if args.probs else args.output
    if output is not None:
        options["output"] = output
    headers = _headers(args.header, args.header_env, environ)
    if headers:
        options["headers"] = headers
    return options


def input_shape(text):
    """``3,32,32`` as a tuple of positive integers."""
    try:
        shape = tuple(int(s) for s in text.split(","))
    except ValueError:
        shape = ()
    if not shape or any(s < 1 for s in shape):
        raise InvalidArgumentError(
            f"--input-shape takes positive integers separated by commas (e.g. 3,32,32), got {text!r}"
        )
    return shape


def _headers(pairs, env_pairs, environ):
    headers = {}
    for i, text in enumerate(pairs, 1):
        name, colon, value = text.partition(":")
        if not colon or not name.strip() or not value.strip():
            # the text may hold a secret: it is not quoted
            raise InvalidArgumentError(f"--header number {i} is not 'NAME: VALUE' (a name, a colon, a value)")
        headers[name.strip()] = value.strip()
    for text in env_pairs:
        name, eq, source = text.partition("=")
        scheme, _, var = source.strip().rpartition(" ")
        if not eq or not name.strip() or not var:
            raise InvalidArgumentError(f"--header-env takes NAME=VAR or NAME='SCHEME VAR', got {text!r}")
        value = environ.get(var, "")
        if not value.strip():
            raise InvalidArgumentError(
                f"--header-env {name.strip()}: the environment variable {var} is not set or empty; export it first"
            )
        headers[name.strip()] = f"{scheme.strip()} {value.strip()}" if scheme.strip() else value.strip()
    return headers
