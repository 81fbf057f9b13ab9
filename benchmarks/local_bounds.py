"""Local certified bounds against measured Jacobian norms inside the same boxes, one run.

    python benchmarks/local_bounds.py [--models vit,mlp]

Per model (random-init VGG-, ResNet-, DenseNet-style CNNs at 3×32×32 from the torch zoo, a
ReLU MLP on 64 features, the ViT-style model at 3×16×16 (two encoder layers and one more
attention block, 4×4 patches, 16 tokens of 32 features), C = 10), exported to ONNX, for one
input x: the global certified bound (where the global rules take the model)
(fimaudit.lipschitz_bound), and for the ℓ∞ boxes of radius ρ around x the local bound
(fimaudit.local_bound, uncapped by the global one), the measured max ‖J(x')‖₂ over points of
the box plus an ascent on it (a lower bound on the true supremum), their ratio, the number of
pre-activation units tightened (at most 4096 per tensor), and the seconds the local bound
took. Then, for the MLP and the VGG, the certified ℓ2 radius of the predicted class
(fimaudit.certified_radius, CROWN margins on ℓ2 balls and the local Lipschitz route) next to
the global one, margin/(√2 L), and the smallest ℓ2 distance PGD with bisection finds
(benchmarks/validation/attacks.py; an upper bound on the true one). The same for a ReLU MLP
and CNN trained briefly on scikit-learn's digits (8×8 images in [0, 1]): medians over test
inputs the model classifies correctly.
``--models`` runs only the named models (``digits``: the two trained ones) and keeps the other
models' rows of the results file.

    python benchmarks/local_bounds.py --radii 1e-3   # one box radius only

Writes benchmarks/results/local_bounds_cpu.txt (after every row).
"""

import argparse
import copy
import os
import sys
import time
import warnings

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "adapters", "torch"))
from fimaudit_torch.testing import (  # noqa: E402
    densenet_style,
    resnet_style,
    small_vit,
    vgg_style,
    with_batchnorm_statistics,
    worst_jacobian_norm_in_box,
)

import fimaudit as fa  # noqa: E402
from benchmarks.validation import attacks, data, train, zoo  # noqa: E402
from fimaudit.bounds.lipschitz import _proto  # noqa: E402
from fimaudit.errors import UnsupportedOnnxOpError  # noqa: E402

RADII = (1e-4, 1e-3, 1e-2, 1e-1)
TIGHTEN = 4096  # units tightened per tensor at most (the default)
DIGITS = 6  # test inputs per digits model


def mlp():
    return torch.nn.Sequential(
        torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10)
    )


def models():
    for name, make, shape in (
        ("vgg", vgg_style, (3, 32, 32)),
        ("resnet", resnet_style, (3, 32, 32)),
        ("densenet", densenet_style, (3, 32, 32)),
        ("mlp", mlp, (64,)),
        ("vit", small_vit, (3, 16, 16)),
    ):
        torch.manual_seed(0)
        net = with_batchnorm_statistics(make().eval())
        yield name, net, shape


def attack_distance(net, x, y):
    """The smallest ℓ2 distance to another class PGD with bisection finds (in [0, 1]^d for digits)."""
    net = copy.deepcopy(net).float().eval()
    xt, yt = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y)
    adv = attacks.pgd_bisection(net, xt, yt, high=8.0)
    with torch.no_grad():
        hit = net(adv).argmax(1) != yt
    return np.where(hit.numpy(), (adv - xt).flatten(1).norm(dim=1).numpy(), np.inf)


def digits_rows():
    """Median certified ℓ2 radius vs median attack distance, trained digits MLP and CNN."""
    Xtr, ytr, Xte, yte, shape = data.load("digits")
    mean, std = Xtr.mean(0), Xtr.std(0) + 1e-2
    for arch in ("mlp", "cnn"):
        torch.manual_seed(0)
        net = train.train(zoo.build(arch, shape, 10, mean, std, width=64), Xtr, ytr, epochs=10)
        with torch.no_grad():
            ok = np.flatnonzero(net(torch.from_numpy(Xte)).argmax(1).numpy() == yte)[:DIGITS]
        proto = _proto(fa.wrap(net, input_shape=shape))
        X = Xte[ok].astype(np.float64)
        t0 = time.perf_counter()
        r = fa.certified_radius(proto, X, iterations=4, input_domain=(0.0, 1.0), tighten=TIGHTEN)
        secs = time.perf_counter() - t0
        g = fa.lipschitz_bound(proto)
        with torch.no_grad():
            rg = g.certified_radius(copy.deepcopy(net).double()(torch.from_numpy(X)).numpy())
        d = attack_distance(net, Xte[ok], yte[ok])
        yield (
            row(
                f"digits-{arch}",
                f"{np.median(rg):.4g}",
                f"{np.median(r):.4g}",
                f"{np.median(d):.4g}",
                f"{np.median(d / r):.3g}",
                f"{secs / len(ok):.1f}",
            )
        )


