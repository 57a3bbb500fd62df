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
    for b in bad:
        print("MISMATCH", b)
    if bad:
        return 1
    print("ALL OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
