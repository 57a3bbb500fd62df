"""Fused routed multi-LoRA (kernels/lora_fused.py, kernels/lora_triton.py) against the reference.

Every case compares the forward and every gradient (x, A, B, soft weights; x_lora with
dropout-style separate adapter input) with ``lora_delta_reference`` evaluated in float64 on the
CPU. CPU runs the fused autograd function on torch ops (and the Triton kernels through Triton's
interpreter, in a subprocess); GPU tests (``-m gpu``) run both backends in fp32/bf16/fp16.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmlora.kernels import (HAS_TRITON, lora_delta, lora_delta_reference, lora_linear, lora_linear_reference,
                            resolve_backend)

CUDA = torch.cuda.is_available()
gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs CUDA")
# relative L2 error allowed against the float64 reference, per dtype
TOL = {torch.float64: 1e-10, torch.float32: 1e-4, torch.bfloat16: 2e-2, torch.float16: 5e-3}

# (T, d_in, d_out, ranks, routing)
CASES = [
    (6, 64, 200, [1], "shared"),                 # one adapter on every token, rank 1
    (42, 200, 64, [8, 8], "index"),              # hard routing with -1 tokens
    (123, 576, 200, [16, 8, 1], "index"),        # mixed ranks
    (431, 200, 576, [64, 16], "empty"),          # adapter 1 gets no token (empty segment)
    (123, 64, 64, [16, 16], "all_one"),          # one adapter takes every token
    (42, 200, 200, [8, 16, 8], "soft"),          # soft per-token weights (trainable)
    (431, 64, 200, [16, 8], "shared+index"),     # Matryoshka: shared 0 + routed
    (6, 576, 64, [8, 8], "soft+index+shared"),   # everything at once
]


def make_case(T, d_in, d_out, ranks, routing, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    K, r_max = len(ranks), max(ranks)
    x = torch.randn(T, d_in, generator=g)
    A = torch.randn(K, r_max, d_in, generator=g) / d_in ** 0.5
    B = torch.randn(K, d_out, r_max, generator=g) / r_max ** 0.5
    for k, r in enumerate(ranks):  # padding must never be read: poison it
        A[k, r:] = float("nan")
        B[k, :, r:] = float("nan")
    W = torch.randn(d_out, d_in, generator=g) / d_in ** 0.5
    bias = torch.randn(d_out, generator=g)
    scalings = [2.0 / r for r in ranks]
    index = weights = shared = None
    if "index" in routing:
        index = torch.randint(-1, K, (T,), generator=g, dtype=torch.int32)
    if routing == "empty":
        index = torch.randint(-1, 1, (T,), generator=g, dtype=torch.int32)  # only -1 and 0
    if routing == "all_one":
        index = torch.zeros(T, dtype=torch.int32)
    if "soft" in routing:
        weights = torch.rand(T, K, generator=g)
    if "shared" in routing:
        shared = [0]
    dy = torch.randn(T, d_out, generator=g)
    dev = dict(device=device)
    return dict(x=x.to(dtype=dtype, **dev), A=A.to(dtype=dtype, **dev), B=B.to(dtype=dtype, **dev),
                W=W.to(dtype=dtype, **dev), bias=bias.to(dtype=dtype, **dev), ranks=ranks, scalings=scalings,
                index=None if index is None else index.to(**dev),
                weights=None if weights is None else weights.to(dtype=dtype, **dev), shared=shared,
                dy=dy.to(dtype=dtype, **dev))


def _leaves(c, names):
    out = {}
    for n in names:
        if c.get(n) is not None:
            out[n] = c[n].detach().clone().requires_grad_(True)
    return out


def run_linear(c, backend, with_base=True, separate_lora_input=False, to64=False):
    """Forward + backward; returns (y, {name: grad})."""
    conv = (lambda t: t.detach().double().cpu()) if to64 else (lambda t: t)
    c = {k: (conv(v) if isinstance(v, torch.Tensor) and v.is_floating_point() else v) for k, v in c.items()}
    if to64 and c["index"] is not None:
        c["index"] = c["index"].cpu()
    leaves = _leaves(c, ["x", "A", "B", "weights"])
    x_lora = None
    if separate_lora_input:
        leaves["x_lora"] = (c["x"] * 0.5).detach().requires_grad_(True)
        x_lora = leaves["x_lora"]
    kw = dict(index=c["index"], weights=leaves.get("weights"), shared=c["shared"])
    if with_base:
        if backend == "ref":
            y = lora_linear_reference(leaves["x"], c["W"], c["bias"], leaves["A"], leaves["B"], c["ranks"],
                                      c["scalings"], x_lora=x_lora, **kw)
        else:
            y = lora_linear(leaves["x"], c["W"], c["bias"], leaves["A"], leaves["B"], c["ranks"], c["scalings"],
                            x_lora=x_lora, backend=backend, **kw)
    else:
        if backend == "ref":
            y = lora_delta_reference(leaves["x"], leaves["A"], leaves["B"], c["ranks"], c["scalings"], **kw)
        else:
            y = lora_delta(leaves["x"], leaves["A"], leaves["B"], c["ranks"], c["scalings"], backend=backend, **kw)
    (y.float() * c["dy"].float()).sum().backward()
    grads = {n: t.grad for n, t in leaves.items()}
    # padding rows/columns of A and B get no meaningful gradient: compare used slices only
    for n in ("A", "B"):
        g = grads[n]
        if g is not None:
            g = g.clone()
            for k, r in enumerate(c["ranks"]):
                if n == "A":
                    g[k, r:] = 0
                else:
                    g[k, :, r:] = 0
            grads[n] = g
    return y, grads


def rel(a, b):
    a, b = a.double().cpu(), b.double().cpu()
    assert torch.isfinite(a).all(), "non-finite values"
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def check(case, dtype, device, backend, with_base=True, separate=False):
    c = make_case(*case, dtype=dtype, device=device)
    y, g = run_linear(c, backend, with_base, separate)
    y_ref, g_ref = run_linear(c, "ref", with_base, separate, to64=True)
    tol = TOL[dtype]
    assert y.dtype == dtype and y.shape == y_ref.shape
    assert rel(y, y_ref) < tol, ("forward", rel(y, y_ref))
    for n, gr in g_ref.items():
        assert g[n] is not None, f"no gradient for {n}"
        assert rel(g[n], gr) < tol, (n, rel(g[n], gr))


# ------------------------------------------------------------------ CPU: fused function on torch ops
@pytest.mark.parametrize("case", CASES, ids=[f"T{c[0]}-d{c[1]}x{c[2]}-r{c[3]}-{c[4]}" for c in CASES])
@pytest.mark.parametrize("with_base", [True, False], ids=["linear", "delta"])
def test_fused_torch_ops_match_reference_cpu(case, with_base):
    check(case, torch.float64, "cpu", "fused", with_base=with_base)


def test_fused_separate_lora_input_cpu():
    """Dropout-style: the adapters see x_lora, the base sees x; both get their gradient."""
    check(CASES[2], torch.float64, "cpu", "fused", with_base=True, separate=True)


def test_fused_no_active_adapter_gives_base_cpu():
    c = make_case(42, 64, 64, [8], "index", torch.float64, "cpu")
    index = torch.full((42,), -1, dtype=torch.int32)
    y = lora_linear(c["x"], c["W"], c["bias"], c["A"], c["B"], [8], [1.0], index=index, backend="fused")
    torch.testing.assert_close(y, torch.nn.functional.linear(c["x"], c["W"], c["bias"]), rtol=0, atol=0)
    # routed to nobody (no index, no weights, no shared): the delta is exactly zero
    assert lora_delta(c["x"], c["A"].nan_to_num(), c["B"].nan_to_num(), [8], [1.0], backend="fused").abs().max() == 0


def _autocast_check(device, backend_under_test):
    c = make_case(42, 64, 96, [8, 4], "shared+index", torch.float32, device)
    outs = []
    for backend in ("torch", backend_under_test):
        x = c["x"].clone().requires_grad_(True)
        A = c["A"].nan_to_num().requires_grad_(True)
        B = c["B"].nan_to_num().requires_grad_(True)
        with torch.autocast(device, dtype=torch.bfloat16):
            y = lora_linear(x, c["W"], c["bias"], A, B, c["ranks"], c["scalings"], index=c["index"],
                            shared=c["shared"], backend=backend)
        assert y.dtype == torch.bfloat16
        y.float().pow(2).sum().backward()
        outs.append((y, x.grad, A.grad, B.grad))
    for a, b in zip(outs[1], outs[0]):
        assert rel(a, b) < 2e-2


def test_fused_under_autocast_cpu():
    """Under autocast (e.g. Accelerate mixed precision) the fused path computes in the autocast
    dtype like the base linear would, and matches the reference path under the same autocast."""
    _autocast_check("cpu", "fused")


def test_dispatch_cpu(monkeypatch):
    x = torch.randn(3, 4)
    monkeypatch.delenv("MMLORA_KERNELS", raising=False)
    assert resolve_backend(x) == "torch"                     # CPU: the reference
    assert resolve_backend(x, "fused") == "fused"            # explicit choice
    monkeypatch.setenv("MMLORA_KERNELS", "fused")
    assert resolve_backend(x) == "fused"
    assert resolve_backend(x, "torch") == "torch"            # the flag that forces the reference
    monkeypatch.setenv("MMLORA_KERNELS", "torch")
    assert resolve_backend(x) == "torch"
    with pytest.raises(ValueError, match="unknown LoRA backend"):
        resolve_backend(x, "nope")


def test_multilora_layer_uses_fused_path_and_matches(monkeypatch):
    """MultiLoRALinear through the fused backend equals the reference path (CPU, fp64)."""
    from mmlora.lora import LoRASpec, MultiLoRALinear
    from mmlora.routing import RoutingPlan, install_plan

    torch.manual_seed(0)
    base = torch.nn.Linear(40, 24, bias=True).double()
    base.requires_grad_(False)
    layer = MultiLoRALinear(base)
    layer.add_adapter("a", LoRASpec(4, 8))
    layer.add_adapter("b", LoRASpec(8, 8, use_rslora=True))
    for p in layer.adapters.parameters():
        torch.nn.init.normal_(p, std=0.3)
    layer.double()
    ids = torch.randint(-1, 2, (3, 7))
    install_plan(layer, RoutingPlan.by_token(ids, ["a", "b"]))
    x = torch.randn(3, 7, 40, dtype=torch.float64)
    calls = []
    import mmlora.lora as mlora

    real = mlora.fused_call
    monkeypatch.setattr(mlora, "fused_call", lambda *a: calls.append(1) or real(*a))
    outs, grads = [], []
    for backend in ("torch", "fused"):
        monkeypatch.setenv("MMLORA_KERNELS", backend)
        layer.zero_grad(set_to_none=True)
        xx = x.clone().requires_grad_(True)
        y = layer(xx)
        y.pow(2).sum().backward()
        outs.append(y)
        grads.append([xx.grad] + [p.grad for p in layer.adapters.parameters()])
    assert calls == [1]
    torch.testing.assert_close(outs[1], outs[0])
    for a, b in zip(grads[1], grads[0]):
        torch.testing.assert_close(a, b)


@pytest.mark.skipif(not HAS_TRITON, reason="needs triton")
def test_triton_kernels_in_interpreter_cpu():
    """The Triton kernels themselves, run on the CPU by Triton's interpreter (subprocess: the
    interpreter must be chosen before the kernels are defined)."""
    here = Path(__file__).parent
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(here) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, str(here / "interp_check.py")], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "ALL OK" in r.stdout


def test_training_same_loss_curve_cpu():
    from train_check import loss_curves

    ref, fused = loss_curves("cpu", torch.float64, backend="fused", steps=4)
    torch.testing.assert_close(torch.tensor(fused), torch.tensor(ref), rtol=1e-9, atol=1e-9)


# ------------------------------------------------------------------ GPU
GPU_BACKENDS = ["fused"] + (["triton"] if HAS_TRITON else [])
DTYPES = [torch.float32, torch.bfloat16, torch.float16]


@gpu
@needs_cuda
@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[-1])
@pytest.mark.parametrize("case", CASES, ids=[f"T{c[0]}-d{c[1]}x{c[2]}-r{c[3]}-{c[4]}" for c in CASES])
def test_gpu_matches_reference(case, dtype, backend):
    check(case, dtype, "cuda", backend, with_base=True)
    check(case, dtype, "cuda", backend, with_base=False)


@gpu
@needs_cuda
@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_gpu_separate_lora_input(backend):
    check(CASES[6], torch.bfloat16, "cuda", backend, separate=True)


@gpu
@needs_cuda
@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_gpu_under_autocast(backend):
    _autocast_check("cuda", backend)


@gpu
@needs_cuda
def test_gpu_default_backend_is_fast():
    x = torch.randn(2, 2, device="cuda")
    assert resolve_backend(x) == "fused"  # faster than triton in every eager benchmark row (runs 6, 7)


@gpu
@needs_cuda
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 3e-2)],
                         ids=["fp32", "bf16"])
def test_gpu_training_same_loss_curve(dtype, tol):
    from train_check import loss_curves

    ref, fused = loss_curves("cuda", dtype, backend=None, steps=20)
    ref, fused = torch.tensor(ref), torch.tensor(fused)
    assert ref[-1] < ref[0]  # it trains
    assert ((fused - ref).abs() / ref.abs()).max() < tol, (ref, fused)


def test_forced_backend_sets_and_restores_the_env(monkeypatch):
    from mmlora.kernels import forced_backend

    monkeypatch.setenv("MMLORA_KERNELS", "fused")
    x = torch.zeros(2, 3)
    with forced_backend("torch"):
        assert os.environ["MMLORA_KERNELS"] == "torch" and resolve_backend(x) == "torch"
        with forced_backend(None):
            assert "MMLORA_KERNELS" not in os.environ
        assert os.environ["MMLORA_KERNELS"] == "torch"
    assert os.environ["MMLORA_KERNELS"] == "fused"
    monkeypatch.delenv("MMLORA_KERNELS")
    with pytest.raises(RuntimeError), forced_backend("fused"):
        raise RuntimeError("boom")
    assert "MMLORA_KERNELS" not in os.environ
