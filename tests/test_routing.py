"""RoutingPlan resolution and the reference LoRA function."""
from __future__ import annotations

import pytest
import torch

from mmlora.kernels import lora_delta, lora_delta_reference
from mmlora.routing import RoutingPlan


def test_by_token_resolves_prompt_then_fill_for_decode_steps():
    tok = torch.tensor([[0, 1, -1], [1, 1, 0]])
    plan = RoutingPlan.by_token(tok, ["a", "b"], fill=[1, 0])
    r = plan.resolve((2, 3), offset=0)
    assert r.index.tolist() == [0, 1, -1, 1, 1, 0]
    r = plan.resolve((2, 1), offset=3)  # first decode step
    assert r.index.tolist() == [1, 0]
    r = plan.resolve((2, 5), offset=0)  # full recompute beyond the prompt
    assert r.index.tolist() == [0, 1, -1, 1, 1, 1, 1, 0, 0, 0]
    r = plan.resolve((6, 1), offset=4)  # beam search: rows repeated (repeat_interleave)
    assert r.index.tolist() == [1, 1, 1, 0, 0, 0]
    assert plan.resolve((6, 1), offset=4) is r  # cached


def test_default_fill_is_last_prompt_token_adapter():
    plan = RoutingPlan.by_token(torch.tensor([[0, 0, 1], [1, 1, 0]]), ["vis", "lang"])
    assert plan.resolve((2, 1), offset=3).index.tolist() == [1, 0]


def test_by_sample_any_length_and_uniform_batch_becomes_dense():
    plan = RoutingPlan.by_sample(["x", None, "y"])
    assert plan.names == ("x", "y")
    assert plan.resolve((3, 2)).index.tolist() == [0, 0, -1, -1, 1, 1]
    uniform = RoutingPlan.by_sample(["x", "x"]).resolve((2, 4))
    assert uniform.index is None and uniform.shared == (0,)
    none = RoutingPlan.by_sample([None, None]).resolve((2, 4))
    assert none.index is None and none.shared == ()


def test_shared_specific_and_errors():
    r = RoutingPlan.shared_specific("ms", "ss_4_2").resolve((1, 3))
    assert r.names == ("ms", "ss_4_2") and r.shared == (0, 1) and r.index is None
    with pytest.raises(ValueError, match="values must lie"):
        RoutingPlan.by_token(torch.tensor([[0, 3]]), ["a", "b"])
    with pytest.raises(ValueError, match="batch"):
        RoutingPlan.by_sample(["a", "b"]).resolve((3, 2))
    with pytest.raises(ValueError, match="duplicate"):
        RoutingPlan(names=("a", "a"))


def _dense_reference(x, A, B, ranks, scalings, index, weights, shared):
    """Every adapter on every token, weighted: the formula written out densely (float64)."""
    x = x.double()
    T, K = x.shape[0], A.shape[0]
    w = torch.zeros(T, K, dtype=torch.float64)
    if index is not None:
        for k in range(K):
            w[:, k] += (index == k).double()
    if weights is not None:
        w += weights.double()
    for k in shared or ():
        w[:, k] += 1
    out = torch.zeros(T, B.shape[1], dtype=torch.float64)
    for k in range(K):
        r = ranks[k]
        out += w[:, k:k + 1] * scalings[k] * (x @ A[k, :r].double().t() @ B[k, :, :r].double().t())
    return out


@pytest.mark.parametrize("T,d_in,d_out,ranks", [(6, 64, 40, [1, 8]), (42, 33, 17, [16, 4, 7]), (5, 8, 8, [3])])
def test_reference_matches_dense_formula(T, d_in, d_out, ranks):
    g = torch.Generator().manual_seed(T)
    K, r_max = len(ranks), max(ranks)
    x = torch.randn(T, d_in, generator=g)
    A = torch.randn(K, r_max, d_in, generator=g)
    B = torch.randn(K, d_out, r_max, generator=g)
    # garbage in the padding must never be read
    for k, r in enumerate(ranks):
        A[k, r:] = float("nan")
        B[k, :, r:] = float("nan")
    scal = [0.5 + k for k in range(K)]
    index = torch.randint(-1, K, (T,), generator=g, dtype=torch.int32)
    weights = torch.rand(T, K, generator=g)
    for args in [(index, None, None), (None, weights, None), (None, None, [K - 1]), (index, weights, [0])]:
        out = lora_delta(x, A, B, ranks, scal, *args)
        ref = _dense_reference(x, A, B, ranks, scal, *args)
        assert torch.allclose(out.double(), ref, atol=1e-4, rtol=1e-4)
    assert torch.equal(lora_delta_reference(x, A, B, ranks, scal, torch.full((T,), -1, dtype=torch.int32)),
                       torch.zeros(T, d_out))


def test_lora_delta_validates_and_forces_backend(monkeypatch):
    x, A, B = torch.randn(4, 8), torch.randn(2, 3, 8), torch.randn(2, 5, 3)
    with pytest.raises(ValueError, match="ranks"):
        lora_delta(x, A, B, [3, 4], [1.0, 1.0], shared=[0])
    with pytest.raises(ValueError, match="unknown LoRA backend"):
        lora_delta(x, A, B, [3, 3], [1.0, 1.0], shared=[0], backend="nope")
    calls = []
    from mmlora import kernels

    kernels.register_backend("spy", lambda t: True, lambda *a: calls.append(1) or lora_delta_reference(*a))
    monkeypatch.delenv("MMLORA_KERNELS", raising=False)  # the device default, whatever the caller's environment says
    try:
        lora_delta(x, A, B, [3, 3], [1.0, 1.0], shared=[0])
        assert calls == [1]
        monkeypatch.setenv("MMLORA_KERNELS", "torch")  # forces the reference
        lora_delta(x, A, B, [3, 3], [1.0, 1.0], shared=[0])
        assert calls == [1]
    finally:
        kernels.lora._BACKENDS.pop("spy")


def test_cli_help_and_version(capsys):
    from mmlora.cli import main

    assert main([]) == 0
    assert "assets" in capsys.readouterr().out
    assert main(["--version"]) == 0


def test_layer_list_cache_follows_new_layers():
    from torch import nn

    from mmlora.lora import LoRASpec, attach
    from mmlora.routing import _lora_layers

    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    attach(model, {"a": LoRASpec(1, 1)}, ["0"])
    assert len(_lora_layers(model)) == 1
    assert _lora_layers(model) is _lora_layers(model)  # cached: no walk per forward
    attach(model, {"a": LoRASpec(1, 1)}, ["1"])
    assert len(_lora_layers(model)) == 2  # a new layer anywhere invalidates the cache


def test_used_names_are_the_adapters_some_token_takes():
    plan = RoutingPlan.by_token(torch.tensor([[0, 0, -1]]), ["vis", "lang", "img"])
    assert plan.used_names() == {"vis"}  # "lang" only for generated tokens, "img" for none
    assert RoutingPlan.by_sample(["a", None, "b"]).used_names() == {"a", "b"}
    assert RoutingPlan.shared_specific("ms", "ss_4_2").used_names() == {"ms", "ss_4_2"}
    w = torch.zeros(1, 2, 3)
    w[0, 1, 2] = 0.5
    assert RoutingPlan.soft(w, ["x", "y", "z"]).used_names() == {"z"}
    assert RoutingPlan.none().used_names() == set()
