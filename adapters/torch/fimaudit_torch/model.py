"""A ``torch.nn.Module`` as a fimaudit :class:`~fimaudit.Model`.

Products come from ``torch.func``: ``jvp`` (forward mode), ``vjp`` (reverse mode), and
``vmap`` over a k axis of vectors so that C vjps for a whole batch are one batched
backward. Two measured gaps are bridged:

* forward-mode AD missing for an op (e.g. the fused ``_native_multi_head_attention``):
  ``J v`` is computed by double backward, ``J v = ∂/∂u ⟨Jᵀu, v⟩`` (the vjp is linear
  in u, so its own vjp with cotangent v is J v);
* double backward missing (efficient/flash SDPA kernels): products run under the math
  SDPA kernel.

The user's module is never mutated: parameters and buffers are passed to
``torch.func.functional_call`` (buffers cloned when the module is in training mode).
"""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import torch
from torch.func import functional_call, vmap
from torch.func import jvp as _jvp
from torch.func import vjp as _vjp

from fimaudit.errors import InvalidArgumentError, NondeterministicModelError, TrainingModeWarning
from fimaudit.models import Linearization, Model

_FORWARD_AD_MISSING = ("forward ad", "forward-mode", "forward mode", "jvp", "dual")
_DOUBLE_BACKWARD_MISSING = ("double backward", "derivative for", "not implemented", "is not differentiable twice")


def _matches(err, needles):
    msg = str(err).lower()
    return any(s in msg for s in needles)


