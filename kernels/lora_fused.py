"""Fused routed multi-LoRA linear: one autograd function for ``y = W x + b + routed LoRA``.

Routing ``K`` LoRAs is rank partitioning with block activation: concatenate the adapters'
ranks into one rank space of width ``R = sum_k r_k`` and give every token a coefficient per
rank,

    M[t, j] = s_k * ( [index_t == k] + weights[t, k] + [k in shared] ),   k = owner(j)

so that, with ``A [R, d_in]`` (A rows of all adapters) and ``B [d_out, R]`` (B columns)::

    h  = x A^T            [T, R]    (one pass over x; every adapter's shrink)
    hm = h * M                      (hard routing = a mask, soft = weights, shared = constant)
    y  = W x + b ;  y += hm B^T     (one expand over all ranks, added in place)

Backward (only ``x``/``x_lora``, ``h`` [T, R] and ``M`` are saved; W is a frozen parameter)::

    dhm = dy B ;  dh = dhm * M ;  dB = dy^T hm          (one pass over dy)
    dA  = dh^T x_lora ;  dx = dy W  (+)= dh A            (in place)
    dM  = dhm * h                                        (soft weights that train)

The arithmetic of ``-1`` tokens is masked to zero rather than skipped: at r=16 it costs ~1.5 %
of the base GEMM, while gathering tokens costs memory traffic (see docs/kernels_notes.md).
``ops`` is the primitive set: :class:`TorchOps` (cuBLAS through torch, runs anywhere) or the
Triton kernels of :mod:`.lora_triton`. Results equal :func:`.lora.lora_delta_reference`
within the dtype's rounding.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["TorchOps", "torch_ops", "coefficients", "as_lists", "fused_lora_linear", "fused_lora_delta", "fused_call"]


_MM_OUT_DTYPE = [True]  # torch.mm(..., out_dtype=fp32) usable (CUDA, bf16/fp16); switched off on first failure


def _mm_f32(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` with an fp32 result (the parameters' gradient dtype) in one cuBLAS call where possible."""
    if _MM_OUT_DTYPE[0] and a.is_cuda and a.dtype in (torch.bfloat16, torch.float16):
        try:
            return torch.mm(a, b, out_dtype=torch.float32)
        except (NotImplementedError, RuntimeError, TypeError):
            _MM_OUT_DTYPE[0] = False
    return torch.mm(a, b)


class TorchOps:
    """The fused forward/backward through torch/cuBLAS (same contract as ``lora_triton.TritonOps``)."""

    name = "torch"

    def forward(self, x: Tensor, A: Tensor, B: Tensor, M: Tensor, y: Tensor | None, store_h: bool
                ) -> tuple[Tensor, Tensor | None, Tensor]:
        """``y (+)= (x A^T * M) B^T``; returns ``(y, h or None, hm)``."""
        h = F.linear(x, A)
        hm = torch.empty_like(h)
        torch.mul(h, M, out=hm)  # one kernel: product in M's precision, rounded to x's dtype
        y = hm @ B.t() if y is None else y.addmm_(hm, B.t())
        return y, (h if store_h else None), hm

    def backward(self, dy: Tensor, x: Tensor, A: Tensor, B: Tensor, M: Tensor, hm: Tensor, dx: Tensor | None,
                 need_dx: bool, need_dhm: bool) -> tuple[Tensor | None, Tensor, Tensor, Tensor | None]:
        """``(dx_lora, dA [R, D], dB [N, R], dhm or None)``; ``dx`` given: ``dh A`` added in place."""
        dhm = dy @ B
        dh = torch.empty_like(dhm)
        torch.mul(dhm, M, out=dh)
        dB = _mm_f32(dy.t(), hm)
        dA = _mm_f32(dh.t(), x)
        if dx is not None:
            dx.addmm_(dh, A)
        elif need_dx:
            dx = dh @ A
        return dx, dA, dB, (dhm.to(M.dtype) if need_dhm else None)


torch_ops = TorchOps()

# (ranks, scalings, kept adapters, shared, device, dtype) -> (owner [R], kept [K'], svec [K'], shared mask [K'])
_SPACE_CACHE: dict = {}


