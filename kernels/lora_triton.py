"""Triton kernels for the fused routed multi-LoRA linear (see :mod:`mmlora.kernels.lora_fused`).

Two kernels, each one launch per layer call, working in the *concatenated rank space*
(``A [R, D]``: the A rows of every active adapter, ``B [N, R]``: their B columns,
``M [T or 1, R]``: per-token rank coefficient = routing weight x scaling)::

    forward  (per block of BLOCK_T tokens; reads x once, read-modify-writes y once)
        h  = x A^T ; hm = h * M            -> saved for backward ([T, R], tiny)
        y += hm B^T                         (y = the base GEMM's output, in place)

    backward (per block of BLOCK_T tokens; reads dy once, x once, RMW dx once)
        dhm = dy B ; dB += dy^T hm          (fp32 atomics over token blocks)
        dh  = dhm * M
        dA += dh^T x                        (fp32 atomics over token blocks)
        dx += dh A                          (dx = dy W from cuBLAS, in place)

Any T, D, N (masked tails, no power-of-two assumption); R is padded to a power of two >= 16
inside the kernels only. ``A``/``B`` may be in another dtype than ``x`` (the fp32 parameters):
their tiles are cast to ``x``'s dtype after loading, which saves the two cast launches per call. bf16/fp16 accumulate in fp32 (``hm`` and ``dh`` are rounded to the
input dtype before the second product, like the reference); fp32 inputs use IEEE dots.
``TorchOps`` in ``lora_fused.py`` is the cuBLAS twin with the same contract.
"""
from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl
from torch import Tensor

__all__ = ["TritonOps", "triton_ops"]


def _rpad(r: int) -> int:
    return max(16, triton.next_power_of_2(int(r)))


def _prec(dt: torch.dtype) -> str:
    return "ieee" if dt == torch.float32 else "tf32"


