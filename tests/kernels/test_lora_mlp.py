"""Fused gated MLP (kernels/lora_mlp.py, patched by mmlora.lora.attach) against the unpatched path.

Two tiny models built from the same seed with the same random adapters: one attached with
``fused_mlp=True`` (its MLP runs ``act(g) * u -> down + LoRA`` as one function that saves only
``g`` and ``u``), one with ``fused_mlp=False``. Forward and every gradient (input embeddings,
every adapter's A and B, soft routing weights) must agree, for every routing mode; the
saved-tensor count per MLP must drop from 4 (``g``, ``act(g)``, ``u``, ``h``) to 2.
"""
from __future__ import annotations

import pytest
import torch

from conftest import randomize_adapters, tiny_llm
from mmlora.kernels.lora_mlp import activation_kind
from mmlora.lora import LoRASpec, adapter_parameters, attach, detach, iter_adapters, lora_layers, merge, unmerge
from mmlora.routing import RoutingPlan, clear_plan, install_plan, routing

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
CUDA = torch.cuda.is_available()
B_, L_ = 3, 7  # batch, sequence: T = 21 tokens (not a multiple of anything in the model)


def _plan(mode: str):
    """(plan, adapter names) for a routing mode."""
    g = torch.Generator().manual_seed(5)
    if mode == "single":
        return RoutingPlan.single("a"), ["a"]
    if mode == "by_token":  # with -1 tokens
        return RoutingPlan.by_token(torch.randint(-1, 2, (B_, L_), generator=g), ["a", "b"]), ["a", "b"]
    if mode == "by_sample":
        return RoutingPlan.by_sample(["a", None, "b"]), ["a", "b"]
    if mode == "shared_specific":
        return RoutingPlan.shared_specific("s", ["a", None, "b"]), ["s", "a", "b"]
    if mode == "soft":
        w = torch.rand(B_, L_, 2, generator=g, dtype=torch.float64).requires_grad_(True)
        return RoutingPlan.soft(w, ["a", "b"]), ["a", "b"]
    raise ValueError(mode)


def _build(family, names, fused_mlp, dtype=torch.float64, device="cpu", spec=None, act=None, targets=TARGETS):
    model = tiny_llm(family)
    if act is not None:
        torch.manual_seed(0)
        cfg = model.config
        cfg.hidden_act = act
        model = type(model)(cfg).eval()
    specs = {n: spec or LoRASpec(4, 8) for n in names}
    if "b" in specs and spec is None:
        specs["b"] = LoRASpec(8, 8, use_rslora=True)  # mixed ranks and scalings
    attach(model, specs, targets, fused_mlp=fused_mlp)
    model.to(device=device, dtype=dtype)
    randomize_adapters(model, seed=3, std=0.2)
    model.train()
    return model


def _run(model, plan, emb, dy, installed=False):
    """logits and {param name: grad} plus the input and soft-weight gradients. ``installed``:
    the plan stays installed through backward (gradient checkpointing recomputes there)."""
    model.zero_grad(set_to_none=True)
    x = emb.detach().clone().requires_grad_(True)
    if plan.weights is not None:
        plan.weights.grad = None
    if installed:
        install_plan(model, plan)
        try:
            logits = model(inputs_embeds=x).logits
            (logits * dy).sum().backward()
        finally:
            clear_plan(model)
    else:
        with routing(model, plan):
            logits = model(inputs_embeds=x).logits
        (logits * dy).sum().backward()
    grads = {"x": x.grad}
    for path, name, ad in iter_adapters(model):
        grads[f"{path}.{name}.A"] = ad.A.grad
        grads[f"{path}.{name}.B"] = ad.B.grad
    if plan.weights is not None:
        grads["soft weights"] = plan.weights.grad.clone()
    return logits.detach(), grads


def _inputs(model, dtype, device):
    g = torch.Generator().manual_seed(11)
    d, v = model.config.hidden_size, model.config.vocab_size
    emb = torch.randn(B_, L_, d, generator=g).to(device=device, dtype=dtype)
    dy = torch.randn(B_, L_, v, generator=g).to(device=device, dtype=dtype)
    return emb, dy


