"""Fused gated MLP down-projection with routed multi-LoRA, recomputing its input in backward.

A Hugging Face gated MLP (LlamaMLP, Qwen2MLP, MistralMLP, ...) computes, with ``g = gate(x)``
and ``u = up(x)`` (``[T, F]``)::

    h = act(g) * u                 [T, F]
    y = h W^T + b + (h A^T * M) B^T       (down_proj + routed LoRA, see lora_fused.py)

Autograd of the plain code keeps ``g`` (for act'), ``act(g)`` and ``u`` (for the product) and,
because LoRA's ``dA = dh^T h`` needs the input of ``down``, also ``h``: four ``[T, F]`` tensors
per layer where the frozen base keeps three. :class:`_FusedGatedMLP` keeps only ``g`` and
``u`` and recomputes the rest in backward (two elementwise passes)::

    a  = act(g) ;  h = a * u                          (recomputed)
    dh = dy W  (+)=  (dy B * M) A                     (ops.backward, in place)
    dA = (dy B * M)^T h ;  dB = dy^T hm               (ops.backward)
    du = dh * a ;  dg = act'(g) * (dh * u)            (aten's silu/gelu backward)

``act`` is SiLU, exact GELU or tanh-GELU (:data:`ACTIVATIONS`); other activations are not
fused (the caller falls back to the plain code). On CUDA with Triton (``act_mul`` /
``act_mul_backward`` of :class:`.lora_triton.TritonOps`, whichever ops do the LoRA products)
``h`` is one elementwise pass (forward and recompute) and ``du, dg`` another, with ``act(g)``
never stored: fewer bytes than the plain MLP's ``act``, ``mul`` / ``mul``, ``mul``, ``act'``
passes. The LoRA arithmetic is the same ``ops`` (:class:`.lora_fused.TorchOps` or the Triton
kernels) and the same coefficients ``M`` as the fused linear. With torch's elementwise ops (CPU)
the forward equals the unfused path bit for bit and the backward within rounding; the Triton
elementwise kernels follow torch's rounding steps but not its ``exp``/``erf`` bit for bit.

:func:`patch_gated_mlps` (called by ``mmlora.lora.attach``) installs :func:`gated_mlp_forward`
on every HF gated MLP instance whose ``down_proj`` carries adapters.
"""
from __future__ import annotations

import inspect
import re

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .lora_fused import _Meta, autocast_dtype, bias_and_coef_grads, fast_apply

__all__ = ["ACTIVATIONS", "activation_kind", "fused_gated_mlp", "is_gated_mlp", "gated_mlp_forward", "patch_gated_mlps",
           "unpatch_gated_mlps"]


def _silu(g: Tensor) -> Tensor:
    return F.silu(g)


def _gelu(g: Tensor) -> Tensor:
    return F.gelu(g)


def _gelu_tanh(g: Tensor) -> Tensor:
    return F.gelu(g, approximate="tanh")


# kind -> (act(g), d act: (grad of act(g), g) -> grad of g); the backward formulas are aten's own
ACTIVATIONS = {
    "silu": (_silu, lambda d, g: torch.ops.aten.silu_backward(d, g)),
    "gelu": (_gelu, lambda d, g: torch.ops.aten.gelu_backward(d, g, approximate="none")),
    "gelu_tanh": (_gelu_tanh, lambda d, g: torch.ops.aten.gelu_backward(d, g, approximate="tanh")),
}


def activation_kind(act) -> str | None:
    """The :data:`ACTIVATIONS` key computing exactly what module/function ``act`` computes, or
    None (unknown activation: do not fuse). Knows torch's ``nn.SiLU``/``nn.GELU``/``F.silu``/
    ``F.gelu`` and transformers' ``SiLUActivation``, ``GELUActivation``, ``GELUTanh`` (C
    kernels; their pure-Python variants compute the same formula but round differently and are
    not fused)."""
    if act is F.silu or isinstance(act, torch.nn.SiLU):
        return "silu"
    if act is F.gelu:
        return "gelu"
    if isinstance(act, torch.nn.GELU):
        return "gelu_tanh" if act.approximate == "tanh" else "gelu"
    name = type(act).__name__
    if type(act).__module__.startswith("transformers."):
        if name == "SiLUActivation" and type(act).forward.__qualname__ == "SiLUActivation.forward":
            return "silu"
        inner = getattr(act, "act", None)
        if name == "GELUActivation" and inner is F.gelu:
            return "gelu"
        if name == "GELUTanh" and getattr(inner, "func", None) is F.gelu and \
                getattr(inner, "keywords", None) == {"approximate": "tanh"} and not getattr(inner, "args", ()):
            return "gelu_tanh"
    return None


_TRITON_EW: list = []  # [TritonOps or None], imported on first CUDA use


