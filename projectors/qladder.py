"""QLadder (Arcana): learnable queries that climb the frozen encoder, one ladder layer per layer.

::

    q⁰ = Q (learnable, [n_q, D])
    for l = 1..L:                         h_l = hidden states of encoder layer l  [B, N_l, D_l]
        q ← q + W_o · MHA(LN_q(q), LN_kv(h_l))       (pre-LN cross-attention, residual)
        q ← q + MLP(LN_m(q))                          (pre-LN GELU MLP, residual)
    output: the patch tokens x, then the n_q queries, then padding      [B, N + n_q, D]

The encoder stays frozen; only the ladder trains. Keys/values of layer ``l`` are projected from
width ``D_l`` (``kv_dims[l]``, default ``D``) to ``D``, so CNN stages of different widths work
once flattened to ``[B, H·W, C_l]``.

Initialization (``zero_init=True``, the default): the output projection of every attention and
the last linear of every MLP are zero, so each ladder layer is the identity at the start and the
appended queries equal the learned ``Q``; gradients still reach those zeroed projections (and,
through the residual path, ``Q``), like LoRA's ``B = 0``. With ``zero_init=False`` all linears
keep PyTorch's default init.

Placement: the queries go right after each sample's valid patch tokens (not after the padding),
so a right-padded input stays right-padded: ``mask'[b] = [True]·(L_b + n_q) + [False]·(N − L_b)``.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .compress import check_inputs

__all__ = ["QLadderConfig", "QLadder", "LadderLayer", "append_after_valid"]


@dataclass
class QLadderConfig:
    """Arcana QLadder. ``num_layers`` must equal the number of hidden-state tensors passed."""

    num_layers: int                           # ladder layers = encoder layers whose hidden states it reads
    num_queries: int = 64                     # learnable query tokens appended after the patch tokens
    num_heads: int = 8                        # cross-attention heads (must divide the feature width D)
    mlp_ratio: float = 4.0                    # MLP hidden width = mlp_ratio · D
    kv_dims: tuple[int, ...] | None = None    # width of each layer's hidden states; None: all = D
    zero_init: bool = True                    # zero output projections: every ladder layer starts as identity
    dropout: float = 0.0                      # dropout on attention weights and MLP hidden units (training only)
    query_init_std: float = 0.02              # queries ~ N(0, std²)

    def __post_init__(self) -> None:
        if int(self.num_layers) < 1 or int(self.num_queries) < 1 or int(self.num_heads) < 1:
            raise ValueError(f"QLadderConfig: num_layers, num_queries, num_heads must be >= 1, got "
                             f"{self.num_layers}, {self.num_queries}, {self.num_heads}")
        if self.kv_dims is not None:
            self.kv_dims = tuple(int(d) for d in self.kv_dims)
            if len(self.kv_dims) != self.num_layers:
                raise ValueError(f"QLadderConfig.kv_dims has {len(self.kv_dims)} entries for "
                                 f"num_layers={self.num_layers}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"QLadderConfig.dropout must be in [0, 1), got {self.dropout}")
        if self.mlp_ratio <= 0:
            raise ValueError(f"QLadderConfig.mlp_ratio must be > 0, got {self.mlp_ratio}")


class LadderLayer(nn.Module):
    """One ladder step: pre-LN cross-attention of ``q [B, n_q, D]`` into ``h [B, N_l, D_l]``, then a
    pre-LN GELU MLP, both residual."""

    def __init__(self, d: int, d_kv: int, num_heads: int, mlp_ratio: float, dropout: float, zero_init: bool):
        super().__init__()
        if d % num_heads:
            raise ValueError(f"QLadder: width {d} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.dropout = dropout
        self.ln_q = nn.LayerNorm(d)
        self.ln_kv = nn.LayerNorm(d_kv)
        self.q_proj = nn.Linear(d, d)
        self.k_proj = nn.Linear(d_kv, d)
        self.v_proj = nn.Linear(d_kv, d)
        self.o_proj = nn.Linear(d, d)
        self.ln_mlp = nn.LayerNorm(d)
        hidden = max(1, int(round(mlp_ratio * d)))
        self.fc1 = nn.Linear(d, hidden)
        self.fc2 = nn.Linear(hidden, d)
        if zero_init:
            for lin in (self.o_proj, self.fc2):
                nn.init.zeros_(lin.weight)
                nn.init.zeros_(lin.bias)

    def attention(self, q: Tensor, h: Tensor, key_mask: Tensor) -> Tensor:
        """Multi-head cross-attention ``softmax(QKᵀ/√d_h + mask) V`` with output projection."""
        B, n_q, D = q.shape
        H, dh = self.num_heads, D // self.num_heads
        qh = self.q_proj(q).view(B, n_q, H, dh).transpose(1, 2)
        kh = self.k_proj(h).view(B, h.shape[1], H, dh).transpose(1, 2)
        vh = self.v_proj(h).view(B, h.shape[1], H, dh).transpose(1, 2)
        has_key = key_mask.any(-1)  # a sample with no valid key attends to nothing (output 0)
        attn_mask = (key_mask | ~has_key[:, None])[:, None, None, :]
        o = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=attn_mask,
                                           dropout_p=self.dropout if self.training else 0.0)
        o = o * has_key[:, None, None, None].to(o.dtype)
        return self.o_proj(o.transpose(1, 2).reshape(B, n_q, D))

    def forward(self, q: Tensor, h: Tensor, key_mask: Tensor) -> Tensor:
        q = q + self.attention(self.ln_q(q), self.ln_kv(h), key_mask)
        m = F.gelu(self.fc1(self.ln_mlp(q)))
        m = F.dropout(m, self.dropout, self.training)
        return q + self.fc2(m)


def append_after_valid(x: Tensor, mask: Tensor, extra: Tensor) -> tuple[Tensor, Tensor]:
    """Insert ``extra [B, M, D]`` right after each sample's valid prefix of ``x [B, N, D]``.

    Returns ``[B, N + M, D]`` = (valid x, extra, zeros) per sample and the matching mask.
    ``mask`` must be a prefix mask (right padding).
    """
    B, N, D = x.shape
    M = extra.shape[1]
    lengths = mask.sum(-1)
    pos = torch.arange(N, device=x.device)
    if not torch.equal(mask, pos[None] < lengths[:, None]):
        raise ValueError("QLadder needs right-padded features: mask must be True on a prefix of each row")
    pos = torch.arange(N + M, device=x.device)[None].expand(B, -1)     # [B, N+M]
    rel = pos - lengths[:, None]                                        # index into extra
    in_x = rel < 0
    in_extra = (rel >= 0) & (rel < M)
    x_part = torch.gather(torch.cat([x, x.new_zeros(B, M, D)], 1), 1, pos.unsqueeze(-1).expand(-1, -1, D))
    e_part = torch.gather(extra, 1, rel.clamp(0, M - 1).unsqueeze(-1).expand(-1, -1, D))
    out = torch.where(in_x.unsqueeze(-1), x_part, torch.where(in_extra.unsqueeze(-1), e_part, torch.zeros_like(e_part)))
    return out, in_x | in_extra


class QLadder(nn.Module):
    """Learnable queries + one :class:`LadderLayer` per encoder layer (see the module docstring)."""

    def __init__(self, cfg: QLadderConfig, d: int):
        super().__init__()
        self.cfg = cfg
        self.d = int(d)
        kv_dims = cfg.kv_dims or (self.d,) * cfg.num_layers
        self.queries = nn.Parameter(torch.randn(cfg.num_queries, self.d) * cfg.query_init_std)
        self.layers = nn.ModuleList(
            LadderLayer(self.d, dkv, cfg.num_heads, cfg.mlp_ratio, cfg.dropout, cfg.zero_init) for dkv in kv_dims)

    @property
    def num_queries(self) -> int:
        return self.cfg.num_queries

    def run_queries(self, hidden_states: Sequence[Tensor],
                    hidden_masks: Tensor | Sequence[Tensor | None] | None = None,
                    mask: Tensor | None = None) -> Tensor:
        """The queries after all ladder layers: ``[B, n_q, D]``.

        ``hidden_masks[l]`` (bool ``[B, N_l]``) marks valid keys of layer ``l``; one tensor is shared
        by all layers (``Features.hidden_mask``). When absent, a layer whose length equals
        ``mask``'s uses ``mask``; any other layer attends to all its positions.
        """
        if hidden_states is None or isinstance(hidden_states, Tensor):
            raise TypeError("QLadder needs hidden_states: a list with one [B, N_l, D_l] tensor per encoder layer")
        L = len(self.layers)
        if isinstance(hidden_masks, Tensor):
            hidden_masks = [hidden_masks] * len(hidden_states)
        if len(hidden_states) != L:
            hint = (" (HF output_hidden_states includes the embedding output first: pass hidden_states[1:])"
                    if len(hidden_states) == L + 1 else "")
            raise ValueError(f"QLadder has {L} ladder layers but got {len(hidden_states)} hidden states{hint}")
        if hidden_masks is not None and len(hidden_masks) != L:
            raise ValueError(f"QLadder: hidden_masks has {len(hidden_masks)} entries, expected {L}")
        B = hidden_states[0].shape[0]
        q = self.queries.unsqueeze(0).expand(B, -1, -1)
        for l, (layer, h) in enumerate(zip(self.layers, hidden_states)):
            if h.dim() != 3 or h.shape[0] != B or h.shape[-1] != layer.k_proj.in_features:
                raise ValueError(f"QLadder: hidden_states[{l}] must be [B={B}, N, {layer.k_proj.in_features}], "
                                 f"got {tuple(h.shape)}")
            hm = hidden_masks[l] if hidden_masks is not None else None
            if hm is None:
                hm = mask if (mask is not None and mask.shape[1] == h.shape[1]) else \
                    torch.ones(h.shape[:2], dtype=torch.bool, device=h.device)
            if tuple(hm.shape) != tuple(h.shape[:2]):
                raise ValueError(f"QLadder: mask of hidden_states[{l}] has shape {tuple(hm.shape)}, "
                                 f"expected {tuple(h.shape[:2])}")
            q = layer(q, h.to(q.dtype), hm.to(device=h.device, dtype=torch.bool))
        return q

    def forward(self, x: Tensor, mask: Tensor | None, hidden_states: Sequence[Tensor],
                hidden_masks: Tensor | Sequence[Tensor | None] | None = None) -> tuple[Tensor, Tensor]:
        """``(x [B, N, D], mask [B, N]) -> (x' [B, N + n_q, D], mask')``: patch tokens, then queries."""
        mask = check_inputs(x, mask, "QLadder")
        if x.shape[-1] != self.d:
            raise ValueError(f"QLadder was built for width {self.d}, got features of width {x.shape[-1]}")
        q = self.run_queries(hidden_states, hidden_masks, mask)
        return append_after_valid(x, mask, q.to(x.dtype))
