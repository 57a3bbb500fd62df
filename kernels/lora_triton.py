"""Triton kernels for the fused routed multi-LoRA linear (see :mod:`mmlora.kernels.lora_fused`).

All kernels work in the *concatenated rank space*: the adapters' A rows stacked into
``A [R, D]`` (``R = sum_k r_k``), their B columns into ``B [N, R]``, and a per-token rank-space
coefficient ``M [T or 1, R]`` (``M[t, j] = w_{t,k(j)} * s_{k(j)}``: hard routing becomes a mask,
soft routing a weight, shared adapters a constant). Shapes: ``x [T, D]``, ``y, dy [T, N]``.

Ops (each has a cuBLAS/torch twin in ``lora_fused.TorchOps`` with the same contract):

* ``shrink(x, A, M) -> (h, hm)``      ``h = x A^T``, ``hm = h * M``        one pass over x
* ``expand_(y, a, b)``                ``y += a b^T`` in place              one read + write of y
* ``expand(a, b)``                    ``a b^T``
* ``bwd_dy(dy, B, hm, M) -> (dh, dB, dhm)``  ``dhm = dy B``, ``dh = dhm * M``, ``dB = dy^T hm``
                                      one pass over dy (dB reduced over T with fp32 atomics)
* ``grad_a(dh, x) -> dA``             ``dA = dh^T x``  split over T, fp32 atomics
* ``dx_(dx, dh, A)``                  ``dx += dh A`` in place

Any T, D, N (masks, no power-of-two assumption); R is padded to a power of two >= 16 inside
the kernels only. fp32 inputs use IEEE fp32 dots (no tf32), bf16/fp16 accumulate in fp32.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

__all__ = ["TritonOps", "triton_ops"]


def _rpad(r: int) -> int:
    return max(16, triton.next_power_of_2(int(r)))


def _prec(dt: torch.dtype) -> str:
    return "ieee" if dt == torch.float32 else "tf32"


_TL = {torch.float32: tl.float32, torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}


@triton.jit
def _shrink_kernel(x_ptr, a_ptr, m_ptr, h_ptr, hm_ptr, T, D, R,
                   sxt, sar, smt, sht,
                   BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr, R_PAD: tl.constexpr, PREC: tl.constexpr):
    pid = tl.program_id(0)
    offs_t = (pid * BLOCK_T + tl.arange(0, BLOCK_T)).to(tl.int64)
    offs_r = tl.arange(0, R_PAD)
    tmask = offs_t < T
    rmask = offs_r < R
    acc = tl.zeros((BLOCK_T, R_PAD), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        dmask = offs_d < D
        xt = tl.load(x_ptr + offs_t[:, None] * sxt + offs_d[None, :], mask=tmask[:, None] & dmask[None, :], other=0.0)
        at = tl.load(a_ptr + offs_r[None, :] * sar + offs_d[:, None], mask=dmask[:, None] & rmask[None, :], other=0.0)
        acc = tl.dot(xt, at, acc, input_precision=PREC)
    om = tmask[:, None] & rmask[None, :]
    m = tl.load(m_ptr + offs_t[:, None] * smt + offs_r[None, :], mask=om, other=0.0)
    tl.store(h_ptr + offs_t[:, None] * sht + offs_r[None, :], acc.to(h_ptr.dtype.element_ty), mask=om)
    tl.store(hm_ptr + offs_t[:, None] * sht + offs_r[None, :], (acc * m).to(hm_ptr.dtype.element_ty), mask=om)


@triton.jit
def _expand_kernel(y_ptr, a_ptr, b_ptr, T, N, R,
                   syt, sat, sbn, sbr,
                   ACCUM: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr, R_PAD: tl.constexpr,
                   PREC: tl.constexpr):
    """y[T, N] (+)= a[T, R] @ b[N, R]^T (b given by strides, so b may be A^T)."""
    pid_t = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_t = (pid_t * BLOCK_T + tl.arange(0, BLOCK_T)).to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_r = tl.arange(0, R_PAD)
    tmask = offs_t < T
    nmask = offs_n < N
    rmask = offs_r < R
    a = tl.load(a_ptr + offs_t[:, None] * sat + offs_r[None, :], mask=tmask[:, None] & rmask[None, :], other=0.0)
    bt = tl.load(b_ptr + offs_n[None, :] * sbn + offs_r[:, None] * sbr, mask=rmask[:, None] & nmask[None, :], other=0.0)
    acc = tl.dot(a, bt, input_precision=PREC)
    om = tmask[:, None] & nmask[None, :]
    yp = y_ptr + offs_t[:, None] * syt + offs_n[None, :]
    if ACCUM:
        acc += tl.load(yp, mask=om, other=0.0).to(tl.float32)
    tl.store(yp, acc.to(y_ptr.dtype.element_ty), mask=om)


@triton.jit
def _bwd_dy_kernel(dy_ptr, b_ptr, hm_ptr, m_ptr, dh_ptr, dhm_ptr, db_ptr, T, N, R,
                   sdt, sbn, sht, smt, N_PER,
                   WRITE_DHM: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr, R_PAD: tl.constexpr,
                   PREC: tl.constexpr, SPLIT_N: tl.constexpr):
    """One pass over a [BLOCK_T, N_PER] slab of dy: dhm += dy B (partial over the N split),
    dB[n] += dy^T hm (fp32 atomics). With SPLIT_N the dhm partials go through atomics into a
    fp32 buffer and dh is formed afterwards."""
    pid_t = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_t = (pid_t * BLOCK_T + tl.arange(0, BLOCK_T)).to(tl.int64)
    offs_r = tl.arange(0, R_PAD)
    tmask = offs_t < T
    rmask = offs_r < R
    trm = tmask[:, None] & rmask[None, :]
    hm = tl.load(hm_ptr + offs_t[:, None] * sht + offs_r[None, :], mask=trm, other=0.0)
    acc = tl.zeros((BLOCK_T, R_PAD), dtype=tl.float32)
    n_lo = pid_n * N_PER
    for n0 in range(n_lo, n_lo + N_PER, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        nmask = (offs_n < N) & (offs_n < n_lo + N_PER)
        dy = tl.load(dy_ptr + offs_t[:, None] * sdt + offs_n[None, :], mask=tmask[:, None] & nmask[None, :], other=0.0)
        b = tl.load(b_ptr + offs_n[:, None] * sbn + offs_r[None, :], mask=nmask[:, None] & rmask[None, :], other=0.0)
        acc = tl.dot(dy, b, acc, input_precision=PREC)
        dbp = tl.dot(tl.trans(dy), hm, input_precision=PREC)
        tl.atomic_add(db_ptr + offs_n[:, None] * R + offs_r[None, :], dbp, mask=nmask[:, None] & rmask[None, :],
                      sem="relaxed")
    if SPLIT_N:
        tl.atomic_add(dhm_ptr + offs_t[:, None] * R + offs_r[None, :], acc, mask=trm, sem="relaxed")
    else:
        m = tl.load(m_ptr + offs_t[:, None] * smt + offs_r[None, :], mask=trm, other=0.0)
        tl.store(dh_ptr + offs_t[:, None] * sht + offs_r[None, :], (acc * m).to(dh_ptr.dtype.element_ty), mask=trm)
        if WRITE_DHM:
            tl.store(dhm_ptr + offs_t[:, None] * R + offs_r[None, :], acc, mask=trm)


@triton.jit
def _grad_a_kernel(dh_ptr, x_ptr, da_ptr, T, D, R, sht, sxt, T_PER,
                   BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr, R_PAD: tl.constexpr, PREC: tl.constexpr):
    """dA[R, D] += dh[t-split]^T x[t-split, d-block] (fp32 atomics over the T splits)."""
    pid_d = tl.program_id(0)
    pid_t = tl.program_id(1)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_r = tl.arange(0, R_PAD)
    dmask = offs_d < D
    rmask = offs_r < R
    acc = tl.zeros((R_PAD, BLOCK_D), dtype=tl.float32)
    t_lo = pid_t * T_PER
    for t0 in range(t_lo, t_lo + T_PER, BLOCK_T):
        offs_t = (t0 + tl.arange(0, BLOCK_T)).to(tl.int64)
        tmask = (offs_t < T) & (offs_t < t_lo + T_PER)
        dht = tl.load(dh_ptr + offs_r[:, None] + offs_t[None, :] * sht, mask=rmask[:, None] & tmask[None, :], other=0.0)
        xt = tl.load(x_ptr + offs_t[:, None] * sxt + offs_d[None, :], mask=tmask[:, None] & dmask[None, :], other=0.0)
        acc = tl.dot(dht, xt, acc, input_precision=PREC)
    tl.atomic_add(da_ptr + offs_r[:, None] * D + offs_d[None, :], acc, mask=rmask[:, None] & dmask[None, :],
                  sem="relaxed")


def _rows(x: Tensor) -> Tensor:
    """Row-major with unit column stride (any row stride)."""
    return x if x.stride(-1) == 1 else x.contiguous()


def _n_sms(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 8


class TritonOps:
    """The fused op set, Triton implementation (contract: ``lora_fused.TorchOps``)."""

    name = "triton"
    BT_SHRINK, BD_SHRINK = 32, 128
    BT_EXP, BN_EXP = 64, 128
    BT_DY, BN_DY = 64, 64
    BT_GA, BD_GA = 64, 128

    def shrink(self, x: Tensor, A: Tensor, M: Tensor) -> tuple[Tensor, Tensor]:
        x, A, M = _rows(x), A.contiguous(), M.contiguous()
        T, D = x.shape
        R = A.shape[0]
        h = torch.empty(T, R, device=x.device, dtype=x.dtype)
        hm = torch.empty_like(h)
        if T:
            grid = (triton.cdiv(T, self.BT_SHRINK),)
            _shrink_kernel[grid](x, A, M, h, hm, T, D, R, x.stride(0), A.stride(0), M.stride(0) if M.shape[0] > 1 else 0,
                                 h.stride(0), BLOCK_T=self.BT_SHRINK, BLOCK_D=self.BD_SHRINK, R_PAD=_rpad(R),
                                 PREC=_prec(x.dtype), num_warps=4, num_stages=4)
        return h, hm

    def _expand(self, y: Tensor, a: Tensor, b: Tensor, sbn: int, sbr: int, N: int, accum: bool) -> Tensor:
        T, R = a.shape
        if T and N:
            grid = (triton.cdiv(T, self.BT_EXP), triton.cdiv(N, self.BN_EXP))
            _expand_kernel[grid](y, a, b, T, N, R, y.stride(0), a.stride(0), sbn, sbr, ACCUM=accum,
                                 BLOCK_T=self.BT_EXP, BLOCK_N=self.BN_EXP, R_PAD=_rpad(R), PREC=_prec(y.dtype),
                                 num_warps=4, num_stages=2)
        return y

    def expand_(self, y: Tensor, a: Tensor, b: Tensor) -> Tensor:
        """y [T, N] += a [T, R] @ b [N, R]^T in place (y must have unit column stride)."""
        assert y.stride(-1) == 1
        a, b = a.contiguous(), b.contiguous()
        return self._expand(y, a, b, b.stride(0), 1, b.shape[0], True)

    def expand(self, a: Tensor, b: Tensor) -> Tensor:
        a, b = a.contiguous(), b.contiguous()
        y = torch.empty(a.shape[0], b.shape[0], device=a.device, dtype=a.dtype)
        return self._expand(y, a, b, b.stride(0), 1, b.shape[0], False)

    def dx_(self, dx: Tensor, dh: Tensor, A: Tensor) -> Tensor:
        """dx [T, D] += dh [T, R] @ A [R, D]."""
        assert dx.stride(-1) == 1
        dh, A = dh.contiguous(), A.contiguous()
        return self._expand(dx, dh, A, 1, A.stride(0), A.shape[1], True)

    def dx(self, dh: Tensor, A: Tensor) -> Tensor:
        dh, A = dh.contiguous(), A.contiguous()
        dx = torch.empty(dh.shape[0], A.shape[1], device=dh.device, dtype=dh.dtype)
        return self._expand(dx, dh, A, 1, A.stride(0), A.shape[1], False)

    def bwd_dy(self, dy: Tensor, B: Tensor, hm: Tensor, M: Tensor, need_dhm: bool
               ) -> tuple[Tensor, Tensor, Tensor | None]:
        dy, B, hm, M = _rows(dy), B.contiguous(), hm.contiguous(), M.contiguous()
        T, N = dy.shape
        R = B.shape[1]
        dh = torch.empty(T, R, device=dy.device, dtype=dy.dtype)
        db = torch.zeros(N, R, device=dy.device, dtype=torch.float32)
        n_t = triton.cdiv(T, self.BT_DY)
        # split N when there are too few row blocks to fill the chip
        split = max(1, min(triton.cdiv(N, self.BN_DY), triton.cdiv(2 * _n_sms(dy.device), max(n_t, 1))))
        n_per = triton.cdiv(triton.cdiv(N, split), self.BN_DY) * self.BN_DY
        split = triton.cdiv(N, n_per)
        smt = M.stride(0) if M.shape[0] > 1 else 0
        if split > 1:
            dhm = torch.zeros(T, R, device=dy.device, dtype=torch.float32)
        else:
            dhm = torch.empty(T, R, device=dy.device, dtype=torch.float32) if need_dhm else dh
        if T and N:
            _bwd_dy_kernel[(n_t, split)](dy, B, hm, M, dh, dhm, db, T, N, R, dy.stride(0), B.stride(0),
                                         hm.stride(0), smt, n_per, WRITE_DHM=need_dhm, BLOCK_T=self.BT_DY,
                                         BLOCK_N=self.BN_DY, R_PAD=_rpad(R), PREC=_prec(dy.dtype),
                                         SPLIT_N=split > 1, num_warps=4, num_stages=3)
        if split > 1:
            dh = (dhm * M).to(dy.dtype)
        elif T == 0:
            dh.zero_()
        return dh, db.to(dy.dtype), (dhm if need_dhm else None)

    def grad_a(self, dh: Tensor, x: Tensor) -> Tensor:
        """dA [R, D] = dh [T, R]^T @ x [T, D]."""
        dh, x = dh.contiguous(), _rows(x)
        T, D = x.shape
        R = dh.shape[1]
        da = torch.zeros(R, D, device=x.device, dtype=torch.float32)
        n_d = triton.cdiv(D, self.BD_GA)
        split = max(1, min(triton.cdiv(T, self.BT_GA), triton.cdiv(2 * _n_sms(x.device), n_d)))
        t_per = triton.cdiv(triton.cdiv(T, split), self.BT_GA) * self.BT_GA
        split = triton.cdiv(T, t_per) if T else 0
        if T and D:
            _grad_a_kernel[(n_d, split)](dh, x, da, T, D, R, dh.stride(0), x.stride(0), t_per, BLOCK_T=self.BT_GA,
                                         BLOCK_D=self.BD_GA, R_PAD=_rpad(R), PREC=_prec(x.dtype),
                                         num_warps=4, num_stages=3)
        return da.to(x.dtype)


triton_ops = TritonOps()
