"""Matryoshka projector bank (Llama-MTSK): one compressor + MLP per rate, the rate chosen per call.

The encoder runs once; ``bank(x, mask, rate=k)`` projects the same features at rate ``k``, and
``bank.forward_all(x, mask)`` at every rate (QLadder, if any, runs once and is shared).
Weights live in ``bank.projectors[str(k)]`` (``compressor.*``, ``mlp.*``) and ``bank.qladder``.
"""
from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from .compress import check_inputs
from .mlp import MLPProjector
from .projector import Projector, ProjectorConfig, make_compressor
from .qladder import QLadder

__all__ = ["ProjectorBank", "build_projector"]


class ProjectorBank(nn.Module):
    """``{rate: Projector}`` with a shared optional QLadder.

    ``forward(x [B,N,D], mask [B,N], rate=k) -> (emb [B,N'_k,d_llm], mask' [B,N'_k])``.
    """

    def __init__(self, projectors: dict[int, Projector], qladder: QLadder | None = None):
        super().__init__()
        if not projectors:
            raise ValueError("ProjectorBank needs at least one rate")
        for k, p in projectors.items():
            if p.rate != int(k):
                raise ValueError(f"ProjectorBank: the projector under rate {k} compresses at rate {p.rate}")
            if p.qladder is not None:
                raise ValueError("ProjectorBank: give the QLadder to the bank (shared), not to one rate's projector")
        self.projectors = nn.ModuleDict({str(int(k)): p for k, p in sorted(projectors.items())})
        self.qladder = qladder

    @property
    def rates(self) -> tuple[int, ...]:
        """The available rates, ascending."""
        return tuple(int(k) for k in self.projectors)

    @property
    def d_out(self) -> int:
        return next(iter(self.projectors.values())).d_out

    def get(self, rate: int | None) -> Projector:
        """The projector of ``rate``; a clear KeyError for a rate the bank does not hold."""
        if rate is None:
            if len(self.projectors) == 1:
                return next(iter(self.projectors.values()))
            raise KeyError(f"this projector bank holds rates {list(self.rates)}: pass rate=")
        key = str(int(rate))
        if key not in self.projectors:
            raise KeyError(f"compression rate {rate} is not in this projector bank; available rates: {list(self.rates)}")
        return self.projectors[key]

    def num_tokens(self, n_frames: int | Tensor, rate: int | None = None) -> int | Tensor:
        proj = self.get(rate)
        if self.qladder is not None:
            n_frames = n_frames + self.qladder.num_queries
        return proj.compressor.out_len(n_frames)

    def _ladder(self, x, mask, hidden_states, hidden_masks):
        mask = check_inputs(x, mask, "ProjectorBank")
        if self.qladder is not None:
            x, mask = self.qladder(x, mask, hidden_states, hidden_masks)
        return x, mask

    def forward(self, x: Tensor, mask: Tensor | None = None, *, rate: int | None = None,
                hidden_states: Sequence[Tensor] | None = None,
                hidden_masks: Sequence[Tensor | None] | None = None) -> tuple[Tensor, Tensor]:
        proj = self.get(rate)
        x, mask = self._ladder(x, mask, hidden_states, hidden_masks)
        return proj.compress(x, mask)

    def forward_all(self, x: Tensor, mask: Tensor | None = None, *,
                    hidden_states: Sequence[Tensor] | None = None,
                    hidden_masks: Sequence[Tensor | None] | None = None) -> dict[int, tuple[Tensor, Tensor]]:
        """``{rate: (emb, mask')}`` for every rate; QLadder runs once."""
        x, mask = self._ladder(x, mask, hidden_states, hidden_masks)
        return {int(k): p.compress(x, mask) for k, p in self.projectors.items()}


def build_projector(cfg: ProjectorConfig, d_in: int, d_llm: int) -> Projector | ProjectorBank:
    """Build from config: a :class:`Projector` for one rate, a :class:`ProjectorBank` for several.

    Both are called as ``proj(x, mask, rate=None|k, hidden_states=None|[...])`` and return
    ``(emb [B, N', d_llm], mask' [B, N'])``; both have ``.rates`` and ``.num_tokens(n, rate)``.
    ``d_in`` is the encoder feature width ``D``; ``d_llm`` the LLM hidden size.
    """
    if not isinstance(cfg, ProjectorConfig):
        raise TypeError(f"build_projector takes a ProjectorConfig, got {type(cfg).__name__}")
    if int(d_in) < 1 or int(d_llm) < 1:
        raise ValueError(f"build_projector: d_in and d_llm must be >= 1, got {d_in}, {d_llm}")
    hidden = cfg.hidden_dim if cfg.hidden_dim is not None else d_llm
    qladder = QLadder(cfg.qladder, d_in) if cfg.qladder is not None else None

    def one(rate: int) -> Projector:
        comp = make_compressor(cfg, rate, d_in)
        return Projector(comp, MLPProjector(comp.out_dim(d_in), d_llm, hidden, cfg.activation))

    if len(cfg.rates) == 1:
        proj = one(cfg.rates[0])
        proj.qladder = qladder
        return proj
    return ProjectorBank({r: one(r) for r in cfg.rates}, qladder)
