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

__all__ = ["TorchOps", "torch_ops", "rank_space", "fused_lora_linear", "fused_lora_delta"]


class TorchOps:
    """The fused op set through torch/cuBLAS (contract documented in :mod:`.lora_triton`)."""

    name = "torch"

    def shrink(self, x: Tensor, A: Tensor, M: Tensor) -> tuple[Tensor, Tensor]:
        h = x @ A.t()
        return h, (h.to(M.dtype) * M).to(x.dtype)

    def expand_(self, y: Tensor, a: Tensor, b: Tensor) -> Tensor:
        return y.addmm_(a, b.t())

    def expand(self, a: Tensor, b: Tensor) -> Tensor:
        return a @ b.t()

    def dx_(self, dx: Tensor, dh: Tensor, A: Tensor) -> Tensor:
        return dx.addmm_(dh, A)

    def dx(self, dh: Tensor, A: Tensor) -> Tensor:
        return dh @ A

    def bwd_dy(self, dy: Tensor, B: Tensor, hm: Tensor, M: Tensor, need_dhm: bool
               ) -> tuple[Tensor, Tensor, Tensor | None]:
        dhm = (dy @ B).to(M.dtype)
        dB = dy.t() @ hm
        return (dhm * M).to(dy.dtype), dB, (dhm if need_dhm else None)

    def grad_a(self, dh: Tensor, x: Tensor) -> Tensor:
        return dh.t() @ x


torch_ops = TorchOps()

# (ranks, scalings, kept adapters, shared, device) -> (owner [R], kept [K'], svec [K'], shared mask [K'])
_SPACE_CACHE: dict = {}


def _space_consts(ranks: tuple[int, ...], scalings: tuple[float, ...], keep: tuple[int, ...],
                  shared: tuple[int, ...], device: torch.device, dtype: torch.dtype):
    """Small index/scale tensors of the rank space, cached per device: no host->device copy
    (and so no stream sync) on the hot path."""
    key = (ranks, scalings, keep, shared, device, dtype)
    hit = _SPACE_CACHE.get(key)
    if hit is None:
        owner = [j for j, k in enumerate(keep) for _ in range(ranks[k])]
        rows = [k * max(ranks) + i for k in keep for i in range(ranks[k])]
        hit = (torch.tensor(owner, dtype=torch.long, device=device),
               torch.tensor(keep, dtype=torch.long, device=device),
               torch.tensor([scalings[k] for k in keep], dtype=dtype, device=device),
               torch.tensor([float(k in shared) for k in keep], dtype=dtype, device=device),
               torch.tensor(rows, dtype=torch.long, device=device))
        if len(_SPACE_CACHE) > 4096:
            _SPACE_CACHE.clear()
        _SPACE_CACHE[key] = hit
    return hit


def rank_space(A: Tensor, B: Tensor, ranks: Sequence[int], scalings: Sequence[float], T: int,
               index: Tensor | None, weights: Tensor | None, shared: Sequence[int] | None,
               coef_dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor, Tensor] | None:
    """``(A_cat [R, d_in], B_cat [d_out, R], M [T or 1, R])`` or None if no adapter acts;
    ``M`` is in ``coef_dtype`` (fp32, or fp64 for fp64 inputs).

    Differentiable in ``A``, ``B`` and ``weights`` (plain torch ops)."""
    K, r_max, d_in = A.shape
    ranks_t = tuple(int(r) for r in ranks)
    scal_t = tuple(float(s) for s in scalings)
    shared_t = tuple(sorted({int(k) for k in (shared or ())}))
    routed = index is not None or weights is not None
    keep = tuple(k for k in range(K) if ranks_t[k] > 0 and scal_t[k] != 0.0 and (routed or k in shared_t))
    if not keep:
        return None
    owner, keep_t, svec, shared_mask, rows = _space_consts(ranks_t, scal_t, keep, shared_t, A.device, coef_dtype)
    if keep == tuple(range(K)) and all(ranks_t[k] == r_max for k in keep):
        A_cat = A.reshape(K * r_max, d_in)
        B_cat = B[0] if K == 1 else B.permute(1, 0, 2).reshape(B.shape[1], K * r_max)
    else:
        A_cat = A.reshape(K * r_max, d_in).index_select(0, rows)
        B_cat = B.permute(1, 0, 2).reshape(B.shape[1], K * r_max).index_select(1, rows)
    if not routed:
        M = (svec * shared_mask).index_select(0, owner)[None]
    elif weights is None:  # hard routing: the same index tensor serves every layer of a forward
        cache = index.__dict__.setdefault("_mmlora_coef", {})
        ckey = (ranks_t, scal_t, keep, shared_t, coef_dtype)
        M = cache.get(ckey)
        if M is None:
            c = shared_mask + (index.to(torch.long)[:, None] == keep_t[None, :]).to(coef_dtype)
            M = cache[ckey] = (c * svec).index_select(1, owner).contiguous()
    else:
        c = shared_mask.expand(T, -1)
        if index is not None:
            c = c + (index.to(torch.long)[:, None] == keep_t[None, :]).to(coef_dtype)
        if weights is not None:
            c = c + weights.index_select(1, keep_t).to(coef_dtype)
        M = (c * svec).index_select(1, owner)
    return A_cat, B_cat.contiguous() if B_cat.stride(-1) != 1 else B_cat, M.contiguous()


