"""Compressors against per-sample loop references and torch built-ins (stack = view, avgpool =
nn.AvgPool1d, conv = stack + Linear), with odd lengths, padded samples and both remainder rules."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmlora.projectors import AvgPoolCompressor, ConvCompressor, IdentityCompressor, StackCompressor


def ref_windows(xs: torch.Tensor, k: int, K: int, remainder: str) -> list[list[torch.Tensor]]:
    """Windows of one unpadded sample ``xs [L, D]`` by the rule in the docstring, as frame lists."""
    L = xs.shape[0]
    out, j = [], 0
    while True:
        start = j * k
        if remainder == "drop" and start + K > L:
            break
        if remainder == "keep" and start >= L:
            break
        out.append([xs[t] for t in range(start, min(start + K, L))])
        j += 1
    return out


def ref_token(kind: str, frames: list[torch.Tensor], K: int, D: int, conv: nn.Conv1d | None = None) -> torch.Tensor:
    full = frames + [torch.zeros(D)] * (K - len(frames))  # missing frames are zeros (keep mode)
    if kind == "stack":
        return torch.cat(full)
    if kind == "avgpool":
        return torch.stack(frames).mean(0)
    w = conv.weight  # [D_out, D, K]
    return conv.bias + sum(w[:, :, i] @ full[i] for i in range(K))


def make(kind: str, k: int, remainder: str, D: int, kernel: int | None = None):
    torch.manual_seed(3)
    if kind == "stack":
        return StackCompressor(k, remainder)
    if kind == "avgpool":
        return AvgPoolCompressor(k, remainder)
    return ConvCompressor(k, D, d_out=5, kernel=kernel, remainder=remainder)


CASES = [  # kind, k, kernel, remainder, N, lengths
    ("stack", 4, None, "drop", 13, [13, 9, 3]),
    ("stack", 4, None, "keep", 13, [13, 9, 3]),
    ("stack", 2, None, "drop", 7, [7, 6]),
    ("stack", 3, None, "keep", 9, [9, 1]),
    ("avgpool", 4, None, "drop", 13, [13, 9, 3]),
    ("avgpool", 4, None, "keep", 13, [13, 9, 3]),
    ("avgpool", 5, None, "keep", 11, [11, 6]),
    ("conv", 3, None, "drop", 11, [11, 8, 2]),
    ("conv", 3, None, "keep", 11, [11, 8, 2]),
    ("conv", 2, 5, "drop", 12, [12, 7, 4]),
    ("conv", 2, 5, "keep", 12, [12, 7, 4]),
]


@pytest.mark.parametrize("kind,k,kernel,remainder,N,lengths", CASES)
def test_padded_batch_matches_per_sample_reference(kind, k, kernel, remainder, N, lengths):
    D = 6
    comp = make(kind, k, remainder, D, kernel)
    K = comp.window
    torch.manual_seed(0)
    x = torch.randn(len(lengths), N, D)
    mask = torch.arange(N)[None] < torch.tensor(lengths)[:, None]
    x_noisy = torch.where(mask[..., None], x, torch.full_like(x, float("nan")))  # padding must not leak
    out, new_mask = comp(x_noisy, mask)
    assert out.shape[:2] == new_mask.shape
    assert new_mask.shape[1] == comp.out_len(N)
    for b, L in enumerate(lengths):
        wins = ref_windows(x[b, :L], k, K, remainder)
        assert int(new_mask[b].sum()) == len(wins) == comp.out_len(L)
        assert new_mask[b, :len(wins)].all() and not new_mask[b, len(wins):].any()  # prefix stays prefix
        for j, frames in enumerate(wins):
            ref = ref_token(kind, frames, K, D, getattr(comp, "conv", None))
            torch.testing.assert_close(out[b, j], ref, atol=1e-5, rtol=1e-5)
        assert torch.all(out[b, len(wins):] == 0)
    lens_t = torch.tensor(lengths)
    assert torch.equal(comp.out_len(lens_t), new_mask.sum(1))


def test_stack_equals_view_without_padding():
    x = torch.randn(2, 12, 5)
    out, m = StackCompressor(4)(x, None)
    torch.testing.assert_close(out, x.view(2, 3, 20), rtol=0, atol=0)
    assert m.all()


def test_stack_drops_remainder_of_odd_length():
    x = torch.randn(1, 10, 3)
    out, m = StackCompressor(4)(x)
    assert out.shape == (1, 2, 12) and m.all()
    torch.testing.assert_close(out, x[:, :8].reshape(1, 2, 12))


def test_avgpool_equals_torch_avgpool1d():
    x = torch.randn(3, 17, 4)
    out, _ = AvgPoolCompressor(4)(x)
    ref = nn.AvgPool1d(4, 4)(x.transpose(1, 2)).transpose(1, 2)
    torch.testing.assert_close(out, ref)


def test_conv_equals_stack_then_linear():
    D, k, Do = 4, 3, 7
    conv = ConvCompressor(k, D, d_out=Do)
    x = torch.randn(2, 10, D)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 8:] = False
    out, m = conv(x, mask)
    stacked, ms = StackCompressor(k)(x, mask)
    lin_w = conv.conv.weight.permute(0, 2, 1).reshape(Do, k * D)  # [D_out, k·D], frame-major like stack
    ref = F.linear(stacked, lin_w, conv.conv.bias) * ms[..., None]
    assert torch.equal(m, ms)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("comp", [StackCompressor(4), AvgPoolCompressor(4), ConvCompressor(4, 3, kernel=6)])
def test_shorter_than_a_window_gives_zero_tokens(comp):
    x = torch.randn(2, 3, 3)
    out, m = comp(x)
    assert out.shape[:2] == (2, 0) and m.shape == (2, 0)
    assert comp.out_len(3) == 0


def test_padding_gets_no_gradient():
    for comp in (StackCompressor(3, "keep"), AvgPoolCompressor(3, "keep"), ConvCompressor(3, 4, remainder="keep")):
        x = torch.randn(2, 8, 4, requires_grad=True)
        mask = torch.ones(2, 8, dtype=torch.bool)
        mask[0, 5:] = False
        out, _ = comp(x, mask)
        out.pow(2).sum().backward()
        assert torch.all(x.grad[0, 5:] == 0)
        assert torch.all(x.grad[0, :5].abs().sum(-1) > 0)


def test_identity_compressor():
    x = torch.randn(2, 5, 3)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    out, m = IdentityCompressor()(x, mask)
    assert torch.equal(m, mask)
    torch.testing.assert_close(out, x * mask[..., None])
    with pytest.raises(ValueError, match="rate 1"):
        IdentityCompressor(2)


def test_out_dims():
    assert StackCompressor(4).out_dim(384) == 1536
    assert AvgPoolCompressor(4).out_dim(384) == 384
    assert ConvCompressor(2, 384, d_out=100).out_dim(384) == 100


def test_bad_inputs_raise_clear_errors():
    comp = StackCompressor(2)
    with pytest.raises(ValueError, match=r"\[B, N, D\]"):
        comp(torch.randn(4, 5))
    with pytest.raises(ValueError, match="mask must have shape"):
        comp(torch.randn(2, 4, 3), torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(TypeError, match="mask must be bool"):
        comp(torch.randn(2, 4, 3), torch.ones(2, 4))
    with pytest.raises(ValueError, match="remainder"):
        StackCompressor(2, "pad")
    with pytest.raises(ValueError, match="rate must be >= 1"):
        AvgPoolCompressor(0)
    with pytest.raises(ValueError, match="window"):
        ConvCompressor(4, 3, kernel=2)
    with pytest.raises(ValueError, match="width"):
        ConvCompressor(2, 3)(torch.randn(1, 4, 5))


@pytest.mark.parametrize("kind,remainder", [("stack", "drop"), ("avgpool", "keep"), ("conv", "drop")])
def test_spatial_grid_compresses_over_time_per_position(kind, remainder):
    """tokens_per_step = g: each of the g grid positions is compressed over time on its own."""
    D, g, S, k = 4, 3, 7, 2
    comp = make(kind, k, remainder, D)
    x = torch.randn(2, S * g, D)
    steps = torch.tensor([7, 4])
    mask = (torch.arange(S)[None] < steps[:, None]).repeat_interleave(g, dim=1)  # step-major
    out, m = comp(x, mask, tokens_per_step=g)
    S2 = comp.out_len(S)
    assert out.shape[:2] == (2, S2 * g)
    assert torch.equal(m.sum(1), comp.out_len(steps) * g) and torch.equal(comp.out_len(steps * g, g), m.sum(1))
    grid = x.view(2, S, g, D)
    for pos in range(g):  # reference: the plain 1-D compressor on one grid position's time series
        ref, ref_m = comp(grid[:, :, pos], mask.view(2, S, g)[..., pos])
        torch.testing.assert_close(out.view(2, S2, g, -1)[:, :, pos], ref)
        assert torch.equal(m.view(2, S2, g)[..., pos], ref_m)


def test_spatial_grid_errors():
    comp = StackCompressor(2)
    with pytest.raises(ValueError, match="whole number of steps"):
        comp(torch.randn(1, 7, 2), None, tokens_per_step=3)
    bad = torch.ones(1, 6, dtype=torch.bool)
    bad[0, 4] = False
    with pytest.raises(ValueError, match="differs between tokens of one step"):
        comp(torch.randn(1, 6, 2), bad, tokens_per_step=3)
