"""MLP projector, single-rate projector, Matryoshka bank (picks the right rate), config and builder."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from mmlora.projectors import (PRESETS, MLPProjector, Projector, ProjectorBank, ProjectorConfig, QLadderConfig,
                               build_projector, project_features)


@pytest.mark.parametrize("act,fn", [("relu", F.relu), ("gelu", F.gelu)])
def test_mlp_matches_formula(act, fn):
    torch.manual_seed(0)
    mlp = MLPProjector(12, 5, hidden=9, activation=act)
    x = torch.randn(2, 3, 12)
    ref = F.linear(fn(F.linear(x, mlp.fc1.weight, mlp.fc1.bias)), mlp.fc2.weight, mlp.fc2.bias)
    torch.testing.assert_close(mlp(x), ref)
    with pytest.raises(ValueError, match="activation"):
        MLPProjector(4, 4, activation="tanh")


def test_init_scale_shrinks_only_the_last_layer_and_the_outputs_by_that_factor():
    cfg = ProjectorConfig("stack", (2,), hidden_dim=16)
    torch.manual_seed(3)
    ref = build_projector(cfg, 6, 10)
    torch.manual_seed(3)
    small = build_projector(dataclasses.replace(cfg, init_scale=0.1), 6, 10)
    torch.testing.assert_close(small.mlp.fc1.weight, ref.mlp.fc1.weight)
    torch.testing.assert_close(small.mlp.fc2.weight, 0.1 * ref.mlp.fc2.weight)
    torch.testing.assert_close(small.mlp.fc2.bias, 0.1 * ref.mlp.fc2.bias)
    x, mask = torch.randn(2, 8, 6), torch.ones(2, 8, dtype=torch.bool)
    torch.testing.assert_close(small(x, mask)[0], 0.1 * ref(x, mask)[0])
    bank = build_projector(dataclasses.replace(cfg, rates=(2, 4), init_scale=0.5), 6, 10)
    assert all(p.mlp.fc2.weight.abs().max() <= 0.5 / 16 ** 0.5 for p in bank.projectors.values())


def test_llama_avsr_projector_layout_and_parameter_count():
    D, k, h, d = 8, 4, 16, 10
    proj = build_projector(ProjectorConfig("stack", (k,), hidden_dim=h, activation="relu"), D, d)
    assert isinstance(proj, Projector) and proj.rates == (k,)
    assert (proj.mlp.fc1.in_features, proj.mlp.fc1.out_features, proj.mlp.fc2.out_features) == (k * D, h, d)
    assert sum(p.numel() for p in proj.parameters()) == (k * D * h + h) + (h * d + d)
    assert sorted(proj.state_dict()) == ["mlp.fc1.bias", "mlp.fc1.weight", "mlp.fc2.bias", "mlp.fc2.weight"]


def test_projector_output_is_mlp_of_stacked_frames_and_zero_on_padding():
    torch.manual_seed(1)
    proj = build_projector(ProjectorConfig("stack", (2,), hidden_dim=7), 3, 4)
    x = torch.randn(2, 9, 3)
    mask = torch.arange(9)[None] < torch.tensor([[9], [5]])
    emb, m = proj(x, mask)
    assert emb.shape == (2, 4, 4) and m.sum(1).tolist() == [4, 2]
    ref = proj.mlp(x[0, :8].reshape(4, 6))
    torch.testing.assert_close(emb[0], ref)
    torch.testing.assert_close(emb[1, :2], proj.mlp(x[1, :4].reshape(2, 6)))
    assert torch.all(emb[1, 2:] == 0)
    assert proj.num_tokens(9) == 4 and proj.num_tokens(torch.tensor([9, 5])).tolist() == [4, 2]
    with pytest.raises(KeyError, match="single rate 2"):
        proj(x, mask, rate=4)


def make_bank(rates=(2, 4, 8), D=3, d=5, qladder=None, kind="stack"):
    """A bank whose per-rate MLPs have distinct deterministic weights (a ramp scaled by the rate)."""
    bank = build_projector(ProjectorConfig(kind, rates, hidden_dim=6, qladder=qladder), D, d)
    with torch.no_grad():
        for k in bank.rates:
            for p in bank.get(k).mlp.parameters():
                p.copy_(torch.linspace(-1, 1, p.numel()).view_as(p) * k / 8)
    return bank


@pytest.mark.parametrize("kind", ["stack", "avgpool"])
def test_bank_picks_the_projector_of_the_rate(kind):
    # avgpool: every rate's MLP has the same input width, so a wrong pick would not fail loudly
    bank = make_bank(kind=kind)
    assert isinstance(bank, ProjectorBank) and bank.rates == (2, 4, 8)
    calls: list[int] = []
    for k in bank.rates:
        bank.get(k).mlp.register_forward_hook(lambda mod, inp, out, k=k: calls.append(k))
    x = torch.randn(2, 17, 3)
    mask = torch.arange(17)[None] < torch.tensor([[17], [11]])
    outs = {}
    for k in (4, 2, 8):
        outs[k] = bank(x, mask, rate=k)
        assert calls[-1] == k
    assert calls == [4, 2, 8]
    for k, (emb, m) in outs.items():  # reference: rate k's compressor and weights, applied by hand
        z, mz = bank.get(k).compressor(x, mask)
        w = bank.get(k).mlp
        ref = F.linear(F.relu(F.linear(z, w.fc1.weight, w.fc1.bias)), w.fc2.weight, w.fc2.bias) * mz[..., None]
        torch.testing.assert_close(emb, ref)
        assert torch.equal(m, mz) and emb.shape[1] == 17 // k
        if kind == "avgpool":  # another rate's weights on the same tokens give something else
            other = bank.get(2 if k != 2 else 4).mlp
            assert not torch.allclose(emb[0], other(z)[0])


def test_bank_forward_all_equals_each_rate():
    bank = make_bank()
    x = torch.randn(2, 16, 3)
    mask = torch.arange(16)[None] < torch.tensor([[16], [9]])
    all_out = bank.forward_all(x, mask)
    assert sorted(all_out) == [2, 4, 8]
    for k, (emb, m) in all_out.items():
        e2, m2 = bank(x, mask, rate=k)
        torch.testing.assert_close(emb, e2)
        assert torch.equal(m, m2)
        assert torch.equal(bank.num_tokens(torch.tensor([16, 9]), rate=k), m.sum(1))


def test_bank_unknown_rate_is_a_clear_error():
    bank = make_bank((4, 16))
    x = torch.randn(1, 32, 3)
    with pytest.raises(KeyError, match=r"rate 8 is not in this projector bank; available rates: \[4, 16\]"):
        bank(x, rate=8)
    with pytest.raises(KeyError, match="pass rate="):
        bank(x)


def test_bank_state_dict_keys_and_gradients_reach_only_the_used_rate():
    bank = make_bank((4, 16))
    assert {k.split(".")[1] for k in bank.state_dict()} == {"4", "16"}
    emb, _ = bank(torch.randn(2, 32, 3), rate=16)
    emb.sum().backward()
    assert bank.get(16).mlp.fc1.weight.grad is not None
    assert bank.get(4).mlp.fc1.weight.grad is None


def test_bank_construction_errors():
    with pytest.raises(ValueError, match="at least one rate"):
        ProjectorBank({})
    p = build_projector(ProjectorConfig("stack", (2,), hidden_dim=4), 3, 5)
    with pytest.raises(ValueError, match="rate 4 compresses at rate 2"):
        ProjectorBank({4: p})


@pytest.mark.parametrize("kind", ["stack", "avgpool", "conv"])
def test_builder_all_compressors_in_a_bank(kind):
    cfg = ProjectorConfig(kind, (2, 5), remainder="keep", hidden_dim=8, conv_dim=4)
    bank = build_projector(cfg, 6, 7)
    x = torch.randn(3, 11, 6)
    mask = torch.arange(11)[None] < torch.tensor([[11], [7], [1]])
    for k in (2, 5):
        emb, m = bank(x, mask, rate=k)
        assert emb.shape == (3, -(-11 // k), 7)
        assert m.sum(1).tolist() == [-(-L // k) for L in (11, 7, 1)]


@pytest.mark.parametrize("bad,match", [
    (dict(compressor="pool"), "compressor"),
    (dict(rates=()), "empty"),
    (dict(rates=(4, 4)), "duplicates"),
    (dict(rates=(0,)), "rates must be >= 1"),
    (dict(compressor="none", rates=(2,)), "rates=\\(1,\\)"),
    (dict(remainder="pad"), "remainder"),
    (dict(activation="tanh"), "activation"),
    (dict(hidden_dim=0), "hidden_dim"),
    (dict(init_scale=0.0), "init_scale"),
    (dict(compressor="conv", rates=(2, 4), conv_kernel=3), "conv_kernel"),
])
def test_config_validation(bad, match):
    with pytest.raises(ValueError, match=match):
        ProjectorConfig(**bad)


def test_config_from_dict_round_trip_and_unknown_key():
    cfg = ProjectorConfig("avgpool", (4, 16), hidden_dim=32, qladder=QLadderConfig(2, num_queries=4, num_heads=1))
    d = cfg.to_dict()
    assert d["rates"] == [4, 16] and d["qladder"]["num_queries"] == 4
    back = ProjectorConfig.from_dict(d)
    assert back == cfg
    with pytest.raises(ValueError, match=r"audio_projector: unknown projector field\(s\) \['rate'\]"):
        ProjectorConfig.from_dict({"rate": 4}, where="audio_projector")
    with pytest.raises(ValueError, match=r"qladder: unknown field"):
        ProjectorConfig.from_dict({"qladder": {"num_layers": 2, "queries": 3}})


def test_presets_build_and_override():
    assert ProjectorConfig.from_name("llama-avsr-audio").rates == (4,)
    assert ProjectorConfig.from_name("llama-mtsk-video").rates == (2, 5)
    assert ProjectorConfig.from_name("llama-avsr-audio", hidden_dim=8).hidden_dim == 8
    with pytest.raises(KeyError, match="unknown projector preset"):
        ProjectorConfig.from_name("nope")
    for name, cfg in PRESETS.items():
        small = dataclasses.replace(cfg, hidden_dim=8 if cfg.hidden_dim else None)
        if name == "arcana":
            small = dataclasses.replace(small, qladder=QLadderConfig(2, num_queries=3, num_heads=2))
        proj = build_projector(small, 4, 6)
        x = torch.randn(1, 20, 4)
        hs = [torch.randn(1, 20, 4) for _ in range(2)] if small.qladder else None
        for k in proj.rates:
            emb, m = proj(x, rate=k, hidden_states=hs)
            assert emb.shape[-1] == 6 and emb.shape[1] == proj.num_tokens(20, rate=k)
    phi = build_projector(ProjectorConfig.from_name("phi4mm"), 4, 6)
    assert phi.mlp.fc1.out_features == 6  # hidden_dim None -> d_llm


def test_build_projector_rejects_wrong_types():
    with pytest.raises(TypeError, match="ProjectorConfig"):
        build_projector({"compressor": "stack"}, 4, 4)
    with pytest.raises(ValueError, match="d_in and d_llm"):
        build_projector(ProjectorConfig(), 0, 4)


def test_project_features_reads_a_features_object():
    from types import SimpleNamespace

    torch.manual_seed(0)
    proj = build_projector(ProjectorConfig("avgpool", (2, 4), hidden_dim=8), 3, 5)
    x = torch.randn(2, 4 * 3, 3)
    mask = (torch.arange(4)[None] < torch.tensor([[4], [3]])).repeat_interleave(3, dim=1)
    feats = SimpleNamespace(x=x, mask=mask, tokens_per_step=3, hidden_states=None, hidden_mask=None)
    emb, m = project_features(proj, feats, rate=2)
    ref, ref_m = proj(x, mask, rate=2, tokens_per_step=3)
    torch.testing.assert_close(emb, ref)
    assert torch.equal(m, ref_m) and m.sum(1).tolist() == [6, 3]
    try:  # the encoders' real Features class, when present
        from mmlora.encoders.base import Features
    except ImportError:
        return
    emb2, m2 = project_features(proj, Features(x, mask, None, tokens_per_step=3), rate=2)
    torch.testing.assert_close(emb2, ref)
