"""QLadder: a ladder layer equals a pre-LN nn.MultiheadAttention + MLP block; zero-init identity;
gradients; queries placed after each sample's valid patch tokens; key padding ignored."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmlora.projectors import (LadderLayer, ProjectorConfig, QLadder, QLadderConfig, append_after_valid,
                               build_projector)


def reference_layer(layer: LadderLayer, q, h, key_mask):
    """The same ladder step built from torch's nn.MultiheadAttention with copied weights."""
    d, dkv = layer.q_proj.in_features, layer.k_proj.in_features
    mha = nn.MultiheadAttention(d, layer.num_heads, kdim=dkv, vdim=dkv, batch_first=True)
    with torch.no_grad():
        if mha.in_proj_weight is not None:  # kdim == d: one packed [3d, d] weight
            mha.in_proj_weight.copy_(torch.cat([layer.q_proj.weight, layer.k_proj.weight, layer.v_proj.weight]))
        else:
            mha.q_proj_weight.copy_(layer.q_proj.weight)
            mha.k_proj_weight.copy_(layer.k_proj.weight)
            mha.v_proj_weight.copy_(layer.v_proj.weight)
        mha.in_proj_bias.copy_(torch.cat([layer.q_proj.bias, layer.k_proj.bias, layer.v_proj.bias]))
        mha.out_proj.weight.copy_(layer.o_proj.weight)
        mha.out_proj.bias.copy_(layer.o_proj.bias)
    hn = F.layer_norm(h, (dkv,), layer.ln_kv.weight, layer.ln_kv.bias)
    qn = F.layer_norm(q, (d,), layer.ln_q.weight, layer.ln_q.bias)
    q = q + mha(qn, hn, hn, key_padding_mask=~key_mask, need_weights=False)[0]
    m = F.layer_norm(q, (d,), layer.ln_mlp.weight, layer.ln_mlp.bias)
    return q + layer.fc2(F.gelu(layer.fc1(m)))


def test_ladder_layer_matches_torch_multihead_attention():
    torch.manual_seed(0)
    layer = LadderLayer(d=8, d_kv=12, num_heads=2, mlp_ratio=2.0, dropout=0.0, zero_init=False).eval()
    with torch.no_grad():  # non-trivial LayerNorm affine parameters
        for ln in (layer.ln_q, layer.ln_kv, layer.ln_mlp):
            ln.weight.uniform_(0.5, 1.5)
            ln.bias.uniform_(-0.2, 0.2)
    q = torch.randn(3, 5, 8)
    h = torch.randn(3, 7, 12)
    key_mask = torch.arange(7)[None] < torch.tensor([[7], [4], [1]])
    torch.testing.assert_close(layer(q, h, key_mask), reference_layer(layer, q, h, key_mask), atol=1e-5, rtol=1e-5)


def tiny_ladder(zero_init=True, L=3, d=8, n_q=4, kv_dims=None, seed=0):
    torch.manual_seed(seed)
    return QLadder(QLadderConfig(L, num_queries=n_q, num_heads=2, mlp_ratio=2.0, kv_dims=kv_dims,
                                 zero_init=zero_init), d)


def test_zero_init_is_identity_at_start_and_gradients_flow():
    lad = tiny_ladder(zero_init=True)
    hs = [torch.randn(2, 6, 8) for _ in range(3)]
    q = lad.run_queries(hs)
    torch.testing.assert_close(q, lad.queries.expand(2, -1, -1), rtol=0, atol=0)
    q2 = lad.run_queries([torch.randn(2, 6, 8) for _ in range(3)])
    torch.testing.assert_close(q, q2, rtol=0, atol=0)  # hidden states do not matter yet
    (q * torch.randn_like(q)).sum().backward()
    assert lad.queries.grad.abs().sum() > 0                     # residual path
    for layer in lad.layers:
        assert layer.o_proj.weight.grad.abs().sum() > 0         # zeroed projections still learn
        assert layer.fc2.weight.grad.abs().sum() > 0
        assert layer.q_proj.weight.grad.abs().sum() == 0        # behind a zero o_proj, as with LoRA's B = 0


def test_residual_path_and_dependence_on_hidden_states():
    lad = tiny_ladder(zero_init=False, L=2)
    hs = [torch.randn(2, 6, 8) for _ in range(2)]
    q = lad.run_queries(hs)
    # the ladder is q + f(q): recompute it layer by layer with the reference block
    ref = lad.queries.expand(2, -1, -1)
    for layer, h in zip(lad.layers, hs):
        ref = reference_layer(layer, ref, h, torch.ones(2, 6, dtype=torch.bool))
    torch.testing.assert_close(q, ref, atol=1e-5, rtol=1e-5)
    hs2 = [h.clone() for h in hs]
    hs2[1][0] += torch.randn_like(hs2[1][0])  # (a constant shift would vanish in LN_kv)
    q2 = lad.run_queries(hs2)
    assert not torch.allclose(q2[0], q[0]) and torch.allclose(q2[1], q[1])  # per-sample, via the hidden states
    # zero the attention and MLP outputs -> only the residual (identity) remains
    with torch.no_grad():
        for layer in lad.layers:
            for lin in (layer.o_proj, layer.fc2):
                lin.weight.zero_()
                lin.bias.zero_()
    torch.testing.assert_close(lad.run_queries(hs), lad.queries.expand(2, -1, -1), rtol=0, atol=0)


