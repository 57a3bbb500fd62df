"""Routed multi-LoRA delta: the one place where mmlora does LoRA arithmetic.

For K adapters stacked along the first axis, a token ``x_t`` gets::

    delta_t = sum_k  w_{t,k} * s_k * B_k[:, :r_k] @ A_k[:r_k] @ x_t

    w_{t,k} = [index_t == k]  +  weights_{t,k}  +  [k in shared]

* ``index``  (hard routing): int32 ``[T]``, the adapter of each token, ``-1`` = none.
* ``weights`` (soft routing): ``[T, K]`` per-token mixture weights.
* ``shared`` (always-on adapters, e.g. Matryoshka's shared LoRA or a single adapter).

``A`` and ``B`` may also be lists of per-adapter ``A_k [r_k, d_in]`` / ``B_k [d_out, r_k]``
(e.g. the fp32 parameters themselves; they are cast to ``x``'s dtype).

All three are optional and add up. Shapes::

    x [T, d_in]   A [K, r_max, d_in]   B [K, d_out, r_max]   ->  delta [T, d_out]

Rows ``r_k:`` of ``A_k`` and columns ``r_k:`` of ``B_k`` are padding and never read.
Tokens routed to ``-1`` (and adapters with no tokens) cost no arithmetic.

``lora_delta`` dispatches to the first registered backend that applies to its input (on CUDA:
``fused``, then ``triton``; see ``kernels/__init__.py``) and to ``lora_delta_reference`` (pure
torch, differentiable) otherwise; ``backend="torch"`` or the environment variable
``MMLORA_KERNELS=torch`` forces the reference.

``lora_linear`` is the same with the frozen base projection folded in
(``F.linear(x, W, b) + lora_delta(...)``): fused backends compute the base GEMM, every
adapter's shrink and the in-place routed expand in one autograd function (``lora_fused.py``).
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import torch
from torch import Tensor

__all__ = ["lora_delta", "lora_delta_reference", "lora_linear", "stack_adapters", "lora_linear_reference", "register_backend",
           "available_backends", "resolve_backend", "backend_ops"]

# name -> (predicate(x) -> bool, implementation with lora_delta's signature)
_BACKENDS: dict[str, tuple[Callable[[Tensor], bool], Callable[..., Tensor]]] = {}
# name -> implementation with lora_linear's signature (optional per backend)
_LINEAR: dict[str, Callable[..., Tensor]] = {}
# name -> primitive set of the fused functions (lora_fused.TorchOps contract), for backends built on them
_OPS: dict[str, object] = {}


def register_backend(name: str, applies: Callable[[Tensor], bool], fn: Callable[..., Tensor],
                     linear: Callable[..., Tensor] | None = None, ops: object | None = None) -> None:
    """Register a fast implementation of :func:`lora_delta` (e.g. Triton on CUDA) and,
    optionally, of :func:`lora_linear`. ``auto`` tries backends in registration order.
    ``ops``: the backend is the fused function of ``lora_fused.py`` on these primitives (layers
    then call it directly with their cached routing, see :func:`backend_ops`)."""
    _BACKENDS[name] = (applies, fn)
    if linear is not None:
        _LINEAR[name] = linear
    if ops is not None:
        _OPS[name] = ops
    else:
        _OPS.pop(name, None)


def backend_ops(name: str):
    """The primitive set of backend ``name`` if it is the fused function of ``lora_fused.py``, else None."""
    return _OPS.get(name)


def available_backends() -> list[str]:
    return ["torch", *_BACKENDS]


def _check(x: Tensor, A: Tensor, B: Tensor, ranks: Sequence[int], scalings: Sequence[float],
           index: Tensor | None, weights: Tensor | None, shared: Sequence[int] | None) -> None:
    if x.dim() != 2:
        raise ValueError(f"x must be [T, d_in], got shape {tuple(x.shape)}")
    if A.dim() != 3 or B.dim() != 3:
        raise ValueError(f"A must be [K, r, d_in] and B [K, d_out, r], got {tuple(A.shape)} and {tuple(B.shape)}")
    K, r_max, d_in = A.shape
    if x.shape[1] != d_in or B.shape[0] != K or B.shape[2] != r_max:
        raise ValueError(f"shape mismatch: x {tuple(x.shape)}, A {tuple(A.shape)}, B {tuple(B.shape)}")
    if len(ranks) != K or len(scalings) != K:
        raise ValueError(f"need {K} ranks and scalings, got {len(ranks)} and {len(scalings)}")
    if any(not 0 <= int(r) <= r_max for r in ranks):
        raise ValueError(f"ranks {list(ranks)} must lie in [0, {r_max}]")
    if index is not None and index.shape != (x.shape[0],):
        raise ValueError(f"index must be [T]={x.shape[0]}, got {tuple(index.shape)}")
    if weights is not None and weights.shape != (x.shape[0], K):
        raise ValueError(f"weights must be [T, K]=({x.shape[0]}, {K}), got {tuple(weights.shape)}")
    if shared is not None and any(not 0 <= int(k) < K for k in shared):
        raise ValueError(f"shared adapters {list(shared)} out of range for K={K}")


def _check_lists(x: Tensor, A, B, ranks, scalings, index, weights, shared) -> None:
    """:func:`_check` for lists of per-adapter ``A_k [r_k, d_in]`` / ``B_k [d_out, r_k]`` (shapes only:
    cheap, it runs on every fused layer call)."""
    K = len(ranks)
    if x.dim() != 2:
        raise ValueError(f"x must be [T, d_in], got shape {tuple(x.shape)}")
    if len(A) != K or len(B) != K or len(scalings) != K:
        raise ValueError(f"need {K} A, B and scalings, got {len(A)}, {len(B)} and {len(scalings)}")
    T, d_in = x.shape
    d_out = B[0].shape[0] if K else 0
    for k in range(K):
        r = int(ranks[k])
        if r < 0 or A[k].shape != (r, d_in) or B[k].shape != (d_out, r):
            raise ValueError(f"adapter {k}: need A [{r}, {d_in}] and B [{d_out}, {r}], got "
                             f"{tuple(A[k].shape)} and {tuple(B[k].shape)}")
    if index is not None and index.shape != (T,):
        raise ValueError(f"index must be [T]={T}, got {tuple(index.shape)}")
    if weights is not None and weights.shape != (T, K):
        raise ValueError(f"weights must be [T, K]=({T}, {K}), got {tuple(weights.shape)}")
    if shared is not None and any(not 0 <= int(k) < K for k in shared):
        raise ValueError(f"shared adapters {list(shared)} out of range for K={K}")


def lora_delta_reference(x: Tensor, A: Tensor, B: Tensor, ranks: Sequence[int], scalings: Sequence[float],
                         index: Tensor | None = None, weights: Tensor | None = None,
                         shared: Sequence[int] | None = None) -> Tensor:
    """Pure-torch reference of :func:`lora_delta` (same signature, autograd through torch ops).

    Hard-routed tokens are gathered per adapter, so ``-1`` tokens are never multiplied.
    """
    _check(x, A, B, ranks, scalings, index, weights, shared)
    T = x.shape[0]
    K = A.shape[0]
    out = x.new_zeros(T, B.shape[1])
    shared_set = {int(k) for k in (shared or ())}
    for k in range(K):
        r, s = int(ranks[k]), float(scalings[k])
        if r == 0 or s == 0.0:
            continue
        Ak, Bk = A[k, :r], B[k, :, :r]
        if k in shared_set:  # every token
            out = out + s * ((x @ Ak.t()) @ Bk.t())
        if weights is not None:
            wk = weights[:, k:k + 1].to(x.dtype)
            out = out + (s * wk) * ((x @ Ak.t()) @ Bk.t())
        if index is not None:
            rows = (index == k).nonzero(as_tuple=True)[0]
            if rows.numel():
                contrib = s * ((x.index_select(0, rows) @ Ak.t()) @ Bk.t())
                out = out.index_add(0, rows, contrib.to(out.dtype))  # autocast: contrib may be lower precision
    return out


def stack_adapters(A, B, ranks: Sequence[int], dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor]:
    """Stacked ``[K, r_max, d_in]`` / ``[K, d_out, r_max]`` (zero padding) from lists of
    per-adapter ``A_k [r_k, d_in]`` / ``B_k [d_out, r_k]``; stacked input is returned as is."""
    if isinstance(A, Tensor):
        return A, B
    A, B = list(A), list(B)
    if len(A) != len(ranks) or len(B) != len(ranks):
        raise ValueError(f"need {len(ranks)} A and B tensors, got {len(A)} and {len(B)}")
    for k, (a, b, r) in enumerate(zip(A, B, ranks)):
        if a.dim() != 2 or b.dim() != 2 or a.shape[0] != int(r) or b.shape[1] != int(r):
            raise ValueError(f"adapter {k}: A must be [r={r}, d_in] and B [d_out, r], got {tuple(a.shape)} "
                             f"and {tuple(b.shape)}")
    r_max = max(int(r) for r in ranks)
    dtype = dtype or A[0].dtype
    pad = torch.nn.functional.pad
    A_s = torch.stack([pad(a.to(dtype), (0, 0, 0, r_max - a.shape[0])) for a in A])
    B_s = torch.stack([pad(b.to(dtype), (0, r_max - b.shape[1])) for b in B])
    return A_s, B_s


@contextmanager
def forced_backend(name: str | None) -> Iterator[None]:
    """Set ``MMLORA_KERNELS`` to ``name`` (None: unset, i.e. the device default) inside the block;
    the previous value comes back afterwards."""
    def put(value: str | None) -> None:
        if value is None:
            os.environ.pop("MMLORA_KERNELS", None)
        else:
            os.environ["MMLORA_KERNELS"] = value

    old = os.environ.get("MMLORA_KERNELS")
    put(name)
    try:
        yield
    finally:
        put(old)


def _backend_from_env() -> str | None:
    val = os.environ.get("MMLORA_KERNELS", "").strip().lower()
    return val or None


def resolve_backend(x: Tensor, backend: str | None = None) -> str:
    """The backend ``lora_delta``/``lora_linear`` would use for ``x``: ``"torch"`` (the
    reference) or a registered name. ``MMLORA_KERNELS`` overrides ``None``."""
    backend = backend or _backend_from_env() or "auto"
    if backend == "torch":
        return "torch"
    if backend == "auto":
        for name, (applies, _) in _BACKENDS.items():
            if applies(x):
                return name
        return "torch"
    if backend not in _BACKENDS:
        raise ValueError(f"unknown LoRA backend {backend!r}; available: {available_backends()}")
    return backend


def lora_delta(x: Tensor, A: Tensor, B: Tensor, ranks: Sequence[int], scalings: Sequence[float],
               index: Tensor | None = None, weights: Tensor | None = None,
               shared: Sequence[int] | None = None, *, backend: str | None = None) -> Tensor:
    """Routed multi-LoRA delta (see the module docstring for the maths).

    Args:
        x: ``[T, d_in]`` input tokens.
        A: ``[K, r_max, d_in]`` shrink weights, B: ``[K, d_out, r_max]`` expand weights.
        ranks: ``K`` ints, the rank actually used by each adapter (``<= r_max``).
        scalings: ``K`` floats (``alpha / r`` or ``alpha / sqrt(r)``).
        index: optional int32 ``[T]``, hard routing (``-1`` = no adapter).
        weights: optional ``[T, K]`` soft routing weights.
        shared: optional adapter indices that act on every token.
        backend: ``None``/``"auto"`` (fastest that applies), ``"torch"`` (reference) or a
            registered name. ``MMLORA_KERNELS`` overrides ``None``.
    Returns:
        ``[T, d_out]`` in ``x``'s dtype.
    """
    name = resolve_backend(x, backend)
    if name == "torch":
        A, B = stack_adapters(A, B, ranks, x.dtype)
        return lora_delta_reference(x, A, B, ranks, scalings, index, weights, shared)
    if isinstance(A, Tensor):
        _check(x, A, B, ranks, scalings, index, weights, shared)
    else:
        _check_lists(x, A, B, ranks, scalings, index, weights, shared)
    return _BACKENDS[name][1](x, A, B, ranks, scalings, index, weights, shared)


def lora_linear_reference(x: Tensor, weight: Tensor, bias: Tensor | None, A: Tensor, B: Tensor,
                          ranks: Sequence[int], scalings: Sequence[float], index: Tensor | None = None,
                          weights: Tensor | None = None, shared: Sequence[int] | None = None,
                          x_lora: Tensor | None = None) -> Tensor:
    """Reference of :func:`lora_linear`: ``F.linear(x, weight, bias) + lora_delta_reference(x_lora or x, ...)``."""
    y = torch.nn.functional.linear(x, weight, bias)
    A, B = stack_adapters(A, B, ranks, x.dtype)
    delta = lora_delta_reference(x if x_lora is None else x_lora, A, B, ranks, scalings, index, weights, shared)
    return y + delta.to(y.dtype)


def lora_linear(x: Tensor, weight: Tensor, bias: Tensor | None, A: Tensor, B: Tensor, ranks: Sequence[int],
                scalings: Sequence[float], index: Tensor | None = None, weights: Tensor | None = None,
                shared: Sequence[int] | None = None, x_lora: Tensor | None = None, *,
                backend: str | None = None) -> Tensor:
    """Base projection plus routed multi-LoRA: ``x W^T + b + lora_delta(x_lora or x, ...)``.

    ``x``, ``x_lora``: ``[T, d_in]`` (``x_lora`` is the adapters' input when it differs, e.g.
    after dropout); ``weight`` ``[d_out, d_in]``; the rest as :func:`lora_delta`. Returns
    ``[T, d_out]``. Backends without a fused linear fall back to base + ``lora_delta``.
    """
    name = resolve_backend(x, backend)
    if name == "torch":
        return lora_linear_reference(x, weight, bias, A, B, ranks, scalings, index, weights, shared, x_lora)
    xl = x if x_lora is None else x_lora
    if isinstance(A, Tensor):
        _check(xl, A, B, ranks, scalings, index, weights, shared)
    else:
        _check_lists(xl, A, B, ranks, scalings, index, weights, shared)
    if name in _LINEAR:
        return _LINEAR[name](x, weight, bias, A, B, ranks, scalings, index, weights, shared, x_lora)
    y = torch.nn.functional.linear(x, weight, bias)
    return y + _BACKENDS[name][1](xl, A, B, ranks, scalings, index, weights, shared).to(y.dtype)