def _compare(family, mode, backend, monkeypatch, dtype=torch.float64, device="cpu", tol=1e-9, act=None,
             targets=TARGETS):
    monkeypatch.setenv("MMLORA_KERNELS", backend)
    plan, names = _plan(mode)
    if plan.weights is not None:
        plan.weights = plan.weights.detach().to(device).requires_grad_(True)
    ref = _build(family, names, fused_mlp=False, dtype=dtype, device=device, act=act, targets=targets)
    fused = _build(family, names, fused_mlp=True, dtype=dtype, device=device, act=act, targets=targets)
    emb, dy = _inputs(ref, dtype, device)
    calls = []
    import mmlora.kernels.lora_mlp as mlora

    real = mlora.fused_gated_mlp
    monkeypatch.setattr(mlora, "fused_gated_mlp", lambda *a: calls.append(1) or real(*a))
    y_ref, g_ref = _run(ref, plan, emb, dy)
    assert not calls  # the unpatched model never takes the fused MLP
    y, g = _run(fused, plan, emb, dy)
    assert len(calls) == fused.config.num_hidden_layers  # every MLP took the fused path
    torch.testing.assert_close(y, y_ref, rtol=tol, atol=tol)
    assert set(g) == set(g_ref)
    for k in g_ref:
        assert g[k] is not None and g_ref[k] is not None, k
        torch.testing.assert_close(g[k], g_ref[k], rtol=tol, atol=tol, msg=k)
    return g


MODES = ["single", "by_token", "by_sample", "shared_specific", "soft"]


@pytest.mark.parametrize("family", ["llama", "qwen2"])
@pytest.mark.parametrize("mode", MODES)
def test_fused_mlp_matches_unpatched_path(family, mode, monkeypatch):
    """Forward and every gradient equal to the unpatched path (fp64 on the CPU, TorchOps)."""
    g = _compare(family, mode, "fused", monkeypatch)
    assert any(".mlp.down_proj." in k and g[k].abs().sum() > 0 for k in g)  # down's adapters got gradients


def test_new_soft_weights_on_a_used_plan_get_the_gradient(monkeypatch):
    """Assigning new routing weights to a plan that has already routed a forward: the next
    forward uses (and differentiates) the new tensor, not the cached resolution of the old one."""
    monkeypatch.setenv("MMLORA_KERNELS", "fused")
    plan, names = _plan("soft")
    model = _build("llama", names, fused_mlp=True)
    emb, dy = _inputs(model, torch.float64, "cpu")
    _run(model, plan, emb, dy)
    w_new = (plan.weights.detach() * 0.5 + 0.1).requires_grad_(True)
    plan.weights = w_new
    y, g = _run(model, plan, emb, dy)
    fresh = RoutingPlan.soft(w_new.detach().clone().requires_grad_(True), names)
    y_ref, g_ref = _run(model, fresh, emb, dy)
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(g["soft weights"], g_ref["soft weights"])


@pytest.mark.parametrize("act", ["gelu", "gelu_pytorch_tanh"])
def test_fused_mlp_gelu_activations(act, monkeypatch):
    _compare("llama", "by_token", "fused", monkeypatch, act=act)


def test_fused_mlp_with_adapters_on_down_proj_only(monkeypatch):
    g = _compare("qwen2", "shared_specific", "fused", monkeypatch, targets=["down_proj"])
    assert all(".mlp.down_proj." in k for k in g if k != "x")


def test_fused_mlp_under_autocast(monkeypatch):
    """fp32 model under CPU bf16 autocast (Accelerate mixed precision): the fused MLP computes
    in bf16 like the plain path does, same result within bf16 rounding."""
    import mmlora.kernels.lora_mlp as mlora

    monkeypatch.setenv("MMLORA_KERNELS", "fused")
    calls = []
    real = mlora._mlp_apply
    monkeypatch.setattr(mlora, "_mlp_apply", lambda *a: calls.append(a[0].dtype) or real(*a))
    plan, names = _plan("by_token")
    outs = []
    for fused_mlp in (False, True):
        model = _build("llama", names, fused_mlp=fused_mlp, dtype=torch.float32)
        emb, dy = _inputs(model, torch.float32, "cpu")
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outs.append(_run(model, plan, emb, dy))
    (y_ref, g_ref), (y, g) = outs
    assert calls == [torch.bfloat16] * model.config.num_hidden_layers  # fused, in the autocast dtype
    assert y.dtype == y_ref.dtype
    assert _rel(y, y_ref) < 2e-2
    for k in g_ref:
        assert _rel(g[k], g_ref[k]) < 3e-2, (k, _rel(g[k], g_ref[k]))


