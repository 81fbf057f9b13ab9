"""fimaudit-torch against hand-written Jacobians, dense autograd Jacobians and itself."""

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
fimaudit_torch = pytest.importorskip("fimaudit_torch")

from fimaudit_torch.testing import mlp_from_numpy, small_cnn, small_resnet, small_vit  # noqa: E402

import fimaudit as fa  # noqa: E402
from fimaudit import errors as E  # noqa: E402
from fimaudit.testing import MLPModel, check_adapter  # noqa: E402


def dense_reference(net, x):
    """λ_max(Jᵀ M J) with J from torch.autograd.functional.jacobian (float64) and the
    metric table of docs/design.md formed directly, row by row."""
    out = []
    with torch.no_grad():
        z = net(x)
    for i in range(x.shape[0]):
        J = torch.autograd.functional.jacobian(lambda a: net(a[None])[0], x[i]).reshape(z.shape[1], -1)
        M = fa.testing.dense_metric(z[i : i + 1].numpy())[0]
        F = J.numpy().T @ M @ J.numpy() if J.shape[1] <= 400 else None
        if F is not None:
            out.append(np.linalg.eigvalsh(F)[-1])
        else:  # same nonzero spectrum, C×C
            G = J.numpy() @ J.numpy().T
            w, V = np.linalg.eigh(M)
            Mh = V @ np.diag(np.sqrt(np.clip(w, 0, None))) @ V.T
            out.append(np.linalg.eigvalsh(Mh @ G @ Mh)[-1])
    return np.array(out)


MODELS = {
    "cnn": lambda: small_cnn(),
    "resnet": lambda: small_resnet(),
    "vit": lambda: small_vit(),
}


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_conformance(name, dtype):
    torch.manual_seed(0)
    net = MODELS[name]().to(dtype).eval()
    x = torch.rand(3, 3, 16, 16, dtype=dtype)
    rep = check_adapter(fa.wrap(net), x)
    assert rep["adjointness"] < (1e-4 if dtype == torch.float32 else 1e-10)


@pytest.mark.parametrize("name", list(MODELS))
def test_exact_and_lanczos_match_dense_jacobian_float64(name):
    torch.manual_seed(1)
    net = MODELS[name]().double().eval()
    x = torch.rand(3, 3, 16, 16, dtype=torch.float64)
    ref = dense_reference(net, x)
    r = fa.fisher_norm(net, x, method="exact", return_direction=True)
    assert torch.allclose(r.value, torch.from_numpy(ref), rtol=1e-9)
    assert torch.allclose(r.direction.flatten(1).norm(dim=1), torch.ones(3, dtype=torch.float64))
    rl = fa.fisher_norm(net, x, method="lanczos", tol=1e-8)
    assert np.all(rl.value.numpy() <= ref * (1 + 1e-12)) and np.all(rl.value.numpy() >= ref * (1 - 1e-8))


def test_matches_numpy_mlp_with_hand_written_jacobian():
    ref = MLPModel.random([12, 16, 16, 7], seed=4, scale=2.0)
    net = mlp_from_numpy(ref).eval()
    x = np.random.default_rng(0).standard_normal((5, 12))
    for method in ["exact", "lanczos"]:
        a = fa.fisher_norm(net, x, method=method, tol=1e-10)
        b = fa.fisher_norm(ref, x, method="exact")
        assert isinstance(a.value, np.ndarray)
        assert np.allclose(a.value, b.value, rtol=1e-9)
    ta, tb = fa.fisher_trace(net, x), fa.fisher_trace(ref, x)
    assert np.allclose(ta.value, tb.value, rtol=1e-10)
    sa, sb = fa.fisher_spectrum(net, x, k=3), fa.fisher_spectrum(ref, x, k=3)
    assert np.allclose(sa.values, sb.values, rtol=1e-9)


def test_float32_agrees_with_float64():
    torch.manual_seed(2)
    net = small_cnn().eval()
    x = torch.rand(4, 3, 16, 16)
    r32 = fa.fisher_norm(net, x).value
    r64 = fa.fisher_norm(copy.deepcopy(net).double(), x.double()).value
    assert r32.dtype == torch.float32
    assert torch.allclose(r32.double(), r64, rtol=1e-4)