class TorchModel(Model):
    """Wrap ``module`` (not modified). Options: ``input_shape``, ``num_outputs``,
    ``output``, ``likelihood``, ``sigma``, ``dtype`` and ``device`` (to compute on a copy
    of the parameters in another dtype/device), ``chunk_size`` (vmap chunking to cap
    memory), ``vectorize`` ("auto", "vmap" or "loop": how a k axis of vectors is run),
    ``allow_tf32`` (default False: products run in full float32 — TF32 convolutions and
    matmuls change λ_max by about 1% on a GPU), ``check_determinism`` (repeat the first
    forward pass; default True)."""

    def __init__(
        self,
        module,
        *,
        dtype=None,
        device=None,
        chunk_size=None,
        vectorize="auto",
        allow_tf32=False,
        check_determinism=True,
        **options,
    ):
        if not isinstance(module, torch.nn.Module):
            raise InvalidArgumentError(f"TorchModel needs a torch.nn.Module, got {type(module).__name__}")
        super().__init__(**options)
        self.module = module
        self.training = module.training
        if self.training:
            warnings.warn(
                f"{type(module).__name__} is in training mode: dropout and batch statistics make F depend on "
                "the batch; call module.eval() before auditing",
                TrainingModeWarning,
                stacklevel=3,
            )
        params = {k: v.detach() for k, v in module.named_parameters()}
        buffers = {k: v.detach() for k, v in module.named_buffers()}
        if dtype is not None or device is not None:
            params = {k: v.to(device=device, dtype=dtype if v.is_floating_point() else None) for k, v in params.items()}
            buffers = {
                k: v.to(device=device, dtype=dtype if v.is_floating_point() else None) for k, v in buffers.items()
            }
        self._params, self._buffers = params, buffers
        ref = next(iter(params.values()), None)
        self.dtype = dtype or (ref.dtype if ref is not None else torch.get_default_dtype())
        self.device = torch.device(device) if device is not None else (ref.device if ref is not None else None)
        if vectorize not in ("auto", "vmap", "loop"):
            raise InvalidArgumentError(f"vectorize must be 'auto', 'vmap' or 'loop', got {vectorize!r}")
        self.chunk_size = chunk_size
        self.vectorize = vectorize
        self.allow_tf32 = bool(allow_tf32)
        self._check = bool(check_determinism)
        self.jvp_mode = "forward"  # or "double_backward"
        self.math_sdpa = False
        self.generation = 0  # bumped on each fallback switch: saved graphs must be rebuilt

    # --- conversion at the boundary ------------------------------------------------
    def _in(self, a):
        """(torch tensor on the model's device/dtype, function that converts results back)."""
        if isinstance(a, torch.Tensor):
            t = a.to(device=self.device or a.device, dtype=self.dtype)
            return t, (lambda r, dev=a.device: r.to(dev))
        arr = np.asarray(a)
        t = torch.from_numpy(np.ascontiguousarray(arr)).to(device=self.device or "cpu", dtype=self.dtype)
        return t, (lambda r: r.detach().cpu().numpy())

    def _call(self, x):
        buffers = self._buffers
        if self.training:  # batch-norm running statistics must not touch the user's buffers
            buffers = {k: v.clone() for k, v in buffers.items()}
        return functional_call(self.module, (self._params, buffers), (x,))

    @contextlib.contextmanager
    def _ctx(self):
        """Math SDPA kernel when needed; full-precision float32 (no TF32) unless allowed."""
        saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        if not self.allow_tf32:
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        try:
            if self.math_sdpa:
                from torch.nn.attention import SDPBackend, sdpa_kernel

                with sdpa_kernel(SDPBackend.MATH):
                    yield
            else:
                yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved

    def _retrying(self, fn):
        """Run fn, switching to double-backward JVPs / the math SDPA kernel when needed."""
        for _ in range(3):
            try:
                with self._ctx():
                    return fn()
            except (NotImplementedError, RuntimeError) as err:
                if self.jvp_mode == "forward" and _matches(err, _FORWARD_AD_MISSING):
                    self.jvp_mode = "double_backward"
                elif not self.math_sdpa and _matches(err, _DOUBLE_BACKWARD_MISSING):
                    self.math_sdpa = True
                else:
                    raise
                self.generation += 1
        with self._ctx():
            return fn()

    # --- the contract ----------------------------------------------------------------
    def forward(self, x):
        t, back = self._in(x)
        with torch.no_grad(), self._ctx():
            out = self._logits(t)
        return back(out)

    def _logits(self, t):
        return self._checked(self._call(t), t)

    def _checked(self, out, t):
        """Validate the module's output; the first time, repeat the pass to catch randomness."""
        if isinstance(out, (tuple, list)) or out.ndim != 2:
            raise InvalidArgumentError(
                f"{type(self.module).__name__} returned {type(out).__name__} "
                f"{tuple(getattr(out, 'shape', ()))}; fimaudit needs one (n, C) tensor of outputs "
                "per batch: wrap the module so that forward returns it"
            )
        if self._check or self.training:
            with torch.no_grad():
                again = self._call(t)
            # kernels may differ between a graph-recording and a no-grad pass (fused attention):
            # allow √eps relative; dropout changes outputs by far more
            tol = torch.finfo(again.dtype).eps ** 0.5 * max(float(again.abs().max()), 1e-30)
            if float((out.detach() - again).abs().max()) > tol:
                raise NondeterministicModelError(
                    f"two forward passes of {type(self.module).__name__} on the same batch differ "
                    f"(max diff {float((out.detach() - again).abs().max()):.3g}): dropout or another random "
                    "layer is active; call module.eval()"
                )
            self._check = False
        return out

    def to_onnx(self, example=None):
        """The module as an ``onnx.ModelProto`` with a dynamic batch axis: the dynamo exporter
        (``external_data=False``), falling back to the legacy one; the graph is checked
        against the module on random inputs (rtol 1e-4) before it is returned."""
        import io
        import logging

        import onnx

        from fimaudit.errors import InvalidModelFileError

        if example is None:
            if self.input_shape is None:
                raise InvalidArgumentError("to_onnx needs input_shape= (or an example batch)")
            example = torch.rand(2, *self.input_shape, dtype=self.dtype, device=self.device)
        module = self.module
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                prog = torch.onnx.export(
                    module,
                    (example,),
                    dynamo=True,
                    external_data=False,
                    verbose=False,
                    dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
                )
            proto = prog.model_proto
        except Exception:
            buf = io.BytesIO()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    module,
                    (example,),
                    buf,
                    dynamo=False,
                    input_names=["x"],
                    output_names=["logits"],
                    dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
                )
            proto = onnx.load_from_string(buf.getvalue())
        import onnxruntime as ort

        sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        probe = torch.rand(3, *example.shape[1:], dtype=torch.float32)
        got = sess.run(None, {sess.get_inputs()[0].name: probe.numpy()})[0]
        want = self.forward(probe.to(dtype=self.dtype, device=self.device)).float().cpu().numpy()
        if not np.allclose(got, want, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(want).max()))):
            raise InvalidModelFileError(
                f"the exported ONNX graph differs from the module by {float(np.abs(got - want).max()):.3g}; "
                "it cannot stand in for the module"
            )
        return proto

    def jvp(self, x, v):
        return self.linearize(x).jvp(v)

    def vjp(self, x, u):
        return self.linearize(x).vjp(u)

    def jvp_many(self, x, V):
        return self.linearize(x).jvp_many(V)

    def vjp_many(self, x, U):
        return self.linearize(x).vjp_many(U)

    def linearize(self, x):
        return TorchLinearization(self, x)


