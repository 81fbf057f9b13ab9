"""Exceptions raised by fimaudit.

Every error is a :class:`FimauditError` and also the built-in exception a caller
would naturally catch (``ValueError`` for bad values, ``TypeError`` for bad types,
``ImportError`` for a missing plugin, ``ArithmeticError`` for numerical failures),
and its message names the problem and the fix.
"""

from __future__ import annotations

__all__ = [
    "FimauditError",
    "InvalidArgumentError",
    "InputShapeError",
    "InputDtypeError",
    "EmptyBatchError",
    "NonFiniteOutputError",
    "UnsupportedModelError",
    "MissingAdapterError",
    "NondeterministicModelError",
    "NotConvergedError",
    "TrainingModeWarning",
    "NotConvergedWarning",
    "BlackBoxFallbackWarning",
    "InvalidModelOutputError",
    "QueryBudgetExceeded",
    "NoiseDominatesWarning",
    "PrecisionNotReachedWarning",
    "ServiceError",
    "InvalidModelFileError",
    "UnsupportedOnnxOpError",
    "NonFiniteBoundError",
    "MemoryLimitError",
    "JournalError",
    "WorkerLostError",
]


class FimauditError(Exception):
    """Base class of every error fimaudit raises."""


class InvalidArgumentError(FimauditError, ValueError):
    """An argument has a value the function cannot use (tol <= 0, k too large, ...)."""


class InputShapeError(InvalidArgumentError):
    """The input batch does not have the shape the model expects."""


class InputDtypeError(FimauditError, TypeError):
    """The input batch has a dtype the model cannot use (integers, complex, objects)."""


class EmptyBatchError(InvalidArgumentError):
    """The input batch has no rows."""


class NonFiniteOutputError(FimauditError, FloatingPointError):
    """The model returned NaN or infinite logits (or products) for some inputs.

    ``indices`` lists the offending rows of the batch.
    """

    def __init__(self, message: str, indices=()):
        super().__init__(message)
        self.indices = list(indices)


class UnsupportedModelError(FimauditError, TypeError):
    """``fimaudit.wrap`` found no adapter that claims the object."""


class MissingAdapterError(UnsupportedModelError, ImportError):
    """The object belongs to a framework whose fimaudit plugin is not installed."""


class NondeterministicModelError(FimauditError, RuntimeError):
    """Two forward passes on the same batch gave different outputs (dropout active?)."""


class NotConvergedError(FimauditError, ArithmeticError):
    """An iterative estimator stopped before meeting its tolerance.

    ``partial`` holds the result so far (per-input values, brackets, residuals and the
    ``converged`` flags), so no work is lost.
    """

    def __init__(self, message: str, partial=None):
        super().__init__(message)
        self.partial = partial


class TrainingModeWarning(UserWarning):
    """The wrapped module is in training mode (dropout / batch statistics active)."""


class NotConvergedWarning(RuntimeWarning):
    """Some inputs did not converge; their results are flagged, not dropped."""


class BlackBoxFallbackWarning(UserWarning):
    """A plain function that runs a torch/TensorFlow/JAX model is audited as a black box (finite
    differences, many more calls than autodiff): wrap the framework model itself instead."""


class InvalidModelOutputError(FimauditError, ValueError):
    """A model's answer is malformed: wrong shape or length, or probabilities that are
    negative, NaN, or do not sum to 1."""


class QueryBudgetExceeded(FimauditError, RuntimeError):
    """A hard query budget would be exceeded; ``partial`` keeps what was computed."""

    def __init__(self, message: str, partial=None):
        super().__init__(message)
        self.partial = partial


class NoiseDominatesWarning(RuntimeWarning):
    """Finite differences are dominated by the model's output noise for some inputs.
    ``notes``: the per-batch records it summarises (:class:`fimaudit.blackbox.fd_error.NoiseNote`)."""

    def __init__(self, message: str, notes=()):
        super().__init__(message)
        self.notes = list(notes)


class PrecisionNotReachedWarning(RuntimeWarning):
    """A sequential sketch ran out of budget before its interval narrowed to ``tol`` for some
    inputs; their rows carry the precision reached (``halfwidth``) and ``tol_met`` False."""


class ServiceError(FimauditError, RuntimeError):
    """A remote model failed: an HTTP error that retrying cannot fix (4xx other than 429),
    or retries exhausted. ``status`` is the last HTTP status (None for transport errors)."""

    def __init__(self, message: str, status=None):
        super().__init__(message)
        self.status = status


class InvalidModelFileError(FimauditError, ValueError):
    """A model file cannot be used: it fails the checker, is too large, reads external
    data from outside its folder, or has inputs whose shape cannot be resolved."""


class UnsupportedOnnxOpError(FimauditError, NotImplementedError):
    """No certified Lipschitz rule for an ONNX node; names the op type and the node."""


class NonFiniteBoundError(FimauditError, ArithmeticError):
    """A bound's intermediate value (a constant, an interval, a local or cumulative
    Lipschitz constant) is NaN or infinite, or a linear-algebra routine failed on it;
    names the node and its op."""


class MemoryLimitError(FimauditError, MemoryError):
    """The tensors a model declares would need more memory than the set limit; names the
    tensor, its shape and bytes, and the ``memory_limit=`` option that raises the limit."""


class JournalError(InvalidArgumentError):
    """An audit journal cannot be used: it is corrupt, unreadable or read-only, locked by
    another run, or belongs to a different run. The message names the file and the fix."""


class WorkerLostError(FimauditError, RuntimeError):
    """An executor lost the worker running a chunk of an audit more often than the retries
    allow, or stopped taking work; the chunks that finished were kept."""