def test_fused_mlp_fp32_matches_reference_backend(monkeypatch):
    """fp32: the patched model under the fused backend against the pure-torch reference."""
    plan, names = _plan("shared_specific")
    monkeypatch.setenv("MMLORA_KERNELS", "torch")
    ref = _build("llama", names, fused_mlp=False, dtype=torch.float32)
    emb, dy = _inputs(ref, torch.float32, "cpu")
    y_ref, g_ref = _run(ref, plan, emb, dy)
    monkeypatch.setenv("MMLORA_KERNELS", "fused")
    fused = _build("llama", names, fused_mlp=True, dtype=torch.float32)
    y, g = _run(fused, plan, emb, dy)
    assert _rel(y, y_ref) < 1e-5
    for k in g_ref:
        assert _rel(g[k], g_ref[k]) < 1e-4, (k, _rel(g[k], g_ref[k]))


def _rel(a, b):
    """Relative L2 error."""
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def _saved_ffn_tensors(model, plan, emb, ffn):
    """Distinct saved-for-backward tensors of shape [..., ffn] with T * ffn elements."""
    T = emb.shape[0] * emb.shape[1]
    saved = {}

    def pack(t):
        if t.dim() and t.shape[-1] == ffn and t.numel() == T * ffn:  # (SDPA on CUDA saves 0-d RNG state)
            saved[t.data_ptr()] = t
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with routing(model, plan):
            model(inputs_embeds=emb.detach().requires_grad_(True)).logits.sum().backward()
    return saved


@pytest.mark.parametrize("mode", ["single", "by_token", "soft"])
def test_fused_mlp_saves_only_gate_and_up(mode, monkeypatch):
    monkeypatch.setenv("MMLORA_KERNELS", "fused")
    plan, names = _plan(mode)
    if plan.weights is not None:
        plan.weights = plan.weights.detach().float().requires_grad_(True)
    counts = {}
    for fused_mlp in (False, True):
        model = _build("llama", names, fused_mlp=fused_mlp, dtype=torch.float32)
        ffn, n_layers = model.config.intermediate_size, model.config.num_hidden_layers
        outs = []  # outputs of gate_proj and up_proj: what the fused path must save
        for mlp in (m for n, m in model.named_modules() if n.endswith(".mlp")):
            for proj in (mlp.gate_proj, mlp.up_proj):
                proj.register_forward_hook(lambda _m, _i, out: outs.append(out.data_ptr()))
        emb, _ = _inputs(model, torch.float32, "cpu")
        saved = _saved_ffn_tensors(model, plan, emb, ffn)
        counts[fused_mlp] = len(saved)
        if fused_mlp:
            assert set(saved) == set(outs)  # exactly g and u of every layer
    base = tiny_llm("llama").train()
    base.requires_grad_(False)
    emb, _ = _inputs(base, torch.float32, "cpu")
    counts["base"] = len(_saved_ffn_tensors(base, RoutingPlan.none(), emb, ffn))
    assert counts == {"base": 3 * n_layers, False: 4 * n_layers, True: 2 * n_layers}


def test_fused_mlp_falls_back_for_dropout_and_reference(monkeypatch):
    """Adapter dropout on down_proj (training) and the reference backend run the plain
    expression: same numbers as the unpatched model, same RNG stream, no fused call."""
    import mmlora.kernels.lora_mlp as mlora

    calls = []
    real = mlora.fused_gated_mlp
    monkeypatch.setattr(mlora, "fused_gated_mlp", lambda *a: calls.append(1) or real(*a))
    plan, names = _plan("single")
    for backend, spec in (("fused", LoRASpec(4, 8, dropout=0.3)), ("torch", LoRASpec(4, 8))):
        monkeypatch.setenv("MMLORA_KERNELS", backend)
        outs = []
        for fused_mlp in (False, True):
            model = _build("llama", names, fused_mlp=fused_mlp, spec=spec)
            emb, dy = _inputs(model, torch.float64, "cpu")
            torch.manual_seed(123)
            outs.append(_run(model, plan, emb, dy))
        torch.testing.assert_close(outs[1][0], outs[0][0], rtol=0, atol=0)
        for k in outs[0][1]:
            torch.testing.assert_close(outs[1][1][k], outs[0][1][k], rtol=0, atol=0)
    assert not calls


