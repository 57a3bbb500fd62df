"""Routing plans: which LoRA adapters act on which tokens during one forward.

A :class:`RoutingPlan` names adapters and says, per token, which of them act::

    weight(t, k) = [index[t] == k] + weights[t, k] + [k in shared]

* ``index``   ``[B, L]`` int32, hard routing, ``-1`` = no adapter (MM-LoRA token types).
* ``fill``    ``[B]`` int32, the adapter of every token of row ``b`` past ``L``: tokens a
  decode step adds with a KV cache, or all tokens when ``index`` is ``None`` (Phi-4-MM
  per-sample modes).
* ``weights`` ``[B, L, K]`` soft mixtures (optional), ``fill_weights`` ``[B, K]`` past ``L``.
* ``shared``  adapters on every token (single adapter; Matryoshka's shared LoRA).

One plan is installed for a forward by :func:`routing`; every :class:`MultiLoRALinear` in the
model reads it, so Hugging Face model code is not modified and ``generate()`` works. During
``generate()`` the plan follows the KV cache: a forward whose ``past_key_values`` already
holds ``P`` tokens routes its new tokens as positions ``P, P+1, ...`` of the plan, and
positions past ``L`` take ``fill``. Beam search's expanded batch (``B * beams`` rows,
``repeat_interleave``) is matched by repeating plan rows.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch
from torch import Tensor, nn

__all__ = ["RoutingPlan", "ResolvedRouting", "routing", "install_plan", "clear_plan"]


@dataclass(frozen=True)
class ResolvedRouting:
    """A plan resolved for one layer call, in the adapter space of a list of names."""

    names: tuple[str, ...]                 # adapter names of the index space below
    index: Tensor | None                   # [T] int32 or None
    weights: Tensor | None                 # [T, K] or None
    shared: tuple[int, ...]                # always-on adapters


@dataclass(eq=False)
class RoutingPlan:
    """Per-token routing over a list of adapter ``names`` (see the module docstring)."""

    names: tuple[str, ...]
    index: Tensor | None = None
    fill: Tensor | None = None
    weights: Tensor | None = None
    fill_weights: Tensor | None = None
    shared: tuple[str, ...] = ()
    _cache: dict = field(default_factory=dict, repr=False)

    def __setattr__(self, name: str, value) -> None:
        # resolve() caches per call signature: a changed routing field (e.g. new weights) must not
        # be served the resolution of the old one
        cache = self.__dict__.get("_cache")
        if cache and name != "_cache":
            cache.clear()
        object.__setattr__(self, name, value)

    def __post_init__(self) -> None:
        self.names = tuple(self.names)
        self.shared = tuple(self.shared)
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"duplicate adapter names in routing plan: {self.names}")
        for tensor_name in ("index", "fill"):
            t = getattr(self, tensor_name)
            if t is not None:
                t = torch.as_tensor(t, dtype=torch.int32)
                if t.numel() and (int(t.min()) < -1 or int(t.max()) >= len(self.names)):
                    raise ValueError(f"routing {tensor_name} values must lie in [-1, {len(self.names) - 1}]")
                setattr(self, tensor_name, t)
        if self.index is not None and self.index.dim() == 1:
            self.index = self.index[None]
        if self.index is not None and self.index.dim() != 2:
            raise ValueError(f"routing index must be [B, L], got shape {tuple(self.index.shape)}")
        if self.weights is not None:
            if self.weights.dim() == 2:
                self.weights = self.weights[None]
            if self.weights.dim() != 3 or self.weights.shape[-1] != len(self.names):
                raise ValueError(f"routing weights must be [B, L, {len(self.names)}], got {tuple(self.weights.shape)}")
        if self.fill_weights is not None and self.fill_weights.shape[-1] != len(self.names):
            raise ValueError(f"fill_weights must be [B, {len(self.names)}], got {tuple(self.fill_weights.shape)}")
        rows = {t.shape[0] for t in (self.index, self.fill, self.weights, self.fill_weights) if t is not None}
        if len(rows) > 1:
            raise ValueError(f"routing tensors disagree on the batch size: {sorted(rows)}")

    # ---------------------------------------------------------------- constructors
    @classmethod
    def none(cls) -> "RoutingPlan":
        """No adapter on any token: the base model exactly."""
        return cls(names=())

    @classmethod
    def single(cls, name: str) -> "RoutingPlan":
        """One adapter on every token (plain LoRA)."""
        return cls(names=(), shared=(name,))

    @classmethod
    def shared_specific(cls, shared: str | Sequence[str], specific: str | Sequence[str | None] | None) -> "RoutingPlan":
        """Matryoshka MSS: ``shared`` adapters on every token plus a scale-specific one.

        ``specific`` is one name for the whole batch, or one name (or ``None``) per sample.
        MS is ``shared_specific("ms", None)``, SS is ``shared_specific((), "ss_4_2")``.
        """
        shared = (shared,) if isinstance(shared, str) else tuple(shared)
        if specific is None:
            return cls(names=(), shared=shared)
        if isinstance(specific, str):
            return cls(names=(), shared=shared + (specific,))
        plan = cls.by_sample(specific)
        return cls(names=plan.names, fill=plan.fill, shared=shared)

    @classmethod
    def by_token(cls, token_adapter_ids: Tensor, names: Sequence[str], fill: Tensor | Sequence[int] | int | None = None) -> "RoutingPlan":
        """Hard routing per token (MM-LoRA): ``token_adapter_ids[b, t]`` indexes ``names``.

        Tokens generated after the prompt take ``fill`` (an index into ``names`` per sample,
        or one for all); by default each row's last prompt token's adapter.
        """
        ids = torch.as_tensor(token_adapter_ids, dtype=torch.int32)
        if ids.dim() == 1:
            ids = ids[None]
        if fill is None:
            fill_t = ids[:, -1].clone() if ids.shape[1] else torch.full((ids.shape[0],), -1, dtype=torch.int32)
        elif isinstance(fill, int):
            fill_t = torch.full((ids.shape[0],), fill, dtype=torch.int32)
        else:
            fill_t = torch.as_tensor(fill, dtype=torch.int32)
        return cls(names=tuple(names), index=ids, fill=fill_t)

    @classmethod
    def by_sample(cls, sample_adapter: Sequence[str | None], seq_len: int | None = None) -> "RoutingPlan":
        """One adapter per sample, ``None`` = base model (Phi-4-MM modes).

        Every token of row ``b`` (prompt and generated ones) takes ``sample_adapter[b]``;
        ``seq_len`` is accepted for symmetry with :meth:`by_token` and not needed.
        """
        names = tuple(dict.fromkeys(n for n in sample_adapter if n is not None))
        fill = torch.tensor([-1 if n is None else names.index(n) for n in sample_adapter], dtype=torch.int32)
        return cls(names=names, fill=fill)

    @classmethod
    def soft(cls, weights: Tensor, names: Sequence[str], fill_weights: Tensor | None = None) -> "RoutingPlan":
        """Soft per-token mixture ``weights [B, L, K]`` (e.g. a learned router's softmax)."""
        return cls(names=tuple(names), weights=weights, fill_weights=fill_weights)

    # ---------------------------------------------------------------- resolution
    @property
    def all_names(self) -> tuple[str, ...]:
        """Every adapter the plan may activate (indexed ones first, then shared ones)."""
        return self.names + tuple(n for n in self.shared if n not in self.names)

    def used_names(self) -> set[str]:
        """Adapters that act on at least one token of a forward over exactly the plan's tokens
        (``index``/``weights`` where given, else ``fill``/``fill_weights``, plus ``shared``)."""
        used = set(self.shared)
        hard = self.index if self.index is not None else self.fill
        if hard is not None:
            used |= {self.names[int(k)] for k in torch.unique(hard.cpu()) if int(k) >= 0}
        soft = self.weights if self.weights is not None else self.fill_weights
        if soft is not None:
            nonzero = (soft.reshape(-1, soft.shape[-1]) != 0).any(dim=0).cpu()
            used |= {n for n, on in zip(self.names, nonzero.tolist()) if on}
        return used

    @property
    def is_empty(self) -> bool:
        return not self.shared and self.index is None and self.weights is None and (
            self.fill is None or bool((self.fill < 0).all()))

    def resolve(self, lead_shape: Sequence[int], offset: int = 0, device: torch.device | None = None) -> ResolvedRouting:
        """Resolve for tokens of shape ``lead_shape`` (``[B, L]``, ``[T]`` or ``[B, ..., L]``)
        at sequence positions ``offset .. offset+L``; cached per call signature."""
        key = (tuple(lead_shape), int(offset), device)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        names = self.all_names
        shared = tuple(names.index(n) for n in self.shared)
        n_tok = 1
        for s in lead_shape:
            n_tok *= int(s)
        index = weights = None
        if self.index is not None or self.fill is not None:
            index = self._rows(self.index, self.fill, lead_shape, offset, n_tok, default=-1)
        if self.weights is not None or self.fill_weights is not None:
            weights = self._rows(self.weights, self.fill_weights, lead_shape, offset, n_tok, default=0.0)
        if index is not None and self.index is None and self.fill is not None:
            # per-sample routing whose samples all agree: one dense adapter (or none)
            first = int(self.fill[0]) if self.fill.numel() else -1
            if bool((self.fill == first).all()):
                index = None
                if first >= 0 and first not in shared:
                    shared = shared + (first,)
        if index is not None:
            index = index.to(device=device, dtype=torch.int32)
        if weights is not None:
            weights = weights.to(device=device)
        res = ResolvedRouting(names=names, index=index, weights=weights, shared=shared)
        self._cache[key] = res
        return res

    def _rows(self, table: Tensor | None, fill: Tensor | None, lead_shape: Sequence[int], offset: int,
              n_tok: int, default) -> Tensor:
        """Per-token values ``[T(, K)]`` for tokens at positions ``offset..`` of each row."""
        rows = (table.shape[0] if table is not None else fill.shape[0])
        if len(lead_shape) >= 2:
            b_x, l_x = int(lead_shape[0]), n_tok // max(int(lead_shape[0]), 1)
        elif rows == 1:
            b_x, l_x = 1, n_tok
        else:  # flat [T] with several rows: must be exactly the full table
            if table is None or table.shape[0] * table.shape[1] != n_tok or offset:
                raise ValueError(f"cannot route {n_tok} flat tokens with a {rows}-row plan")
            return table.reshape(n_tok, *table.shape[2:])
        if b_x % rows:
            raise ValueError(f"routing plan has {rows} rows but the layer sees a batch of {b_x}")
        rep = b_x // rows
        L = table.shape[1] if table is not None else 0
        extra = table.shape[2:] if table is not None else fill.shape[1:]
        parts = []
        start, stop = offset, offset + l_x
        if table is not None and start < L:
            parts.append(table[:, start:min(stop, L)])
        if stop > max(L, start):
            n_new = stop - max(L, start)
            if fill is not None:
                parts.append(fill[:, None].expand(rows, n_new, *extra))
            else:
                parts.append(torch.full((rows, n_new, *extra), default, dtype=table.dtype))  # no fill: table set
        out = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        if rep > 1:
            out = out.repeat_interleave(rep, dim=0)
        return out.reshape(n_tok, *extra)


# -------------------------------------------------------------------- installation
class _ActiveRouting:
    """What MultiLoRALinear layers read: the plan plus the current sequence offset."""

    def __init__(self, plan: RoutingPlan):
        self.plan = plan
        self.offset = 0


def _past_length(kwargs: dict) -> int:
    """Tokens already in the KV cache of this forward (transformers names the cache argument
    ``past_key_values``; newer 5.x releases call it ``cache``)."""
    past = kwargs.get("past_key_values")
    if past is None:
        past = kwargs.get("cache")
    if past is None or isinstance(past, bool):
        return 0
    if hasattr(past, "get_seq_length"):
        return int(past.get_seq_length())
    try:  # legacy tuple cache: ((k, v), ...) with k [B, H, P, D]
        return int(past[0][0].shape[-2])
    except Exception:  # noqa: BLE001 - unknown cache type: assume no past
        return 0


def _lora_layers(model: nn.Module):
    """Every MultiLoRALinear of ``model``, cached on the model until a new one is created
    anywhere (``MultiLoRALinear.created`` counts them), so a forward does not walk all modules."""
    from .lora import MultiLoRALinear

    cached = model.__dict__.get("_mmlora_layer_cache")
    if cached is not None and cached[0] == MultiLoRALinear.created:
        return cached[1]
    layers = [m for m in model.modules() if isinstance(m, MultiLoRALinear)]
    model.__dict__["_mmlora_layer_cache"] = (MultiLoRALinear.created, layers)
    return layers


def install_plan(model: nn.Module, plan: RoutingPlan | None) -> None:
    """Install ``plan`` on every MultiLoRALinear of ``model`` until changed (no context).

    Prefer :func:`routing`; this is for code (gradient checkpointing, training loops) whose
    backward runs after the forward's ``with`` block would have closed.
    """
    active = _ActiveRouting(plan) if plan is not None else None
    for layer in _lora_layers(model):
        layer.__dict__["_routing"] = active  # a plain attribute (nn.Module.__setattr__ costs ~1 µs a layer)
    old = getattr(model, "_mmlora_route_hook", None)
    if old is not None:
        old.remove()
        model._mmlora_route_hook = None
    if active is not None:
        def hook(_module, _args, kwargs):
            active.offset = _past_length(kwargs)
        model._mmlora_route_hook = model.register_forward_pre_hook(hook, with_kwargs=True)


def clear_plan(model: nn.Module) -> None:
    install_plan(model, None)


@contextlib.contextmanager
def routing(model: nn.Module, plan: RoutingPlan) -> Iterator[RoutingPlan]:
    """Install ``plan`` on every :class:`MultiLoRALinear` of ``model`` for the ``with`` block.

    ``model(...)`` and ``model.generate(...)`` inside the block are routed; the offset of
    each forward into the plan is read from its KV cache argument. The plan installed
    before the block (if any) is restored afterwards.
    """
    layers = _lora_layers(model)
    previous = layers[0]._routing.plan if layers and layers[0]._routing is not None else None
    install_plan(model, plan)
    try:
        yield plan
    finally:
        install_plan(model, previous)
