"""Float32 torch models served as black boxes (probabilities out) against autodiff."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("fimaudit_torch")

from fimaudit_torch.testing import small_cnn, small_resnet, smooth_cnn  # noqa: E402

import fimaudit as fa  # noqa: E402


def _service(net):
    def service(batch):  # what a vendor would run: float32 in, float32 probabilities out
        with torch.no_grad():
            return torch.softmax(net(torch.from_numpy(batch)), dim=1).numpy()

    return service


# smooth activations: within the 2e-3; ReLU/max-pool kinks put a floor near 5e-3 here
# (and above 1e-2 with another torch build's float32 kernels, seen on an H200 with torch 2.11)
@pytest.mark.parametrize(
    "make,rtol", [(smooth_cnn, 2e-3), (small_cnn, 3e-2), (small_resnet, 3e-2)], ids=["smooth-cnn", "relu-cnn", "resnet"]
)
def test_float32_black_box_exact_against_autodiff(make, rtol):
    for seed in range(3):
        torch.manual_seed(seed)
        net = make().eval()
        x = torch.rand(4, 3, 16, 16)
        truth = fa.fisher_norm(net, x.double().numpy(), method="exact").value
        bb = fa.wrap(_service(net), input_shape=(3, 16, 16), output="probs", accepts="numpy", batch_size=512)
        r = fa.fisher_norm(bb, x.numpy(), method="exact", return_direction=True)
        rel = np.abs(r.value / truth - 1)
        assert np.all(rel <= rtol), rel
        assert int(np.sum(r.queries)) == bb.calls and np.all(
            r.queries >= bb.costs().setup + 2 * 768
        )  # kink repairs vary
        if make is smooth_cnn:  # the FD error estimate covers truncation it can see; kinks it may miss
            assert np.all((r.lower <= truth) & (truth <= r.upper))
