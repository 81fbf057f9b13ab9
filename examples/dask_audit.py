"""Spread an audit over a Dask cluster (a local one here) through its executor.

python examples/dask_audit.py
"""

import numpy as np
from distributed import Client, LocalCluster

import fimaudit as fa
from fimaudit.testing import MLPModel

model = MLPModel.random([20, 32, 10], seed=0, scale=2.0)
X = np.random.default_rng(0).standard_normal((400, 20))

if __name__ == "__main__":
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        audit = fa.audit(model, X, batch_size=50, executor=client.get_executor(), progress=False)
    local = fa.audit(model, X, batch_size=50, progress=False)
    same = [r["lambda_max"] for r in audit.rows] == [r["lambda_max"] for r in local.rows]
    print("median λ_max", audit.summary["lambda_max_quantiles"]["median"], "same as a local run:", same)