class TorchLinearization(Linearization):
    """Products at a fixed batch: the reverse-mode graph is built once and reused."""

    def __init__(self, model: TorchModel, x):
        self.model = model
        self.x_in = x
        self.t, self._back = model._in(x)
        self._vjp_fn = None
        self._generation = None
        out = model._retrying(self._build)  # one forward pass, kept for every vjp
        self.logits = self._back(model._checked(out, self.t).detach())

    def _f(self, t):
        return self.model._call(t)

    def _build(self):
        self._generation = self.model.generation
        with self.model._ctx():
            out, self._vjp_fn = _vjp(self._f, self.t)
        return out

    def _pullback(self):
        if self._vjp_fn is None or self._generation != self.model.generation:
            self._build()
        return self._vjp_fn

    def _jvp_t(self, v):
        m = self.model
        if m.jvp_mode == "forward":
            return _jvp(self._f, (self.t,), (v,))[1]
        pull = self._pullback()
        u0 = torch.zeros(self.t.shape[0], *self.logits.shape[1:], dtype=m.dtype, device=self.t.device)
        return _vjp(lambda u: pull(u)[0], u0)[1](v)[0]

    def _many(self, fn, A, needs_pullback):
        """fn over axis 1 of A: a plain loop for up to 32 vectors (where vmap's set-up costs
        more than it saves), chunked vmap beyond, and a loop
        whenever the model cannot be vmapped."""
        m = self.model
        if needs_pullback or m.jvp_mode != "forward":
            self._pullback()  # build the reverse graph outside vmap
        k = A.shape[1]
        on_cpu = A.device.type == "cpu"
        if m.vectorize == "loop" or (m.vectorize == "auto" and k <= 32):
            return torch.stack([fn(A[:, i]) for i in range(k)], dim=1)
        chunk = m.chunk_size if m.chunk_size is not None else (32 if on_cpu else None)
        try:
            return vmap(fn, in_dims=1, out_dims=1, chunk_size=chunk)(A)
        except (NotImplementedError, RuntimeError) as err:
            if _matches(err, _FORWARD_AD_MISSING + _DOUBLE_BACKWARD_MISSING) and not _matches(err, ("vmap",)):
                raise
            return torch.stack([fn(A[:, i]) for i in range(k)], dim=1)

    def jvp(self, v):
        vt, _ = self.model._in(v)
        return self._back(self.model._retrying(lambda: self._jvp_t(vt)).detach())

    def vjp(self, u):
        ut, _ = self.model._in(u)
        return self._back(self.model._retrying(lambda: self._pullback()(ut)[0]).detach())

    def jvp_many(self, V):
        Vt, _ = self.model._in(V)
        return self._back(self.model._retrying(lambda: self._many(self._jvp_t, Vt, False)).detach())

    def vjp_many(self, U):
        Ut, _ = self.model._in(U)
        return self._back(self.model._retrying(lambda: self._many(lambda u: self._pullback()(u)[0], Ut, True)).detach())