def test_only_gated_mlps_with_known_activations_are_patched():
    for family, want in (("llama", True), ("qwen2", True), ("phi3", False)):  # Phi-3: fused gate_up_proj
        model = tiny_llm(family)
        attach(model, {"a": LoRASpec(2, 4)}, TARGETS if family != "phi3" else "all-linear")
        mlps = [m for n, m in model.named_modules() if n.endswith(".mlp")]
        assert all(("forward" in m.__dict__) == want for m in mlps), family
    model = tiny_llm("llama")
    attach(model, {"a": LoRASpec(2, 4)}, ["q_proj", "gate_proj"])  # down_proj has no adapter: nothing to fuse
    assert not any("forward" in m.__dict__ for m in model.modules())
    model = tiny_llm("llama")
    model.config.hidden_act = "relu"
    relu = type(model)(model.config)
    attach(relu, {"a": LoRASpec(2, 4)}, TARGETS)
    assert not any("forward" in m.__dict__ for m in relu.modules())
    from torch import nn
    from transformers.activations import ACT2FN

    assert activation_kind(ACT2FN["silu"]) == "silu" and activation_kind(nn.SiLU()) == "silu"
    assert activation_kind(ACT2FN["gelu"]) == "gelu" and activation_kind(nn.GELU()) == "gelu"
    assert activation_kind(ACT2FN["gelu_pytorch_tanh"]) == "gelu_tanh"
    assert activation_kind(nn.GELU(approximate="tanh")) == "gelu_tanh"
    for other in ("relu", "gelu_python", "gelu_new", "quick_gelu", "gelu_python_tanh"):
        assert activation_kind(ACT2FN[other]) is None, other


