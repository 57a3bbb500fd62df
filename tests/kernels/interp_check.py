"""Checks the Triton kernels against the torch ops on the CPU through Triton's interpreter.
Run as a script (``TRITON_INTERPRET=1`` must be set before Triton defines the kernels)."""
from __future__ import annotations

import sys

import _interp  # noqa: F401  (sets TRITON_INTERPRET and the NumPy shim first)
import torch

from mmlora.kernels.lora_fused import TorchOps
from mmlora.kernels.lora_triton import TritonOps


def rel(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30))


def mixed_dtype_check(t: TritonOps, r: TorchOps) -> list:
    """fp16 activations with the fp32 parameters given raw (``params_any_dtype``): the kernels
    cast A/B tiles after loading; must equal TorchOps on pre-cast fp16 A/B."""
    assert t.params_any_dtype and not getattr(r, "params_any_dtype", False)
    bad = []
    g = torch.Generator().manual_seed(1)
    for T, D, N, R in [(42, 200, 64, 24), (123, 64, 200, 16)]:
        x, dy, dx = (torch.randn(s, generator=g).half() for s in ((T, D), (T, N), (T, D)))
        A, B = torch.randn(R, D, generator=g) / D ** 0.5, torch.randn(N, R, generator=g) / R ** 0.5
        M = torch.randn(T, R, generator=g)
        a = t.forward(x, A, B, M, None, False)
        b = r.forward(x, A.half(), B.half(), M, None, False)
        errs = [rel(a[0], b[0]), rel(a[2], b[2])]
        a = t.backward(dy, x, A, B, M, b[2], dx.clone(), True, False)
        b = r.backward(dy, x, A.half(), B.half(), M, b[2], dx.clone(), True, False)
        errs += [rel(a[0], b[0]), rel(a[1], b[1].float()), rel(a[2], b[2].float())]
        assert a[1].dtype == a[2].dtype == torch.float32
        if not all(e < 5e-3 for e in errs):
            bad.append((T, D, N, R, "fp16 x, fp32 params", errs))
    return bad


def act_mul_check(t: TritonOps) -> list:
    """The gated-MLP elementwise kernels against torch (act(g) * u and its backward)."""
    from mmlora.kernels.lora_mlp import ACTIVATIONS

    bad = []
    g0 = torch.Generator().manual_seed(2)
    for dt, tol in ((torch.float32, 1e-5), (torch.float16, 2e-3)):
        for act, (fwd, bwd) in ACTIVATIONS.items():
            g, u, dh = (torch.randn(7, 333, generator=g0).mul(3).to(dt) for _ in range(3))
            a = fwd(g)
            errs = [rel(t.act_mul(g, u, act), a * u)]
            dg, du = t.act_mul_backward(dh, g, u, act, True, True)
            errs += [rel(du, dh * a), rel(dg, bwd(dh * u, g))]
            only_g = t.act_mul_backward(dh, g, u, act, True, False)
            assert only_g[1] is None and torch.equal(only_g[0], dg)
            if not all(e < tol for e in errs):
                bad.append((str(dt), act, "act_mul", errs))
    return bad


def fused_mlp_check() -> list:
    """The fused gated MLP function on the Triton ops (LoRA kernels with raw fp32 parameters,
    elementwise kernels) against the same function on TorchOps: output and every gradient."""
    from mmlora.kernels.lora_fused import _Meta, coefficients, torch_ops
    from mmlora.kernels.lora_mlp import fused_gated_mlp
    from mmlora.kernels.lora_triton import triton_ops

    bad = []
    g0 = torch.Generator().manual_seed(3)
    T, F, N, ranks = 37, 96, 40, [8, 4]
    index = torch.randint(-1, 2, (T,), generator=g0, dtype=torch.int32)
    for act in ("silu", "gelu", "gelu_tanh"):
        base = [torch.randn(T, F, generator=g0), torch.randn(T, F, generator=g0)]
        params = [torch.randn(r, F, generator=g0) / F ** 0.5 for r in ranks] + \
            [torch.randn(N, r, generator=g0) / r ** 0.5 for r in ranks]
        W = torch.randn(N, F, generator=g0) / F ** 0.5
        dy = torch.randn(T, N, generator=g0)
        kept, M = coefficients(ranks, [2.0, 0.5], T, index, None, None, torch.device("cpu"))
        outs = []
        for ops in (triton_ops, torch_ops):
            g, u = (b.clone().requires_grad_(True) for b in base)
            ps = [p.clone().requires_grad_(True) for p in params]
            y = fused_gated_mlp(g, u, W, None, M, _Meta(ops, tuple(ranks), torch.float32), act, ps)
            (y * dy).sum().backward()
            outs.append([y, g.grad, u.grad] + [p.grad for p in ps])
        errs = [rel(a, b) for a, b in zip(*outs)]
        if not all(e < 1e-5 for e in errs):
            bad.append(("fused mlp", act, errs))
    return bad


def main() -> int:
    t, r = TritonOps(), TorchOps()
    torch.manual_seed(0)
    bad = []
    # (T, D, N, R): odd sizes, R=1 (padded to 16), R not a power of two, R=64, T=0
    for T, D, N, R in [(6, 64, 200, 1), (42, 200, 64, 24), (123, 576, 200, 16), (431, 64, 576, 64), (0, 64, 64, 8)]:
        x, A, B = torch.randn(T, D), torch.randn(R, D), torch.randn(N, R)
        dy, y, dx = torch.randn(T, N), torch.randn(T, N), torch.randn(T, D)
        for M in (torch.randn(T, R), torch.randn(1, R)):
            res = {}
            for base in (True, False):
                for store_h in (True, False):
                    a = t.forward(x, A, B, M, y.clone() if base else None, store_h)
                    b = r.forward(x, A, B, M, y.clone() if base else None, store_h)
                    res[f"fwd base={base} h={store_h}"] = [rel(a[0], b[0]), rel(a[2], b[2])] + (
                        [rel(a[1], b[1])] if store_h else [])
                    assert (a[1] is None) == (not store_h)
            hm = b[2]
            for mode in ("accum", "new", "none"):
                for need_dhm in (True, False):
                    dx_in = dx.clone() if mode == "accum" else None
                    a = t.backward(dy, x, A, B, M, hm, dx_in, mode != "none", need_dhm)
                    dx_in = dx.clone() if mode == "accum" else None
                    b = r.backward(dy, x, A, B, M, hm, dx_in, mode != "none", need_dhm)
                    errs = [rel(a[1], b[1]), rel(a[2], b[2])]
                    if mode != "none":
                        errs.append(rel(a[0], b[0]))
                    else:
                        assert a[0] is None and b[0] is None
                    if need_dhm:
                        errs.append(rel(a[3], b[3]))
                    res[f"bwd {mode} dhm={need_dhm}"] = errs
            for op, errs in res.items():
                if T and not all(e < 1e-5 for e in errs):
                    bad.append((T, D, N, R, tuple(M.shape), op, errs))
    bad += mixed_dtype_check(t, r)
    bad += act_mul_check(t)
    bad += fused_mlp_check()
    for b in bad:
        print("MISMATCH", b)
    if bad:
        return 1
    print("ALL OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