def _space_consts(ranks: tuple[int, ...], scalings: tuple[float, ...], keep: tuple[int, ...],
                  shared: tuple[int, ...], device: torch.device, dtype: torch.dtype):
    """Small index/scale tensors of the rank space, cached per device: no host->device copy
    (and so no stream sync) on the hot path."""
    key = (ranks, scalings, keep, shared, device, dtype)
    hit = _SPACE_CACHE.get(key)
    if hit is None:
        owner = [j for j, k in enumerate(keep) for _ in range(ranks[k])]
        hit = (torch.tensor(owner, dtype=torch.long, device=device),
               torch.tensor(keep, dtype=torch.long, device=device),
               torch.tensor([scalings[k] for k in keep], dtype=dtype, device=device),
               torch.tensor([float(k in shared) for k in keep], dtype=dtype, device=device))
        if len(_SPACE_CACHE) > 4096:
            _SPACE_CACHE.clear()
        _SPACE_CACHE[key] = hit
    return hit


def as_lists(A, B, ranks: Sequence[int]) -> tuple[list[Tensor], list[Tensor]]:
    """Per-adapter ``A_k [r_k, d_in]`` / ``B_k [d_out, r_k]`` from stacked ``[K, r_max, d_in]`` /
    ``[K, d_out, r_max]`` tensors (views) or from lists (returned as they are)."""
    if isinstance(A, Tensor):
        return [A[k, :int(r)] for k, r in enumerate(ranks)], [B[k, :, :int(r)] for k, r in enumerate(ranks)]
    return list(A), list(B)


def coefficients(ranks: Sequence[int], scalings: Sequence[float], T: int, index: Tensor | None,
                 weights: Tensor | None, shared: Sequence[int] | None, device: torch.device,
                 coef_dtype: torch.dtype = torch.float32) -> tuple[tuple[int, ...], Tensor] | None:
    """``(kept adapters, M [T or 1, R])``: the rank-space coefficients of the adapters that can
    act (rank > 0, scaling != 0, routed or shared), ``R`` = their summed ranks; None if none.
    Differentiable in ``weights``; hard-routing coefficients are cached on the index tensor
    (the same tensor serves every layer of a forward)."""
    K = len(ranks)
    ranks_t = tuple(int(r) for r in ranks)
    scal_t = tuple(float(s) for s in scalings)
    shared_t = tuple(sorted({int(k) for k in (shared or ())}))
    routed = index is not None or weights is not None
    keep = tuple(k for k in range(K) if ranks_t[k] > 0 and scal_t[k] != 0.0 and (routed or k in shared_t))
    if not keep:
        return None
    consts = _space_consts(ranks_t, scal_t, keep, shared_t, device, coef_dtype)
    owner, keep_t, svec, shared_mask = consts[:4]
    if not routed:  # shared adapters only: a constant row, built once
        if len(consts) == 4:
            consts = _SPACE_CACHE[(ranks_t, scal_t, keep, shared_t, device, coef_dtype)] = (
                *consts, (svec * shared_mask).index_select(0, owner)[None])
        return keep, consts[4]
    if weights is None:
        cache = index.__dict__.setdefault("_mmlora_coef", {})
        ckey = (ranks_t, scal_t, keep, shared_t, coef_dtype)
        M = cache.get(ckey)
        if M is None:
            c = shared_mask + (index.to(torch.long)[:, None] == keep_t[None, :]).to(coef_dtype)
            M = cache[ckey] = (c * svec).index_select(1, owner).contiguous()
        return keep, M
    c = shared_mask.expand(T, -1)
    if index is not None:
        c = c + (index.to(torch.long)[:, None] == keep_t[None, :]).to(coef_dtype)
    c = c + weights.index_select(1, keep_t).to(coef_dtype)
    return keep, (c * svec).index_select(1, owner).contiguous()


