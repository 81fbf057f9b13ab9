"""Build the demo model shipped in fimaudit/data/demo_digits.npz (run once; needs torch and
scikit-learn): a 64-32-10 tanh MLP trained on scikit-learn's digits (8×8 images scaled to
[0, 1]), with the held-out test split stored beside its weights.

    python examples/build_demo_model.py
"""

import os

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

OUT = os.path.join(os.path.dirname(__file__), "..", "fimaudit", "data", "demo_digits.npz")


def main():
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.2, random_state=0, stratify=y)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.Tanh(), torch.nn.Linear(32, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2, weight_decay=1e-4)
    xt, yt = torch.from_numpy(Xtr), torch.from_numpy(ytr)
    for _ in range(300):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(xt), yt)
        loss.backward()
        opt.step()
    with torch.no_grad():
        acc = (net(torch.from_numpy(Xte)).argmax(1).numpy() == yte).mean()
    print(f"test accuracy {acc:.3f}")
    w = [net[0].weight, net[2].weight]
    b = [net[0].bias, net[2].bias]
    np.savez_compressed(OUT, W0=w[0].detach().numpy().astype(np.float64), b0=b[0].detach().numpy().astype(np.float64),
                        W1=w[1].detach().numpy().astype(np.float64), b1=b[1].detach().numpy().astype(np.float64),
                        X_test=Xte, y_test=yte.astype(np.int64))
    print("wrote", os.path.abspath(OUT))


if __name__ == "__main__":
    main()
