"""Kernels for routed multi-LoRA. Each op has a pure-torch reference with the same signature.

Backends of :func:`lora_delta` / :func:`lora_linear` (``MMLORA_KERNELS`` or ``backend=``):

* ``torch``  — the pure-torch reference (always; the default on CPU);
* ``fused``  — fused autograd function on cuBLAS through torch (any device; the default on CUDA);
* ``triton`` — the same fused autograd function with Triton kernels (CUDA, when Triton imports).
"""
from __future__ import annotations

import importlib
import sys

# This folder is mmlora.kernels. With the checkout's root on sys.path (``python -m ...`` or pytest run from it) it is
# also found as the top-level ``kernels``, the name of Hugging Face's package that transformers imports (a dependency
# since transformers 5.25): that name is handed to the installed package (kernels/shadow.py).
_installed = importlib.import_module(".shadow", __name__).installed() if __name__ == "kernels" else None
if _installed is not None:
    sys.modules.pop("kernels.shadow", None)
else:
    from functools import partial

    import torch

    from .lora import (available_backends, backend_ops, forced_backend, lora_delta, lora_delta_reference, lora_linear,
                       lora_linear_reference, register_backend, resolve_backend)
    from .lora_fused import fused_lora_delta, fused_lora_linear, torch_ops

    __all__ = ["lora_delta", "lora_delta_reference", "lora_linear", "lora_linear_reference", "register_backend",
               "available_backends", "resolve_backend", "backend_ops", "forced_backend", "HAS_TRITON"]

    _TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

    try:  # Triton is optional: CPU-only installs and machines without a GPU use the reference
        from .lora_triton import triton_ops
        HAS_TRITON = True
    except Exception:  # noqa: BLE001 - ImportError, or a Triton that cannot initialise
        triton_ops = None
        HAS_TRITON = False

    # Registration order is the CUDA default order: ``fused`` (cuBLAS) first, because it beat the Triton
    # kernels in every eager comparison of benchmark runs 6 and 7 (docs/PERFORMANCE.md).
    register_backend("fused", lambda x: x.is_cuda, partial(fused_lora_delta, ops=torch_ops),
                     linear=partial(fused_lora_linear, ops=torch_ops), ops=torch_ops)
    if HAS_TRITON:
        register_backend("triton", lambda x: x.is_cuda and x.dtype in _TRITON_DTYPES,
                         partial(fused_lora_delta, ops=triton_ops), linear=partial(fused_lora_linear, ops=triton_ops),
                         ops=triton_ops)