class _Meta:
    """Non-tensor arguments of the fused functions, built once per layer (or per direct call):
    the primitive set, the number ``n`` of adapters, their ranks (split sizes of dA/dB) and the
    parameters' dtype (that of their gradients)."""

    __slots__ = ("ops", "n", "ranks", "pdtype", "raw")

    def __init__(self, ops, ranks: tuple[int, ...], pdtype: torch.dtype):
        self.ops, self.n, self.ranks, self.pdtype = ops, len(ranks), tuple(ranks), pdtype
        self.raw = bool(getattr(ops, "params_any_dtype", False))

    def weights(self, ab, dt: torch.dtype) -> tuple[Tensor, Tensor]:
        """``A [R, D]``, ``B [N, R]`` in ``dt`` from the raw per-adapter ``A_k``, ``B_k`` (concatenated
        and cast; a single adapter already in ``dt`` is used as it is). Ops with
        ``params_any_dtype`` (the Triton kernels) get them uncast."""
        n = self.n
        if self.raw:  # the kernels cast tiles after loading
            return (ab[0], ab[1]) if n == 1 else (torch.cat(ab[:n]), torch.cat(ab[n:], 1))
        if n == 1:
            A, B = ab
            return (A if A.dtype == dt else A.to(dt)), (B if B.dtype == dt else B.to(dt))
        return torch.cat(ab[:n]).to(dt), torch.cat(ab[n:], 1).to(dt)

    def param_grads(self, dA: Tensor, dB: Tensor) -> tuple[Tensor, ...]:
        """Per-adapter gradients ``(dA_1..dA_n, dB_1..dB_n)`` (views) in the parameters' dtype."""
        pd = self.pdtype
        if dA.dtype != pd:
            dA = dA.to(pd)
        if dB.dtype != pd:
            dB = dB.to(pd)
        if self.n == 1:
            return dA, dB
        ranks = self.ranks
        return (*torch.split_with_sizes(dA, ranks, 0), *torch.split_with_sizes(dB, ranks, 1))


def autocast_dtype(x: Tensor) -> torch.dtype | None:
    """The autocast dtype that applies to a linear on ``x``'s device, or None."""
    dev = x.device.type
    if dev == "meta":  # shape-only runs (e.g. counting saved bytes): autocast has no meta dispatch key
        return None
    return torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else None


class _FusedLoRA(torch.autograd.Function):
    """``y = [x W^T + b] + (x_lora A^T * M) B^T`` with ``A = cat(A_k)``, ``B = cat(B_k)``
    built from the raw (e.g. fp32) adapter parameters inside the function; ``W=None``: delta."""

    @staticmethod
    def forward(ctx, x, x_lora, W, bias, M, meta, *ab):
        A, B = meta.weights(ab, x.dtype)
        xl = x if x_lora is None else x_lora
        y = None
        if W is not None:
            y = F.linear(x, W, bias)
            if y.stride(-1) != 1:
                y = y.contiguous()
        y, h, hm = meta.ops.forward(xl, A, B, M, y, store_h=M.requires_grad)
        ctx.meta = meta
        ctx.has_xl = x_lora is not None
        need_x = x_lora is None or (W is not None and W.requires_grad)
        ctx.save_for_backward(x if need_x else None, x_lora, W, A, B, M, h, hm)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, x_lora, W, A, B, M, h, hm = ctx.saved_tensors
        need = ctx.needs_input_grad  # x, x_lora, W, bias, M, meta, *params
        has_xl = ctx.has_xl
        xl = x_lora if has_xl else x
        dy = dy if dy.stride(-1) == 1 else dy.contiguous()
        dx = dxl = dW = db = dM = None
        if W is not None and need[0]:
            dx = dy @ W
        fold = dx is not None and not has_xl            # dh A goes into dx in place
        want_new = (has_xl and need[1]) or (W is None and need[0])
        d_l, dA, dB, dhm = ctx.meta.ops.backward(dy, xl, A, B, M, hm, dx if fold else None,
                                                 need_dx=fold or want_new, need_dhm=need[4])
        if W is None:
            dx = d_l
        elif fold:
            dx = d_l
        elif has_xl:
            dxl = d_l
        if W is not None and need[2]:
            dW = dy.t() @ x
        db, dM = bias_and_coef_grads(dy, dhm, h, M, need[3], need[4])
        return (dx, dxl, dW, db, dM, None, *ctx.meta.param_grads(dA, dB))


