"""Audit a PyTorch model: λ_max per input, its top direction, and a report.

python examples/torch_quickstart.py [OUT_DIR]
"""

import sys

import torch

import fimaudit as fa

torch.manual_seed(0)
net = torch.nn.Sequential(
    torch.nn.Conv2d(3, 8, 3, padding=1),
    torch.nn.ReLU(),
    torch.nn.AdaptiveAvgPool2d(4),
    torch.nn.Flatten(),
    torch.nn.Linear(128, 10),
).eval()
x = torch.rand(32, 3, 16, 16)

r = fa.fisher_norm(net, x, return_direction=True)
print("λ_max of the first inputs:", r.value[:4].tolist(), "method:", r.method, "calls per input:", int(r.queries[0]))
worst = int(r.value.argmax())
print(f"most sensitive input: {worst}; its most damaging direction has norm {r.direction[worst].norm():.3f}")

audit = fa.audit(fa.wrap(net, input_shape=(3, 16, 16)), x, progress=False)
print("report:", audit.save(sys.argv[1] if len(sys.argv) > 1 else "torch-report"))