def row(*cells):
    """One markdown table row."""
    return "| " + " | ".join(map(str, cells)) + " |"


def table_head(*names):
    return [row(*names), row(*["---"] * len(names))]


def _previous(path):
    """{model: [rows]} of each table in an earlier results file (two tables), or empty ones."""
    tables = ({}, {})
    if os.path.exists(path):
        k = 0
        for line in open(path, encoding="utf-8").read().splitlines():
            if not line.strip():
                k = 1
            cells = [c.strip() for c in line.strip("|").split("|")]
            if line.startswith("| ") and cells[0] not in ("model", "---"):
                tables[k].setdefault(cells[0], []).append(line)
    return tables


def certified_row(name, net, proto, x, glob):
    t0 = time.perf_counter()
    r = fa.certified_radius(proto, x.numpy(), iterations=3, input_domain=(0.0, 1.0), tighten=TIGHTEN)[0]
    secs = time.perf_counter() - t0
    with torch.no_grad():
        z = copy.deepcopy(net).double()(x)[0].numpy()
    rg = (np.sort(z)[-1] - np.sort(z)[-2]) / (np.sqrt(2) * glob)
    d = attack_distance(net, x, torch.tensor([int(np.argmax(z))]))[0]
    return row(name, f"{rg:.4g}", f"{r:.4g}", f"{d:.4g}", f"{d / r:.3g}", f"{secs:.1f}")


def main():
    """``--models vit,mlp`` runs only those models and keeps the other rows of the results file;
    ``--radii 1e-3 ...`` limits the box radii (default: all four). The results file is rewritten
    after every row, so an interrupted run leaves the rows it finished."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="", help="comma-separated models to run (default: all)")
    parser.add_argument("--radii", nargs="+", type=float, default=list(RADII), help="box radii (default: all four)")
    args = parser.parse_args()
    chosen, radii = [m for m in args.models.split(",") if m], args.radii
    out = os.path.join(ROOT, "benchmarks", "results", "local_bounds_cpu.txt")
    old = _previous(out) if chosen else ({}, {})
    warnings.simplefilter("ignore")
    torch.set_num_threads(2)
    lines = [
        "Local certified bounds vs measured max ‖J‖₂ in the same ℓ∞ box (one input, random init, float64)",
        *table_head(
            "model", "radius", "global", "local", "measured", "local/meas", "glob/meas", "tightened", "seconds"
        ),
    ]
    radii_lines = [
        "Certified ℓ2 radius of the predicted class (median over inputs; random-init models: one input)",
        *table_head("model", "global", "local", "attack", "attack/local", "seconds per input"),
    ]

    def flush():
        print((radii_lines if len(radii_lines) > 3 else lines)[-1], flush=True)
        with open(out, "w", encoding="utf-8") as f:
            f.write("\n".join(lines + [""] + radii_lines) + "\n")

    later = {}
    for name, net, shape in models():
        if chosen and name not in chosen:
            lines += old[0].get(name, [])
            radii_lines += old[1].get(name, [])
            continue
        proto = _proto(fa.wrap(net, input_shape=shape))
        x = torch.rand(1, *shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        try:
            glob = fa.lipschitz_bound(proto).lipschitz
        except UnsupportedOnnxOpError:  # attention has no global bound without an input domain
            glob = float("nan")
        for rho in radii:
            t0 = time.perf_counter()
            try:
                b = fa.local_bound(proto, x.numpy(), rho, global_cap=False, tighten=TIGHTEN)
            except UnsupportedOnnxOpError as err:
                lines.append(row(name, "all", f"unsupported: {str(err).split(':')[0]}", *[""] * 6))
                break
            secs = time.perf_counter() - t0
            box = (x[0] - rho, x[0] + rho)
            meas = worst_jacobian_norm_in_box(net, *box, starts=3, steps=5)
            loc = float(b.lipschitz[0])
            lines.append(
                row(
                    name,
                    f"{rho:.0e}",
                    f"{glob:.4g}" if glob == glob else "—",
                    f"{loc:.4g}",
                    f"{meas:.4g}",
                    f"{loc / meas:.3g}",
                    f"{glob / meas:.3g}" if glob == glob else "—",
                    f"{int(b.tightened_units[0])}",
                    f"{secs:.2f}",
                )
            )
            flush()
        else:
            if name in ("mlp", "vgg"):
                later[name] = (net, proto, x, glob)
    named = {name for name, _, _ in models()}
    if not chosen or "mlp" in chosen:
        radii_lines.append(certified_row("mlp", *later["mlp"]))
        flush()
    if not chosen or "digits" in chosen:
        for r in digits_rows():
            radii_lines.append(r)
            flush()
    else:  # the trained digits models' rows of the earlier run
        radii_lines += [r for name, rows in old[1].items() if name not in named for r in rows]
    if not chosen or "vgg" in chosen:
        radii_lines.append(certified_row("vgg", *later["vgg"]))
    flush()


if __name__ == "__main__":
    main()