def bias_and_coef_grads(dy: Tensor, dhm: Tensor | None, h: Tensor | None, M: Tensor, need_bias: bool,
                        need_coef: bool) -> tuple[Tensor | None, Tensor | None]:
    """``(d bias, d M)`` of ``y = ... + b + (h * M) B^T``: ``sum_t dy`` and ``dhm * h`` (summed over
    tokens when ``M`` is one broadcast row); None where not needed."""
    db = dy.sum(0) if need_bias else None
    dM = None
    if need_coef:
        dM = dhm * h.to(dhm.dtype)
        if M.shape[0] == 1:
            dM = dM.sum(0, keepdim=True)
    return db, dM


def fused_lora_linear(x: Tensor, weight: Tensor | None, bias: Tensor | None, A, B, ranks: Sequence[int],
                      scalings: Sequence[float], index: Tensor | None = None, weights: Tensor | None = None,
                      shared: Sequence[int] | None = None, x_lora: Tensor | None = None, ops=torch_ops) -> Tensor:
    """``F.linear(x, weight, bias) + lora_delta(x_lora or x, ...)`` as one fused function
    (``weight=None``: the delta alone). ``A``/``B`` stacked (as :func:`.lora.lora_delta`) or
    lists of per-adapter ``[r_k, d_in]`` / ``[d_out, r_k]`` tensors (e.g. fp32 parameters:
    they are cast to ``x``'s dtype inside, and their gradients come back in their own dtype)."""
    dev = x.device.type
    if torch.is_autocast_enabled(dev):  # do what autocast does for the base linear, once, outside the function
        dt = torch.get_autocast_dtype(dev)
        cast = (lambda t: None if t is None else t.to(dt))
        with torch.autocast(dev, enabled=False):
            return fused_lora_linear(cast(x), cast(weight), cast(bias), A, B, ranks, scalings, index, weights, shared,
                                     cast(x_lora), ops)
    T = x.shape[0]
    As, Bs = as_lists(A, B, ranks)
    space = coefficients(ranks, scalings, T, index, weights, shared, x.device,
                         coef_dtype=torch.promote_types(x.dtype, torch.float32))
    if space is None:
        if weight is None:
            return x.new_zeros(T, Bs[0].shape[0])
        return F.linear(x, weight, bias)
    keep, M = space
    ab = [As[k] for k in keep] + [Bs[k] for k in keep]
    meta = _Meta(ops, tuple(As[k].shape[0] for k in keep), As[keep[0]].dtype)
    return _FusedLoRA.apply(x, x_lora, weight, bias, M, meta, *ab)


def fast_apply(fn: type[torch.autograd.Function]):
    """``fn.apply`` without ``torch.autograd.Function.apply``'s Python prologue (signature binding
    checks, functorch dead-wrapper unwrapping: ~3-4 µs per call) unless a functorch transform
    (vmap, grad, ...) is active, where the full ``fn.apply`` runs. For the layers' hot path."""
    c_apply = super(torch.autograd.Function, fn).apply  # torch._C._FunctionBase.apply bound to fn
    transforms_active = torch._C._are_functorch_transforms_active

    def apply(*args):
        return fn.apply(*args) if transforms_active() else c_apply(*args)
    return apply


_fused_apply = fast_apply(_FusedLoRA)


def fused_call(x: Tensor, x_lora: Tensor | None, weight: Tensor | None, bias: Tensor | None, M: Tensor,
               meta: _Meta, params) -> Tensor:
    """The fused function with everything routing-dependent prepared by the caller (a layer
    caches ``M`` and ``meta`` per routing plan): ``params`` are the kept adapters' ``A_k`` then
    ``B_k``. No validation here: the caller built ``M``/``meta`` from these parameters."""
    dt = autocast_dtype(x)
    if dt is not None:
        with torch.autocast(x.device.type, enabled=False):
            cast = (lambda t: None if t is None else t.to(dt))
            return _fused_apply(cast(x), cast(x_lora), cast(weight), cast(bias), M, meta, *params)
    return _fused_apply(x, x_lora, weight, bias, M, meta, *params)


def fused_lora_delta(x: Tensor, A, B, ranks: Sequence[int], scalings: Sequence[float],
                     index: Tensor | None = None, weights: Tensor | None = None,
                     shared: Sequence[int] | None = None, ops=torch_ops) -> Tensor:
    """:func:`.lora.lora_delta` through the fused function (no base)."""
    return fused_lora_linear(x, None, None, A, B, ranks, scalings, index, weights, shared, ops=ops)
