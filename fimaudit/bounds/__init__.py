"""Certified bounds from ONNX graphs: per-node Lipschitz rules composed along the graph.

Importing this package imports ``onnx`` only when a bound is computed.
"""

from .lipschitz import LipschitzBound, lipschitz_bound, rank_models

__all__ = ["LipschitzBound", "lipschitz_bound", "rank_models"]