@triton.jit
def _fwd_kernel(x_ptr, a_ptr, m_ptr, b_ptr, y_ptr, h_ptr, hm_ptr, T, D, N, R,
                sxt, sar, smt, sbn, syt, sht,
                ACCUM: tl.constexpr, STORE_H: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
                BLOCK_N: tl.constexpr, R_PAD: tl.constexpr, PREC: tl.constexpr):
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
        acc = tl.dot(xt, at.to(xt.dtype), acc, input_precision=PREC)
    trm = tmask[:, None] & rmask[None, :]
    m = tl.load(m_ptr + offs_t[:, None] * smt + offs_r[None, :], mask=trm, other=0.0)
    hm = (acc * m).to(hm_ptr.dtype.element_ty)
    tl.store(hm_ptr + offs_t[:, None] * sht + offs_r[None, :], hm, mask=trm)
    if STORE_H:
        tl.store(h_ptr + offs_t[:, None] * sht + offs_r[None, :], acc.to(h_ptr.dtype.element_ty), mask=trm)
    for n0 in range(0, N, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        nmask = offs_n < N
        bt = tl.load(b_ptr + offs_n[None, :] * sbn + offs_r[:, None], mask=rmask[:, None] & nmask[None, :], other=0.0)
        out = tl.dot(hm, bt.to(hm.dtype), input_precision=PREC)
        om = tmask[:, None] & nmask[None, :]
        yp = y_ptr + offs_t[:, None] * syt + offs_n[None, :]
        if ACCUM:
            out += tl.load(yp, mask=om, other=0.0).to(tl.float32)
        tl.store(yp, out.to(y_ptr.dtype.element_ty), mask=om)


@triton.jit
def _bwd_kernel(dy_ptr, b_ptr, hm_ptr, m_ptr, x_ptr, a_ptr, dx_ptr, da_ptr, db_ptr, dhm_ptr, T, D, N, R,
                sdt, sbn, sht, smt, sxt, sar, sdxt,
                DX_ACCUM: tl.constexpr, WRITE_DX: tl.constexpr, WRITE_DHM: tl.constexpr, BLOCK_T: tl.constexpr,
                BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, R_PAD: tl.constexpr, PREC: tl.constexpr):
    pid = tl.program_id(0)
    offs_t = (pid * BLOCK_T + tl.arange(0, BLOCK_T)).to(tl.int64)
    offs_r = tl.arange(0, R_PAD)
    tmask = offs_t < T
    rmask = offs_r < R
    trm = tmask[:, None] & rmask[None, :]
    hm = tl.load(hm_ptr + offs_t[:, None] * sht + offs_r[None, :], mask=trm, other=0.0)
    acc = tl.zeros((BLOCK_T, R_PAD), dtype=tl.float32)
    for n0 in range(0, N, BLOCK_N):  # one pass over dy: dhm = dy B, dB += dy^T hm
        offs_n = n0 + tl.arange(0, BLOCK_N)
        nmask = offs_n < N
        dy = tl.load(dy_ptr + offs_t[:, None] * sdt + offs_n[None, :], mask=tmask[:, None] & nmask[None, :], other=0.0)
        b = tl.load(b_ptr + offs_n[:, None] * sbn + offs_r[None, :], mask=nmask[:, None] & rmask[None, :], other=0.0)
        acc = tl.dot(dy, b.to(dy.dtype), acc, input_precision=PREC)
        dbp = tl.dot(tl.trans(dy), hm, input_precision=PREC)
        tl.atomic_add(db_ptr + offs_n[:, None] * R + offs_r[None, :], dbp, mask=nmask[:, None] & rmask[None, :],
                      sem="relaxed")
    if WRITE_DHM:
        tl.store(dhm_ptr + offs_t[:, None] * R + offs_r[None, :], acc, mask=trm)
    m = tl.load(m_ptr + offs_t[:, None] * smt + offs_r[None, :], mask=trm, other=0.0)
    dh = (acc * m).to(x_ptr.dtype.element_ty)
    for d0 in range(0, D, BLOCK_D):  # one pass over x (dA) and dx (in place)
        offs_d = d0 + tl.arange(0, BLOCK_D)
        dmask = offs_d < D
        tdm = tmask[:, None] & dmask[None, :]
        xt = tl.load(x_ptr + offs_t[:, None] * sxt + offs_d[None, :], mask=tdm, other=0.0)
        dap = tl.dot(tl.trans(dh), xt, input_precision=PREC)
        tl.atomic_add(da_ptr + offs_r[:, None] * D + offs_d[None, :], dap, mask=rmask[:, None] & dmask[None, :],
                      sem="relaxed")
        if WRITE_DX:
            a = tl.load(a_ptr + offs_r[:, None] * sar + offs_d[None, :], mask=rmask[:, None] & dmask[None, :], other=0.0)
            upd = tl.dot(dh, a.to(dh.dtype), input_precision=PREC)
            dxp = dx_ptr + offs_t[:, None] * sdxt + offs_d[None, :]
            if DX_ACCUM:
                upd += tl.load(dxp, mask=tdm, other=0.0).to(tl.float32)
            tl.store(dxp, upd.to(dx_ptr.dtype.element_ty), mask=tdm)


# ---------------------------------------------------------------- gated-MLP elementwise (lora_mlp.py)
_ACT_CODE = {"silu": 0, "gelu": 1, "gelu_tanh": 2}


@triton.jit
def _act(g, ACT: tl.constexpr):
    """act(g) in fp32: SiLU, exact GELU, tanh GELU (torch's formulas)."""
    if ACT == 0:
        return g / (1.0 + tl.exp(-g))
    elif ACT == 1:
        return 0.5 * g * (1.0 + tl.math.erf(g * 0.7071067811865476))
    else:
        inner = 0.7978845608028654 * (g + 0.044715 * g * g * g)
        return 0.5 * g * (2.0 * tl.sigmoid(2.0 * inner))  # 1 + tanh(z) = 2 sigmoid(2z)


@triton.jit
def _act_grad(g, ACT: tl.constexpr):
    """d act / d g in fp32 (torch's silu_backward / gelu_backward formulas)."""
    if ACT == 0:
        s = 1.0 / (1.0 + tl.exp(-g))
        return s * (1.0 + g * (1.0 - s))
    elif ACT == 1:
        cdf = 0.5 * (1.0 + tl.math.erf(g * 0.7071067811865476))
        return cdf + g * tl.exp(-0.5 * g * g) * 0.3989422804014327
    else:
        inner = 0.7978845608028654 * (g + 0.044715 * g * g * g)
        t = 2.0 * tl.sigmoid(2.0 * inner) - 1.0
        return 0.5 * (1.0 + t) + 0.5 * g * (1.0 - t * t) * 0.7978845608028654 * (1.0 + 3.0 * 0.044715 * g * g)


@triton.jit
def _act_mul_fwd_kernel(g_ptr, u_ptr, h_ptr, n, ACT: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    g = tl.load(g_ptr + offs, mask=mask, other=0.0)
    u = tl.load(u_ptr + offs, mask=mask, other=0.0)
    a = _act(g.to(tl.float32), ACT).to(g.dtype)  # rounded like act_fn(g)'s output, then the product
    tl.store(h_ptr + offs, (a.to(tl.float32) * u.to(tl.float32)).to(h_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _act_mul_bwd_kernel(dh_ptr, g_ptr, u_ptr, dg_ptr, du_ptr, n, ACT: tl.constexpr, WRITE_DG: tl.constexpr,
                        WRITE_DU: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    dh = tl.load(dh_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(g_ptr + offs, mask=mask, other=0.0)
    gf = g.to(tl.float32)
    if WRITE_DU:  # du = dh * act(g)
        a = _act(gf, ACT).to(g.dtype).to(tl.float32)
        tl.store(du_ptr + offs, (dh * a).to(du_ptr.dtype.element_ty), mask=mask)
    if WRITE_DG:  # dg = act'(g) * (dh * u), the product rounded like the unfused graph's
        u = tl.load(u_ptr + offs, mask=mask, other=0.0)
        t = (dh * u.to(tl.float32)).to(g.dtype).to(tl.float32)
        tl.store(dg_ptr + offs, (t * _act_grad(gf, ACT)).to(dg_ptr.dtype.element_ty), mask=mask)


def _rows(x: Tensor) -> Tensor:
    """Unit column stride (any row stride)."""
    return x if x.stride(-1) == 1 else x.contiguous()


def _stages(bytes_per_stage: int, want: int, budget: int = 128 * 1024) -> int:
    return max(1, min(want, budget // max(bytes_per_stage, 1)))


class TritonOps:
    """Fused forward/backward of the rank-space LoRA (contract: ``lora_fused.TorchOps``)."""

    name = "triton"
    params_any_dtype = True  # A, B may be the raw (fp32) parameters: tiles are cast to x's dtype after loading
    BT_FWD, BD_FWD, BN_FWD = 32, 128, 128
    BT_BWD, BD_BWD, BN_BWD = 64, 64, 64

    def forward(self, x: Tensor, A: Tensor, B: Tensor, M: Tensor, y: Tensor | None, store_h: bool
                ) -> tuple[Tensor, Tensor | None, Tensor]:
        """``y (+)= (x A^T * M) B^T``; returns ``(y, h or None, hm)``. ``y=None``: a new output."""
        x, A, B, M = _rows(x), A.contiguous(), B.contiguous(), M.contiguous()
        T, D = x.shape
        N, R = B.shape
        hm = torch.empty(T, R, device=x.device, dtype=x.dtype)
        h = torch.empty_like(hm) if store_h else hm
        accum = y is not None
        if y is None:
            y = torch.empty(T, N, device=x.device, dtype=x.dtype)
        assert y.stride(-1) == 1
        if T:
            rp, st, prec = self._fwd_config(R, x.dtype, A.dtype)
            _fwd_kernel[(triton.cdiv(T, self.BT_FWD),)](
                x, A, M, B, y, h, hm, T, D, N, R, x.stride(0), A.stride(0), M.stride(0) if M.shape[0] > 1 else 0,
                B.stride(0), y.stride(0), hm.stride(0), ACCUM=accum, STORE_H=store_h, BLOCK_T=self.BT_FWD,
                BLOCK_D=self.BD_FWD, BLOCK_N=self.BN_FWD, R_PAD=rp, PREC=prec, num_warps=4, num_stages=st)
        elif not accum:
            y.zero_()
        return y, (h if store_h else None), hm

    def backward(self, dy: Tensor, x: Tensor, A: Tensor, B: Tensor, M: Tensor, hm: Tensor, dx: Tensor | None,
                 need_dx: bool, need_dhm: bool) -> tuple[Tensor | None, Tensor, Tensor, Tensor | None]:
        """Returns ``(dx_lora, dA fp32 [R, D], dB fp32 [N, R], dhm fp32 or None)``; with ``dx``
        given, ``dh A`` is added into it in place and it is returned as ``dx_lora``."""
        dy, x, A, B, M, hm = _rows(dy), _rows(x), A.contiguous(), B.contiguous(), M.contiguous(), hm.contiguous()
        T, N = dy.shape
        D = x.shape[1]
        R = B.shape[1]
        grads = torch.zeros(R * D + N * R, device=dy.device, dtype=torch.float32)  # one memset for dA and dB
        da, db = grads[:R * D].view(R, D), grads[R * D:].view(N, R)
        dhm = torch.empty(T, R, device=dy.device, dtype=torch.float32) if need_dhm else grads
        accum = dx is not None
        if need_dx and dx is None:
            dx = torch.empty(T, D, device=dy.device, dtype=dy.dtype)
        if dx is not None:
            assert dx.stride(-1) == 1
        if T:
            rp, st, prec = self._bwd_config(R, dy.dtype, A.dtype, B.dtype)
            _bwd_kernel[(triton.cdiv(T, self.BT_BWD),)](
                dy, B, hm, M, x, A, dx if dx is not None else dy, da, db, dhm, T, D, N, R, dy.stride(0), B.stride(0),
                hm.stride(0), M.stride(0) if M.shape[0] > 1 else 0, x.stride(0), A.stride(0),
                dx.stride(0) if dx is not None else 0, DX_ACCUM=accum, WRITE_DX=dx is not None,
                WRITE_DHM=need_dhm, BLOCK_T=self.BT_BWD, BLOCK_D=self.BD_BWD, BLOCK_N=self.BN_BWD, R_PAD=rp,
                PREC=prec, num_warps=4, num_stages=st)
        elif dx is not None and not accum:
            dx.zero_()
        return dx, da, db, (dhm if need_dhm else None)

    @functools.lru_cache(maxsize=256)
    def _fwd_config(self, R: int, xdt: torch.dtype, adt: torch.dtype) -> tuple[int, int, str]:
        """``(R_PAD, num_stages, input precision)`` of the forward kernel (cached: host time)."""
        rp = _rpad(R)
        es, ea = torch.empty(0, dtype=xdt).element_size(), torch.empty(0, dtype=adt).element_size()
        return rp, _stages(es * self.BT_FWD * self.BD_FWD + ea * self.BD_FWD * rp, 4), _prec(xdt)

    @functools.lru_cache(maxsize=256)
    def _bwd_config(self, R: int, dt: torch.dtype, adt: torch.dtype, bdt: torch.dtype) -> tuple[int, int, str]:
        """``(R_PAD, num_stages, input precision)`` of the backward kernel (cached: host time)."""
        rp = _rpad(R)
        es = torch.empty(0, dtype=dt).element_size()
        ep = max(torch.empty(0, dtype=adt).element_size(), torch.empty(0, dtype=bdt).element_size())
        bw = max(self.BN_BWD, self.BD_BWD)
        return rp, _stages(es * self.BT_BWD * bw + ep * bw * rp, 3), _prec(dt)

    BLOCK_EW = 1024

    def act_mul(self, g: Tensor, u: Tensor, act: str) -> Tensor:
        """``act(g) * u`` in one pass (contiguous ``g``, ``u`` of one shape and dtype)."""
        h = torch.empty_like(g)
        n = g.numel()
        if n:
            _act_mul_fwd_kernel[(triton.cdiv(n, self.BLOCK_EW),)](g, u, h, n, ACT=_ACT_CODE[act], BLOCK=self.BLOCK_EW,
                                                                 num_warps=4)
        return h

    def act_mul_backward(self, dh: Tensor, g: Tensor, u: Tensor, act: str, need_g: bool, need_u: bool
                         ) -> tuple[Tensor | None, Tensor | None]:
        """``(dg, du)`` of ``h = act(g) * u`` for ``dh`` in one pass (act recomputed in registers)."""
        dg = torch.empty_like(g) if need_g else None
        du = torch.empty_like(u) if need_u else None
        n = g.numel()
        if n and (need_g or need_u):
            _act_mul_bwd_kernel[(triton.cdiv(n, self.BLOCK_EW),)](
                dh, g, u, g if dg is None else dg, u if du is None else du, n, ACT=_ACT_CODE[act], WRITE_DG=need_g,
                WRITE_DU=need_u, BLOCK=self.BLOCK_EW, num_warps=4)
        return dg, du


triton_ops = TritonOps()
