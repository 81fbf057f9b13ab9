"""The files an audit reads and writes, checked before any work: inputs and labels from
``.npy`` files, the output folder, the journal's folder, the model's path.

Arrays are read with ``allow_pickle=False`` always; inputs must be one floating-point
array with at least one row; labels one integer class index (≥ 0) per input — integers,
booleans, or floats that are whole numbers (7.0 is 7; 7.7 is refused, never truncated).
Every failure is an :class:`~fimaudit.errors.InvalidArgumentError` naming the file.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np

from ..errors import InvalidArgumentError

__all__ = ["load_inputs", "load_labels", "writable_folder", "check_journal", "check_model_source"]

_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"


def _load_npy(path, what):
    try:
        with open(path, "rb") as f:
            magic = f.read(len(_NPY_MAGIC))
    except OSError as err:
        raise InvalidArgumentError(f"cannot read the {what} file {path!r}: {err.strerror or err}") from None
    if magic.startswith(_ZIP_MAGIC):
        raise InvalidArgumentError(
            f"the {what} file {path!r} is an .npz archive; save one array with numpy.save(path, array)"
        )
    if magic != _NPY_MAGIC:
        raise InvalidArgumentError(
            f"the {what} file {path!r} is not a .npy file; save the array with numpy.save(path, array)"
        )
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as err:
        if "allow_pickle" in str(err):
            raise InvalidArgumentError(
                f"the {what} file {path!r} holds Python objects, which fimaudit never unpickles: "
                "save a numeric array (e.g. numpy.save(path, array.astype('float32')))"
            ) from None
        raise InvalidArgumentError(f"the {what} file {path!r} is damaged or truncated ({err}); save it again") from None
    except (OSError, EOFError, SyntaxError, TypeError) as err:
        raise InvalidArgumentError(f"the {what} file {path!r} is damaged or truncated ({err}); save it again") from None


def load_inputs(path):
    """The inputs X (n, *input_shape) from a .npy of floats with n ≥ 1."""
    X = _load_npy(path, "data")
    if not np.issubdtype(X.dtype, np.floating):
        raise InvalidArgumentError(
            f"the data file {path!r} holds {X.dtype} values; audits need floating-point inputs: "
            "save X.astype('float32') (scaled as the model expects)"
        )
    if X.ndim < 1 or X.shape[0] < 1:
        raise InvalidArgumentError(f"the data file {path!r} has shape {X.shape}: it needs at least one input (row)")
    return X


def load_labels(path, n):
    """n integer class indices from a .npy (ints, booleans, or floats that are whole numbers)."""
    y = _load_npy(path, "labels")
    if y.shape != (n,):
        raise InvalidArgumentError(f"the labels file {path!r} has shape {y.shape}; expected ({n},), one per input")
    if np.issubdtype(y.dtype, np.bool_):
        y = y.astype(np.int64)
    elif np.issubdtype(y.dtype, np.floating):
        bad = np.flatnonzero(~np.isfinite(y) | (y != np.round(y)))
        if bad.size:
            raise InvalidArgumentError(
                f"the labels file {path!r} has {float(y[bad[0]])!r} at row {bad[0]} ({bad.size} such rows): labels are "
                "class indices, whole numbers; save integers (fimaudit does not round or truncate them)"
            )
        y = y.astype(np.int64)
    elif not np.issubdtype(y.dtype, np.integer):
        raise InvalidArgumentError(
            f"the labels file {path!r} holds {y.dtype} values; labels are integer class indices: map them to "
            "0..C-1 in the model's output order and save integers"
        )
    if y.size and y.min() < 0:
        raise InvalidArgumentError(
            f"the labels file {path!r} has a negative label {int(y.min())}: labels are class indices 0..C-1"
        )
    return y


def _unwritable(folder):
    """Why a file cannot be created in ``folder`` (None when it can)."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        return err.strerror or err
    return None


def writable_folder(out):
    """Create the folder ``out`` if needed and check that a file can be written in it."""
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as err:
        why = err.strerror or err
    else:
        why = _unwritable(out)
    if why is not None:
        raise InvalidArgumentError(f"cannot write into the output folder {out!r}: {why}; pick another --out")


def check_journal(path):
    """The journal's folder must exist and take a file; the journal itself is checked on opening."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise InvalidArgumentError(f"the journal {path!r} is a folder; pass a file name, e.g. {path}/audit.sqlite")
    if not os.path.isdir(folder):
        raise InvalidArgumentError(f"the journal's folder {folder!r} does not exist; create it or pick another path")
    why = _unwritable(folder)
    if why is not None:
        raise InvalidArgumentError(f"cannot write the journal {path!r} into {folder!r}: {why}; pick another path")


def check_model_source(model):
    """A model path (not a URL) must be a readable file."""
    if "://" in model:
        return
    try:
        with open(model, "rb"):
            pass
    except IsADirectoryError:
        raise InvalidArgumentError(f"the model {model!r} is a folder; pass the .onnx file in it") from None
    except OSError as err:
        raise InvalidArgumentError(f"cannot read the model file {model!r}: {err.strerror or err}") from None