def test_arrays_come_back_in_the_callers_library():
    net = small_cnn().eval()
    xt = torch.rand(2, 3, 16, 16)
    rt = fa.fisher_norm(net, xt, return_direction=True)
    assert isinstance(rt.value, torch.Tensor) and isinstance(rt.direction, torch.Tensor)
    assert rt.direction.shape == xt.shape
    rn = fa.fisher_norm(net, xt.numpy().astype(np.float64), return_direction=True)
    assert isinstance(rn.value, np.ndarray) and isinstance(rn.direction, np.ndarray)
    assert np.allclose(rn.value, rt.value.numpy(), rtol=1e-5)


def test_module_is_never_mutated():
    torch.manual_seed(3)
    net = small_resnet()  # has BatchNorm; left in training mode on purpose
    with torch.no_grad():
        net(torch.rand(8, 3, 16, 16))  # give the running stats non-trivial values
    before = copy.deepcopy(net.state_dict())
    with pytest.warns(E.TrainingModeWarning, match="eval"):
        m = fa.wrap(net)
    fa.fisher_norm(m, torch.rand(3, 3, 16, 16), method="lanczos", tol=1e-3)
    assert net.training
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in net.parameters())


def test_dropout_in_training_mode_is_refused():
    net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Dropout(0.5), torch.nn.Linear(16, 4))
    with pytest.warns(E.TrainingModeWarning):
        m = fa.wrap(net)
    with pytest.raises(E.NondeterministicModelError, match="module.eval"):
        fa.fisher_norm(m, torch.rand(3, 6))
    fa.fisher_norm(net.eval(), torch.rand(3, 6))  # fine once in eval mode


def test_attention_falls_back_and_stays_correct():
    """The fused attention kernels lack forward-mode AD (and their double backward):
    the adapter must switch to the double-backward JVP under the math SDPA kernel."""
    torch.manual_seed(5)
    net = small_vit().eval()
    x = torch.rand(2, 3, 16, 16)
    m = fa.wrap(net)
    exact = fa.fisher_norm(m, x, method="exact").value
    lz = fa.fisher_norm(m, x, method="lanczos", tol=1e-5).value
    assert torch.allclose(lz, exact, rtol=1e-4)
    ref = dense_reference(copy.deepcopy(net).double(), x.double())
    assert np.allclose(exact.numpy(), ref, rtol=1e-4)


def test_saturated_torch_logits_give_finite_values():
    lin = torch.nn.Linear(5, 4)
    with torch.no_grad():
        lin.weight.normal_()
        lin.bias.copy_(torch.tensor([1e4, 1e4, -1e4, -1e4]))
    x = torch.zeros(3, 5)
    r = fa.fisher_norm(lin.eval(), x, return_direction=True)
    expected = 0.25 * (lin.weight[0] - lin.weight[1]).pow(2).sum()
    assert torch.isfinite(r.value).all() and torch.isfinite(r.direction).all()
    assert torch.allclose(r.value, expected.expand(3), rtol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors_stay_on_the_device():
    net = small_cnn().cuda().eval()
    x = torch.rand(4, 3, 16, 16, device="cuda")
    for method in ["exact", "lanczos"]:
        r = fa.fisher_norm(net, x, method=method, return_direction=True)
        assert r.value.device.type == "cuda" and r.direction.device.type == "cuda"
    cpu = fa.fisher_norm(copy.deepcopy(net).cpu(), x.cpu()).value
    assert torch.allclose(r.value.cpu(), cpu, rtol=1e-3)


@pytest.mark.parametrize("name", list(MODELS))
def test_vmap_and_loop_give_the_same_products(name):
    torch.manual_seed(6)
    net = MODELS[name]().double().eval()
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    a = fa.fisher_norm(fa.wrap(net, vectorize="vmap"), x, method="exact", return_direction=True)
    b = fa.fisher_norm(fa.wrap(net, vectorize="loop"), x, method="exact", return_direction=True)
    assert torch.allclose(a.value, b.value, rtol=1e-12)
    t = fa.fisher_trace(fa.wrap(net, vectorize="vmap"), x, method="hutchinson", k=40)
    u = fa.fisher_trace(fa.wrap(net, vectorize="loop"), x, method="hutchinson", k=40)
    assert torch.allclose(t.value, u.value, rtol=1e-12)


def test_tf32_flags_are_restored():
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    fa.fisher_norm(small_cnn().eval(), torch.rand(2, 3, 16, 16))
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before
    with pytest.raises(E.InvalidArgumentError, match="vectorize"):
        fa.wrap(small_cnn().eval(), vectorize="threads")
