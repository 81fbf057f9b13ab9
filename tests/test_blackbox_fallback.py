"""``fimaudit.wrap`` on a plain function that runs a framework model warns, once, that it will be
audited as a black box, and says how to get autodiff; a true black box gets no warning, and the
check imports no framework."""

import functools
import subprocess
import sys
import types
import warnings

import numpy as np
import pytest

import fimaudit as fa
from fimaudit.blackbox.fallback import framework_user
from fimaudit.errors import BlackBoxFallbackWarning

torch = pytest.importorskip("torch")

NET = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Softmax(dim=1)).double().eval()
X = np.random.default_rng(0).standard_normal((2, 4))


def through_global(x):
    with torch.no_grad():
        return NET(torch.as_tensor(x)).numpy()


def numpy_only(x):  # in a module that imports torch, but uses numpy only
    e = np.exp(x[:, :3] - x[:, :3].max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def closure_over(net):
    return lambda x: net(x).detach().numpy()


class Service:
    def __init__(self, net):
        self.net = net

    def __call__(self, x):
        return self.net(x).detach().numpy()


def softmax_of(net, x):
    return net(x)


CASES = {
    "global module": (through_global, "torch.nn.modules.container.Sequential"),
    "closure": (closure_over(NET), "torch.nn.modules.container.Sequential"),
    "callable object": (Service(NET), "torch.nn.modules.container.Sequential"),
    "partial": (functools.partial(softmax_of, NET), "torch.nn.modules.container.Sequential"),
    "torch.nn.functional": (torch.nn.functional.softmax, "torch.nn.functional.softmax"),
}


def wrapped_warnings(fn, **options):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        m = fa.wrap(fn, input_shape=(4,), **options)
    return m, [w for w in seen if issubclass(w.category, BlackBoxFallbackWarning)]


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_function_around_a_torch_model_warns_how_to_get_autodiff(case):
    fn, what = CASES[case]
    _, seen = wrapped_warnings(fn)
    assert len(seen) == 1 and seen[0].filename == __file__  # pointed at the caller of wrap
    msg = str(seen[0].message)
    assert what in msg and "black box" in msg and "wrap the torch model itself" in msg and "fimaudit-torch" in msg


def test_the_warning_comes_once_per_wrap_not_per_call():
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        m = fa.wrap(through_global, input_shape=(4,), output="probs")
        r = fa.fisher_norm(m, X, method="exact")
    assert sum(issubclass(w.category, BlackBoxFallbackWarning) for w in seen) == 1
    assert np.all(np.isfinite(r.value))


@pytest.mark.parametrize(
    "fn", [numpy_only, lambda x: np.tanh(x), np.tanh, functools.partial(np.clip, a_min=0, a_max=1)]
)
def test_a_true_black_box_gets_no_warning(fn):
    _, seen = wrapped_warnings(fn)
    assert seen == []


def test_keras_and_jax_are_recognised_through_sys_modules(monkeypatch):
    keras = types.ModuleType("keras")
    keras.Model = type("Model", (), {"__call__": lambda self, x: x})
    monkeypatch.setitem(sys.modules, "keras", keras)
    model = keras.Model()
    assert framework_user(lambda x: model(x))[0] == "keras"

    def jnp_tanh(x):
        return x

    jnp_tanh.__module__ = "jax.numpy"
    assert framework_user(jnp_tanh) == ("jax", "jax.numpy.jnp_tanh")
    assert framework_user(lambda x: jnp_tanh(x))[0] == "jax"


def test_odd_objects_never_stop_wrap():
    class Weird:
        def __getattr__(self, name):
            raise RuntimeError("no attributes here")

        def __call__(self, x):
            return numpy_only(x)

    assert framework_user(Weird()) is None
    assert fa.wrap(Weird(), input_shape=(4,)).forward(X).shape == (2, 3)


def test_the_check_imports_no_framework():
    code = (
        "import sys, numpy as np, fimaudit as fa\n"
        "fa.wrap(lambda x: np.tanh(x), input_shape=(3,))\n"
        "print(sorted(m for m in ('torch', 'tensorflow', 'keras', 'jax') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stderr
