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


def main() -> int:
    t, r = TritonOps(), TorchOps()
    torch.manual_seed(0)
    bad = []
    # (T, D, N, R): odd sizes, R=1 (padded to 16), R not a power of two, R=64
    for T, D, N, R in [(6, 64, 200, 1), (42, 200, 64, 24), (123, 576, 200, 16), (431, 64, 576, 64), (0, 64, 64, 8)]:
        x, A, B = torch.randn(T, D), torch.randn(R, D), torch.randn(N, R)
        dy, y, dx = torch.randn(T, N), torch.randn(T, N), torch.randn(T, D)
        for M in (torch.randn(T, R), torch.randn(1, R)):
            res = {}
            res["shrink"] = [rel(a, b) for a, b in zip(t.shrink(x, A, M), r.shrink(x, A, M))]
            h, hm = r.shrink(x, A, M)
            res["expand_"] = [rel(t.expand_(y.clone(), hm, B), r.expand_(y.clone(), hm, B))]
            res["expand"] = [rel(t.expand(hm, B), r.expand(hm, B))]
            res["dx_"] = [rel(t.dx_(dx.clone(), hm, A), r.dx_(dx.clone(), hm, A))]
            res["dx"] = [rel(t.dx(hm, A), r.dx(hm, A))]
            for need in (True, False):
                a, b = t.bwd_dy(dy, B, hm, M, need), r.bwd_dy(dy, B, hm, M, need)
                res[f"bwd_dy{need}"] = [rel(a[0], b[0]), rel(a[1], b[1])] + ([rel(a[2], b[2])] if need else [])
                assert (a[2] is None) == (not need)
            res["grad_a"] = [rel(t.grad_a(hm, x), r.grad_a(hm, x))]
            for op, errs in res.items():
                if T and not all(e < 1e-5 for e in errs):
                    bad.append((T, D, N, R, tuple(M.shape), op, errs))
    for b in bad:
        print("MISMATCH", b)
    if bad:
        return 1
    print("ALL OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