def _elementwise_ops(ops, x: Tensor):
    """The ops that run the elementwise passes: ``ops`` itself if it has them (Triton), else the
    Triton kernels on CUDA when Triton imports (TorchOps keeps cuBLAS for the LoRA products but
    need not pay torch's 5 elementwise passes), else None (torch ops)."""
    if hasattr(ops, "act_mul"):
        return ops
    if not x.is_cuda:
        return None
    if not _TRITON_EW:
        try:
            from .lora_triton import triton_ops
        except Exception:  # noqa: BLE001 - no (working) Triton: torch's elementwise ops
            triton_ops = None
        _TRITON_EW.append(triton_ops)
    return _TRITON_EW[0]


def _act_mul(ops, g: Tensor, u: Tensor, act: str, keep_a: bool) -> tuple[Tensor, Tensor | None]:
    """``(h = act(g) * u, act(g) or None)``: one Triton pass where available (then ``act(g)``
    is never materialised, see :func:`_elementwise_ops`), else torch's two ops (``act(g)`` kept
    if asked)."""
    ew = _elementwise_ops(ops, g)
    if ew is not None and g.is_contiguous() and u.is_contiguous() and g.dtype == u.dtype:
        return ew.act_mul(g, u, act), None
    a = ACTIVATIONS[act][0](g)
    if keep_a:
        return a * u, a
    return a.mul_(u), None  # same ops and rounding as act_fn(g) * u


def _act_mul_backward(ops, dh: Tensor, g: Tensor, u: Tensor, a: Tensor | None, act: str, need_g: bool,
                      need_u: bool) -> tuple[Tensor | None, Tensor | None]:
    """``(dg, du)`` of ``h = act(g) * u``; ``dh`` may be overwritten. ``a`` = ``act(g)`` if the
    forward kept it (torch path), None after the one-pass Triton forward."""
    if a is None:
        ew = _elementwise_ops(ops, g)
        if ew is not None and dh.is_contiguous():
            return ew.act_mul_backward(dh, g, u, act, need_g, need_u)
        a = ACTIVATIONS[act][0](g)
    du = dh * a if need_u else None
    dg = ACTIVATIONS[act][1](dh.mul_(u), g) if need_g else None
    return dg, du


class _FusedGatedMLP(torch.autograd.Function):
    """``y = (act(g) * u) W^T + b + routed LoRA(act(g) * u)``; saves ``g``, ``u`` (not ``h``)."""

    @staticmethod
    def forward(ctx, g, u, W, bias, M, meta, act, *ab):
        h = _act_mul(meta.ops, g, u, act, keep_a=False)[0]
        A, B = meta.weights(ab, g.dtype)
        y = F.linear(h, W, bias)
        if y.stride(-1) != 1:
            y = y.contiguous()
        y, hl, hm = meta.ops.forward(h, A, B, M, y, store_h=M.requires_grad)
        ctx.meta, ctx.act = meta, act
        ctx.save_for_backward(g, u, W, A, B, M, hl, hm)
        return y

    @staticmethod
    def backward(ctx, dy):
        g, u, W, A, B, M, hl, hm = ctx.saved_tensors
        need = ctx.needs_input_grad  # g, u, W, bias, M, meta, act, *params
        ops = ctx.meta.ops
        dy = dy if dy.stride(-1) == 1 else dy.contiguous()
        h, a = _act_mul(ops, g, u, ctx.act, keep_a=True)
        dh = dy @ W
        dh, dA, dB, dhm = ops.backward(dy, h, A, B, M, hm, dh, need_dx=True, need_dhm=need[4])
        dW = None
        if need[2]:  # only when the base weight trains (not the fused path's use)
            dW = dy.t() @ h
        del h
        dg, du = _act_mul_backward(ops, dh, g, u, a, ctx.act, need[0], need[1])
        db, dM = bias_and_coef_grads(dy, dhm, hl, M, need[3], need[4])
        return (dg, du, dW, db, dM, None, None, *ctx.meta.param_grads(dA, dB))


_mlp_apply = fast_apply(_FusedGatedMLP)


def fused_gated_mlp(g: Tensor, u: Tensor, W: Tensor, bias: Tensor | None, M: Tensor, meta: _Meta, act: str,
                    params) -> Tensor:
    """``down(act(g) * u)`` with down's routed LoRA: ``g``, ``u`` ``[T, F]``, ``W`` ``[N, F]``,
    ``M`` ``[T or 1, R]`` (:func:`.lora_fused.coefficients`), ``params`` the kept adapters'
    ``A_k`` then ``B_k`` (raw parameters), ``meta`` their :class:`.lora_fused._Meta`. Under
    autocast everything is cast to the autocast dtype first (as the plain code's linear would)."""
    dt = autocast_dtype(g)
    if dt is not None:
        with torch.autocast(g.device.type, enabled=False):
            cast = (lambda t: None if t is None else t.to(dt))
            return _mlp_apply(cast(g), cast(u), cast(W), cast(bias), M, meta, act, *params)
    if u.dtype != g.dtype:
        raise TypeError(f"gate and up outputs differ in dtype: {g.dtype} vs {u.dtype}")
    return _mlp_apply(g, u, W, bias, M, meta, act, *params)