def test_merge_and_detach_restore_the_original_logits(monkeypatch):
    monkeypatch.setenv("MMLORA_KERNELS", "fused")
    model = tiny_llm("llama")
    ids = torch.randint(0, 128, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        original = model(input_ids=ids).logits
        attach(model, {"a": LoRASpec(4, 8)}, TARGETS)
        assert sum("forward" in m.__dict__ for m in model.modules()) == model.config.num_hidden_layers
        with routing(model, RoutingPlan.single("a")):  # B = 0: the fused path adds exact zeros
            assert torch.equal(model(input_ids=ids).logits, original)
        randomize_adapters(model)
        with routing(model, RoutingPlan.single("a")):
            adapted = model(input_ids=ids).logits
        assert not torch.allclose(adapted, original)
        merge(model, "a")
        with routing(model, RoutingPlan.single("a")):  # merged: in the weights, not the kernels
            torch.testing.assert_close(model(input_ids=ids).logits, adapted, rtol=1e-4, atol=1e-5)
        unmerge(model, "a")
        with routing(model, RoutingPlan.none()):
            assert torch.equal(model(input_ids=ids).logits, original)
        merge(model, "a")
        detach(model)  # unmerges, unwraps, unpatches
        assert not lora_layers(model)
        assert not any("forward" in m.__dict__ or "_mmlora_fused_mlp" in m.__dict__ for m in model.modules())
        assert torch.equal(model(input_ids=ids).logits, original)


def test_fused_mlp_with_gradient_checkpointing_and_copies(monkeypatch):
    """The patched MLP under HF gradient checkpointing gives the same gradients; a patched model
    survives pickle and deepcopy (the copies' MLPs call their own submodules)."""
    import copy
    import pickle

    monkeypatch.setenv("MMLORA_KERNELS", "fused")
    plan, names = _plan("by_token")
    ref = _build("llama", names, fused_mlp=False)
    fused = _build("llama", names, fused_mlp=True)
    fused.gradient_checkpointing_enable()
    emb, dy = _inputs(ref, torch.float64, "cpu")
    y_ref, g_ref = _run(ref, plan, emb, dy)
    y, g = _run(fused, plan, emb, dy, installed=True)
    torch.testing.assert_close(y, y_ref, rtol=1e-9, atol=1e-9)
    for k in g_ref:
        torch.testing.assert_close(g[k], g_ref[k], rtol=1e-9, atol=1e-9, msg=k)
    fused = _build("llama", names, fused_mlp=True)  # (HF's checkpointing hooks do not pickle)
    for clone in (copy.deepcopy(fused), pickle.loads(pickle.dumps(fused))):
        mlp = clone.model.layers[0].mlp
        assert mlp.forward.module is mlp
        y2, g2 = _run(clone, plan, emb, dy)
        torch.testing.assert_close(y2, y_ref, rtol=1e-9, atol=1e-9)


# ------------------------------------------------------------------ CUDA (skip without a GPU)
def _gpu_backends():
    from mmlora.kernels import HAS_TRITON

    return ["fused"] + (["triton"] if HAS_TRITON else [])


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("backend", _gpu_backends())
@pytest.mark.parametrize("mode", MODES)
def test_gpu_bf16_fused_mlp_matches_unpatched(mode, backend, monkeypatch):
    """bf16 on CUDA: forward and every gradient within bf16 rounding of the unpatched path."""
    plan, names = _plan(mode)
    if plan.weights is not None:
        plan.weights = plan.weights.detach().float()
    monkeypatch.setenv("MMLORA_KERNELS", backend)
    outs = []
    for fused_mlp in (False, True):
        model = _build("llama", names, fused_mlp=fused_mlp, dtype=torch.bfloat16, device="cuda")
        for p in adapter_parameters(model):
            p.data = p.data.float()
        if plan.weights is not None:
            plan.weights = plan.weights.detach().cuda().requires_grad_(True)
        emb, dy = _inputs(model, torch.bfloat16, "cuda")
        outs.append(_run(model, plan, emb, dy))
    (y_ref, g_ref), (y, g) = outs
    assert _rel(y, y_ref) < 2e-2
    for k in g_ref:
        assert _rel(g[k], g_ref[k]) < 3e-2, (k, _rel(g[k], g_ref[k]))


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_gpu_bf16_fused_mlp_saves_only_gate_and_up(monkeypatch):
    monkeypatch.delenv("MMLORA_KERNELS", raising=False)  # the CUDA default backend
    plan, names = _plan("by_token")
    counts = {}
    for fused_mlp in (False, True):
        model = _build("llama", names, fused_mlp=fused_mlp, dtype=torch.bfloat16, device="cuda")
        emb, _ = _inputs(model, torch.bfloat16, "cuda")
        counts[fused_mlp] = len(_saved_ffn_tensors(model, plan, emb, model.config.intermediate_size))
    n = model.config.num_hidden_layers
    assert counts == {False: 4 * n, True: 2 * n}


def _layer_setup(device, dtype, mode):
    """One decoder layer of a patched model with the plan installed, and a step function:
    forward + backward through its q_proj and its fused MLP."""
    plan, names = _plan(mode)
    if plan.weights is not None:
        plan.weights = plan.weights.detach().to(device=device, dtype=torch.float32).requires_grad_(True)
    model = _build("llama", names, fused_mlp=True, dtype=dtype, device=device)
    for p in adapter_parameters(model):
        p.data = p.data.float()
    layer = model.model.layers[0]
    x = torch.randn(B_, L_, model.config.hidden_size, device=device, dtype=dtype, requires_grad=True)
    install_plan(model, plan)

    def step():
        y = layer.mlp(x) + layer.self_attn.q_proj(x).sum(-1, keepdim=True)
        y.float().pow(2).sum().backward()
    return model, layer, step


@pytest.mark.parametrize("mode", ["by_token", "soft"])
def test_layer_steps_cpu(mode, monkeypatch):
    """The steady-state body of the GPU no-sync test, on the CPU (fused backend)."""
    monkeypatch.setenv("MMLORA_KERNELS", "fused")
    model, layer, step = _layer_setup("cpu", torch.float32, mode)
    step()
    first = layer.mlp.down_proj._call
    step()
    assert layer.mlp.down_proj._call is first and first.kind == 1  # the cached _FUSED call is reused
    clear_plan(model)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("mode", ["single", "by_token", "by_sample", "soft"])
def test_gpu_steady_state_has_no_host_sync(mode, monkeypatch):
    """After the first step (Triton compilation, cached coefficients), forward + backward of the
    LoRA projections and the fused MLP never synchronise the host with the GPU (a sync would
    stall the launch queue of a host-bound step)."""
    monkeypatch.delenv("MMLORA_KERNELS", raising=False)
    model, _, step = _layer_setup("cuda", torch.bfloat16, mode)
    step()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        step()
        step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
        clear_plan(model)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("act", ["silu", "gelu", "gelu_tanh"])
def test_gpu_act_mul_kernels_match_torch(act, dtype):
    """The Triton elementwise passes (h = act(g) * u; du, dg) against torch's ops, odd sizes."""
    from mmlora.kernels import HAS_TRITON
    from mmlora.kernels.lora_mlp import ACTIVATIONS

    if not HAS_TRITON:
        pytest.skip("needs triton")
    from mmlora.kernels.lora_triton import triton_ops

    fwd, bwd = ACTIVATIONS[act]
    tol = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 2e-3}[dtype]
    gen = torch.Generator(device="cuda").manual_seed(0)
    for shape in ((6, 42), (123, 431), (3, 1029)):
        g, u, dh = (torch.randn(shape, device="cuda", generator=gen).mul(3).to(dtype) for _ in range(3))
        a = fwd(g)
        assert _rel(triton_ops.act_mul(g, u, act), a * u) < tol
        dg, du = triton_ops.act_mul_backward(dh, g, u, act, True, True)
        assert _rel(du, dh * a) < tol
        assert _rel(dg, bwd(dh * u, g)) < tol
