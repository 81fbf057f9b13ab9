"""Local certified bounds: on a box around each input, the Jacobian's norm, the logits, the
Fisher information's largest eigenvalue, and a certified radius (:mod:`.api`)."""

from .api import LocalBound, certified_radius, local_bound

__all__ = ["LocalBound", "certified_radius", "local_bound"]