# ----------------------------------------------------------------- patching HF gated MLPs
_GATED_EXPR = "self.down_proj(self.act_fn(self.gate_proj(x))*self.up_proj(x))"
_GATED_CLASSES: dict[type, bool] = {}


def is_gated_mlp(module: nn.Module) -> bool:
    """A Hugging Face gated MLP whose forward is exactly ``down(act(gate(x)) * up(x))`` (LlamaMLP,
    Qwen2MLP, MistralMLP, ...; checked on the class's source once), with a down_proj that carries
    adapters and an activation :func:`~mmlora.kernels.lora_mlp.activation_kind` implements."""
    if not callable(getattr(getattr(module, "down_proj", None), "_mlp_call", None)):  # a MultiLoRALinear
        return False
    if not all(isinstance(getattr(module, n, None), nn.Module) for n in ("gate_proj", "up_proj")):
        return False
    cls = type(module)
    ok = _GATED_CLASSES.get(cls)
    if ok is None:
        try:
            src = inspect.getsource(cls.forward)
        except (OSError, TypeError):
            src = ""
        sig = list(inspect.signature(cls.forward).parameters)
        ok = _GATED_CLASSES[cls] = sig == ["self", "x"] and _GATED_EXPR in re.sub(r"\s+", "", src)
    return ok and activation_kind(getattr(module, "act_fn", None)) is not None


def gated_mlp_forward(self: nn.Module, x: Tensor) -> Tensor:
    """Instance forward of a patched gated MLP: ``down(act(gate(x)) * up(x))`` where down's
    routed LoRA and the product run as one function that keeps ``gate(x)`` and ``up(x)`` for
    backward but not the product (recomputed: :func:`fused_gated_mlp`). Anything the fused
    function does not cover runs the original expression.

    ``down_proj._mlp_call(g)`` (``mmlora.lora.MultiLoRALinear``) returns None (not fusable now)
    or its prepared call: ``coefficients()``, ``meta``, ``params()`` as for the fused linear."""
    mods = self._modules  # (dict reads: nn.Module.__getattr__ is slow)
    g = mods["gate_proj"](x)
    u = mods["up_proj"](x)
    down = mods["down_proj"]
    act = self.act_fn
    c = down._mlp_call(g) if hasattr(down, "_mlp_call") else None
    if c is not None:
        cached = self.__dict__.get("_mmlora_act")
        if cached is None or cached[0] is not act:
            cached = self.__dict__["_mmlora_act"] = (act, activation_kind(act))
        if cached[1] is not None and g.shape == u.shape:
            bp = down._modules["base_layer"]._parameters
            y = fused_gated_mlp(g.reshape(-1, g.shape[-1]), u.reshape(-1, u.shape[-1]), bp["weight"], bp.get("bias"),
                                c.coefficients(), c.meta, cached[1], c.params())
            return y.view(*g.shape[:-1], y.shape[-1])
    return down(act(g) * u)


class FusedMLPForward:
    """The instance ``forward`` installed on a gated MLP: calls :func:`gated_mlp_forward`. An
    object rather than a bound method so that the model still pickles and deep-copies."""

    __slots__ = ("module",)

    def __init__(self, module: nn.Module):
        self.module = module

    def __call__(self, x: Tensor) -> Tensor:
        return gated_mlp_forward(self.module, x)


def patch_gated_mlps(model: nn.Module) -> int:
    """Give every gated MLP of ``model`` (see :func:`is_gated_mlp`) the fused forward; returns
    how many are patched. Used whenever a fused backend applies at call time (the patched
    forward runs the original expression on the reference backend). Undone by
    :func:`unpatch_gated_mlps` (``mmlora.lora.detach``)."""
    n = 0
    for module in model.modules():
        if module.__dict__.get("_mmlora_fused_mlp"):
            n += 1
            continue
        if "forward" in module.__dict__ or not is_gated_mlp(module):  # e.g. accelerate hooks: leave alone
            continue
        module.__dict__["forward"] = FusedMLPForward(module)
        module._mmlora_fused_mlp = True
        n += 1
    return n


def unpatch_gated_mlps(model: nn.Module) -> None:
    for module in model.modules():
        if module.__dict__.pop("_mmlora_fused_mlp", False):
            if isinstance(module.__dict__.get("forward"), FusedMLPForward):
                del module.__dict__["forward"]
            module.__dict__.pop("_mmlora_act", None)
