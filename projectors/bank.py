"""Matryoshka projector bank (Llama-MTSK): one compressor + MLP per rate, the rate chosen per call.

The encoder runs once; ``bank(x, mask, rate=k)`` projects the same features at rate ``k``, and
``bank.forward_all(x, mask)`` at every rate (QLadder, if any, runs once and is shared).
Weights live in ``bank.projectors[str(k)]`` (``compressor.*``, ``mlp.*``) and ``bank.qladder``.
"""
from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from .mlp import MLPProjector
from .projector import Projector, ProjectorConfig, _num_tokens, make_compressor, run_qladder
from .qladder import QLadder

__all__ = ["ProjectorBank", "build_projector", "project_features"]


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

    def num_tokens(self, n_frames: int | Tensor, rate: int | None = None, tokens_per_step: int = 1) -> int | Tensor:
        """Tokens emitted at ``rate`` for ``n_frames`` valid input tokens (int or per-sample tensor)."""
        return _num_tokens(self.get(rate).compressor, self.qladder, n_frames, tokens_per_step)

    def forward(self, x: Tensor, mask: Tensor | None = None, *, rate: int | None = None,
                hidden_states: Sequence[Tensor] | None = None,
                hidden_masks: Tensor | Sequence[Tensor | None] | None = None,
                tokens_per_step: int = 1) -> tuple[Tensor, Tensor]:
        """Project at ``rate`` (required when the bank holds several); arguments as :meth:`Projector.forward`."""
        proj = self.get(rate)
        x, mask, g = run_qladder(self.qladder, x, mask, hidden_states, hidden_masks, tokens_per_step, proj.rate)
        return proj.compress(x, mask, g)

    def forward_all(self, x: Tensor, mask: Tensor | None = None, *,
                    hidden_states: Sequence[Tensor] | None = None,
                    hidden_masks: Tensor | Sequence[Tensor | None] | None = None,
                    tokens_per_step: int = 1) -> dict[int, tuple[Tensor, Tensor]]:
        """``{rate: (emb, mask')}`` for every rate; QLadder runs once."""
        x, mask, g = run_qladder(self.qladder, x, mask, hidden_states, hidden_masks, tokens_per_step,
                                 1 if self.qladder is None else max(self.rates))
        return {int(k): p.compress(x, mask, g) for k, p in self.projectors.items()}


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
        return Projector(comp, MLPProjector(comp.out_dim(d_in), d_llm, hidden, cfg.activation, cfg.init_scale))

    if len(cfg.rates) == 1:
        proj = one(cfg.rates[0])
        proj.qladder = qladder
        return proj
    return ProjectorBank({r: one(r) for r in cfg.rates}, qladder)


def project_features(proj: Projector | ProjectorBank, features, rate: int | None = None) -> tuple[Tensor, Tensor]:
    """Run ``proj`` on an encoder ``Features``-like object (duck-typed: ``x``, ``mask`` and, when
    present, ``hidden_states``, ``hidden_mask``, ``tokens_per_step``)."""
    return proj(features.x, features.mask, rate=rate,
                hidden_states=getattr(features, "hidden_states", None),
                hidden_masks=getattr(features, "hidden_mask", None),
                tokens_per_step=int(getattr(features, "tokens_per_step", 1) or 1))