class _FusedLoRA(torch.autograd.Function):
    """``y = [W x + b] + (x_lora A^T * M) B^T``; W None means delta only."""

    @staticmethod
    def forward(ctx, x, x_lora, W, bias, A, B, M, ops):
        xl = x if x_lora is None else x_lora
        h, hm = ops.shrink(xl, A, M)
        if W is None:
            y = ops.expand(hm, B)
        else:
            y = F.linear(x, W, bias)
            if y.stride(-1) != 1:
                y = y.contiguous()
            ops.expand_(y, hm, B)
        ctx.ops = ops
        ctx.has_xl = x_lora is not None
        need_x = x_lora is None or (W is not None and W.requires_grad)
        ctx.save_for_backward(x if need_x else None, x_lora, W, A, B, M, h if M.requires_grad else None, hm)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, x_lora, W, A, B, M, h, hm = ctx.saved_tensors
        ops = ctx.ops
        need = ctx.needs_input_grad
        xl = x_lora if ctx.has_xl else x
        dy = dy if dy.stride(-1) == 1 else dy.contiguous()
        dh, dB, dhm = ops.bwd_dy(dy, B, hm, M, need_dhm=need[6])
        dA = ops.grad_a(dh, xl) if need[4] else None
        dx = dxl = dW = db = dM = None
        if W is None:
            if need[0]:
                dx = ops.dx(dh, A)
        else:
            if need[0]:
                dx = dy @ W
                if not ctx.has_xl:
                    ops.dx_(dx, dh, A)
            if need[2]:
                dW = dy.t() @ x
            if need[3]:
                db = dy.sum(0)
        if ctx.has_xl and need[1]:
            dxl = ops.dx(dh, A)
        if need[6]:
            dM = dhm * h.to(dhm.dtype)
            if M.shape[0] == 1:
                dM = dM.sum(0, keepdim=True)
        return dx, dxl, dW, db, dA, (dB if need[5] else None), dM, None


def fused_lora_linear(x: Tensor, weight: Tensor | None, bias: Tensor | None, A: Tensor, B: Tensor,
                      ranks: Sequence[int], scalings: Sequence[float], index: Tensor | None = None,
                      weights: Tensor | None = None, shared: Sequence[int] | None = None,
                      x_lora: Tensor | None = None, ops=torch_ops) -> Tensor:
    """``F.linear(x, weight, bias) + lora_delta(x_lora or x, ...)`` as one fused function
    (``weight=None``: the delta alone). Shapes as :func:`.lora.lora_delta`, ``x`` 2-D."""
    T = x.shape[0]
    space = rank_space(A, B, ranks, scalings, T, index, weights, shared,
                       coef_dtype=torch.promote_types(x.dtype, torch.float32))
    if space is None:
        if weight is None:
            return x.new_zeros(T, B.shape[1])
        return F.linear(x, weight, bias)
    A_cat, B_cat, M = space
    return _FusedLoRA.apply(x, x_lora, weight, bias, A_cat.to(x.dtype), B_cat.to(x.dtype), M, ops)


def fused_lora_delta(x: Tensor, A: Tensor, B: Tensor, ranks: Sequence[int], scalings: Sequence[float],
                     index: Tensor | None = None, weights: Tensor | None = None,
                     shared: Sequence[int] | None = None, ops=torch_ops) -> Tensor:
    """:func:`.lora.lora_delta` through the fused function (no base)."""
    return fused_lora_linear(x, None, None, A, B, ranks, scalings, index, weights, shared, ops=ops)