def test_padded_keys_are_ignored():
    lad = tiny_ladder(zero_init=False)
    x = torch.randn(2, 6, 8)
    mask = torch.arange(6)[None] < torch.tensor([[6], [3]])
    hs = [torch.randn(2, 6, 8) for _ in range(3)]
    out, m = lad(x, mask, hs)
    hs_noisy = [h.clone() for h in hs]
    for h in hs_noisy:
        h[1, 3:] = 100.0
    out2, _ = lad(x, mask, hs_noisy)
    torch.testing.assert_close(out, out2)
    # ... and sample 1 alone, unpadded, gives the same queries
    out_alone, _ = lad(x[1:, :3], None, [h[1:, :3] for h in hs])
    torch.testing.assert_close(out_alone[0], out[1, :3 + 4], atol=1e-5, rtol=1e-5)


def test_shared_hidden_mask_tensor_equals_per_layer_list():
    lad = tiny_ladder(zero_init=False)
    hs = [torch.randn(2, 7, 8) for _ in range(3)]
    hm = torch.arange(7)[None] < torch.tensor([[7], [5]])
    torch.testing.assert_close(lad.run_queries(hs, hm), lad.run_queries(hs, [hm, hm, hm]))
    assert not torch.allclose(lad.run_queries(hs, hm)[1], lad.run_queries(hs)[1])
    with pytest.raises(ValueError, match="mask of hidden_states"):
        lad.run_queries(hs, hm[:, :5])


def test_output_layout_queries_after_valid_tokens():
    lad = tiny_ladder(zero_init=False, n_q=4)
    x = torch.randn(3, 5, 8)
    lengths = [5, 2, 0]
    mask = torch.arange(5)[None] < torch.tensor(lengths)[:, None]
    hs = [torch.randn(3, 5, 8) for _ in range(3)]
    out, m = lad(x, mask, hs)
    q = lad.run_queries(hs, mask=mask)
    assert out.shape == (3, 9, 8) and m.shape == (3, 9)
    for b, L in enumerate(lengths):
        torch.testing.assert_close(out[b, :L], x[b, :L], rtol=0, atol=0)
        torch.testing.assert_close(out[b, L:L + 4], q[b])
        assert torch.all(out[b, L + 4:] == 0)
        assert m[b].tolist() == [True] * (L + 4) + [False] * (5 - L)
    assert torch.all(torch.isfinite(out))  # the sample with no valid key attends to nothing, no NaN


def test_append_after_valid_loop_reference():
    x = torch.randn(3, 4, 2)
    extra = torch.randn(3, 2, 2)
    lengths = [4, 1, 3]
    mask = torch.arange(4)[None] < torch.tensor(lengths)[:, None]
    out, m = append_after_valid(x, mask, extra)
    for b, L in enumerate(lengths):
        ref = torch.cat([x[b, :L], extra[b], torch.zeros(4 - L, 2)])
        torch.testing.assert_close(out[b], ref, rtol=0, atol=0)
    with pytest.raises(ValueError, match="right-padded"):
        append_after_valid(x, torch.tensor([[1, 0, 1, 1]] * 3, dtype=torch.bool), extra)


def test_kv_dims_per_layer_for_cnn_stages():
    lad = tiny_ladder(zero_init=False, L=2, kv_dims=(4, 12))
    hs = [torch.randn(2, 9, 4), torch.randn(2, 3, 12)]  # different widths and lengths per stage
    out, m = lad(torch.randn(2, 5, 8), None, hs)
    assert out.shape == (2, 9, 8) and m.all()


def test_errors_are_clear():
    lad = tiny_ladder(L=3)
    x = torch.randn(2, 6, 8)
    hs = [torch.randn(2, 6, 8) for _ in range(4)]
    with pytest.raises(ValueError, match=r"pass hidden_states\[1:\]"):
        lad(x, None, hs)
    with pytest.raises(TypeError, match="needs hidden_states"):
        lad(x, None, None)
    with pytest.raises(ValueError, match=r"hidden_states\[0\] must be"):
        lad(x, None, [torch.randn(2, 6, 5)] * 3)
    with pytest.raises(ValueError, match="width 8"):
        lad(torch.randn(2, 6, 4), None, hs[:3])
    with pytest.raises(ValueError, match="kv_dims"):
        QLadderConfig(2, kv_dims=(4,))
    with pytest.raises(ValueError, match="divisible"):
        QLadder(QLadderConfig(1, num_heads=3), 8)


def test_projector_with_qladder_end_to_end_gradients():
    torch.manual_seed(0)
    cfg = ProjectorConfig("none", (1,), hidden_dim=16, activation="gelu",
                          qladder=QLadderConfig(2, num_queries=3, num_heads=2))
    proj = build_projector(cfg, 8, 6)
    x = torch.randn(2, 5, 8)
    mask = torch.arange(5)[None] < torch.tensor([[5], [2]])
    hs = [torch.randn(2, 5, 8) for _ in range(2)]
    emb, m = proj(x, mask, hidden_states=hs)
    assert emb.shape == (2, 8, 6) and m.sum(1).tolist() == [8, 5]
    assert torch.equal(proj.num_tokens(torch.tensor([5, 2])), m.sum(1))
    emb.sum().backward()
    assert proj.qladder.queries.grad.abs().sum() > 0 and proj.mlp.fc1.weight.grad.abs().sum() > 0
    # a Matryoshka bank shares one QLadder across rates
    bank = build_projector(ProjectorConfig("stack", (2, 4), hidden_dim=8,
                                           qladder=QLadderConfig(2, num_queries=3, num_heads=2)), 8, 6)
    outs = bank.forward_all(x, mask, hidden_states=hs)
    assert {k: v[1].sum(1).tolist() for k, v in outs.items()} == {2: [4, 2], 4: [2, 1]}
    with pytest.raises(ValueError, match="tokens_per_step > 1 use rate 1"):
        bank(torch.randn(2, 6, 8), rate=2, hidden_states=[torch.randn(2, 6, 8)] * 2, tokens_per_step=3)
