"""Build the demo shipped in fimaudit/data/ (run once; needs torch, onnx and scikit-learn):
a small CNN trained on scikit-learn's digits (8×8 images scaled to [0, 1]), exported to
ONNX (``demo_digits_cnn.onnx``), with the held-out test split (``demo_digits_test.npz``).

    python examples/build_demo_model.py
"""

import io
import os

import numpy as np
import onnx
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fimaudit", "data")


def cnn():
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 16, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AvgPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(16 * 4 * 4, 10),
    )


def main():
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.2, random_state=0, stratify=y)
    torch.manual_seed(0)
    net = cnn()
    opt = torch.optim.Adam(net.parameters(), lr=5e-3, weight_decay=1e-4)
    xt, yt = torch.from_numpy(Xtr), torch.from_numpy(ytr)
    for _ in range(200):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(xt), yt).backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        acc = (net(torch.from_numpy(Xte)).argmax(1).numpy() == yte).mean()
    print(f"test accuracy {acc:.3f}")
    buf = io.BytesIO()
    torch.onnx.export(
        net,
        (torch.from_numpy(Xte[:2]),),
        buf,
        dynamo=False,
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
    )
    model = onnx.load_from_string(buf.getvalue())
    onnx.checker.check_model(model)
    onnx.save(model, os.path.join(DATA, "demo_digits_cnn.onnx"))
    np.savez_compressed(os.path.join(DATA, "demo_digits_test.npz"), X_test=Xte, y_test=yte.astype(np.int64))
    print("wrote", os.path.abspath(DATA))


if __name__ == "__main__":
    main()
