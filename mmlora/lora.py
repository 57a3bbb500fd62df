"""Multi-LoRA linear layers: one frozen base linear, K named low-rank adapters, routed per token.

::

            x ──────────────► W (frozen base_layer) ──────────┐
            │                                                 ▼
            └─► dropout ─► A_k (r_k × d_in) ─► B_k (d_out × r_k) ─► × s_k · w_{t,k} ─► (+) ─► y

    y_t = W x_t + b + Σ_k w_{t,k} · s_k · B_k A_k dropout(x_t)     s_k = α_k / r_k  (rsLoRA: α_k / √r_k)

``w_{t,k}`` comes from the installed :class:`~mmlora.routing.RoutingPlan` (no plan: base only).
All LoRA arithmetic goes through :func:`mmlora.kernels.lora_delta`.

Public API: :class:`LoRASpec`, :class:`MultiLoRALinear`, :func:`attach`, :func:`merge`,
:func:`unmerge`, :func:`reset`, :func:`adapter_parameters`, :func:`save_adapters`,
:func:`load_adapters`, :func:`export_peft`.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .kernels import backend_ops, lora_delta, lora_linear, resolve_backend
from .kernels.lora_fused import _Meta, coefficients, fused_call
from .kernels.lora_mlp import patch_gated_mlps, unpatch_gated_mlps
from .routing import ResolvedRouting, _ActiveRouting
from .fsutil import replace_dir
from .tensor_match import check_tensors_match

__all__ = [
    "LoRASpec", "LoRAAdapter", "MultiLoRALinear", "attach", "detach", "lora_layers", "merge", "unmerge", "reset",
    "adapter_parameters", "adapter_names", "save_adapters", "load_adapters", "read_adapter_folder", "export_peft",
    "ADAPTER_WEIGHTS", "ADAPTER_CONFIG",
]

ADAPTER_WEIGHTS = "adapters.safetensors"
ADAPTER_CONFIG = "adapters.json"
_INITS = ("kaiming", "gaussian")
# bumped by every change of which adapters act or how (add, merge, unmerge, reset, a new spec):
# layers cache their prepared kernel call per routing plan and rebuild it when this moves
_GENERATION = [0]


def _bump() -> None:
    _GENERATION[0] += 1


@dataclass(frozen=True)
class LoRASpec:
    """One adapter's hyper-parameters."""

    rank: int                 # r: width of the low-rank bottleneck
    alpha: float              # scaling numerator: s = alpha / r (rsLoRA: alpha / sqrt(r))
    dropout: float = 0.0      # dropout on the adapter's input x (not on the base path)
    init: str = "kaiming"     # "kaiming": A Kaiming-uniform, B = 0 (PEFT); "gaussian": A ~ N(0, 1/r), B = 0
    use_rslora: bool = False  # rank-stabilised scaling alpha / sqrt(r)

    def __post_init__(self) -> None:
        if int(self.rank) < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {self.rank}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout}")
        if self.init not in _INITS:
            raise ValueError(f"LoRA init must be one of {_INITS}, got {self.init!r}")

    @property
    def scaling(self) -> float:
        return self.alpha / (math.sqrt(self.rank) if self.use_rslora else self.rank)


class LoRAAdapter(nn.Module):
    """The trainable pair of one adapter: ``A [r, d_in]`` and ``B [d_out, r]``."""

    def __init__(self, spec: LoRASpec, d_in: int, d_out: int, device=None, dtype=None):
        super().__init__()
        self._spec = spec
        self.A = nn.Parameter(torch.empty(spec.rank, d_in, device=device, dtype=dtype))
        self.B = nn.Parameter(torch.empty(d_out, spec.rank, device=device, dtype=dtype))
        self.reset_parameters()

    @property
    def spec(self) -> LoRASpec:
        return self._spec

    @spec.setter
    def spec(self, spec: LoRASpec) -> None:  # rank/scaling/dropout may change: layers re-prepare their calls
        self._spec = spec
        _bump()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        if self.spec.init == "kaiming":  # same as PEFT (nn.Linear's default init of lora_A)
            nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        else:
            nn.init.normal_(self.A, std=1.0 / self.spec.rank)
        nn.init.zeros_(self.B)

    def extra_repr(self) -> str:
        s = self.spec
        return f"rank={s.rank}, alpha={s.alpha}, dropout={s.dropout}, rslora={s.use_rslora}"


def _restrict(index: Tensor | None, weights: Tensor | None, shared: tuple[int, ...], keep: list[int],
              n: int) -> tuple[Tensor | None, Tensor | None, tuple[int, ...]]:
    """Routing over ``n`` adapters restricted to the adapters ``keep`` (renumbered 0..len-1);
    tokens routed to a dropped adapter get -1, dropped shared adapters disappear."""
    remap = torch.full((n,), -1, dtype=torch.int32)
    remap[keep] = torch.arange(len(keep), dtype=torch.int32)
    if index is not None:
        index = torch.where(index >= 0, remap.to(index.device)[index.clamp(min=0).long()], index)
    if weights is not None:
        weights = weights[:, keep]
    return index, weights, tuple(int(remap[k]) for k in shared if int(remap[k]) >= 0)


_NONE, _FUSED, _GROUPS, _GENERIC = range(4)  # kinds of prepared layer calls


class _Call:
    """A layer's kernel call prepared for one resolved routing (see MultiLoRALinear._prepared).

    ``kind``: ``_NONE`` (no adapter acts: base only), ``_FUSED`` (one fused function: ``adapters``
    the kept ones, ``meta``, coefficients ``M`` or, for trainable soft weights, ``coef_args`` to
    rebuild them per call, adapter-input dropout ``p``), ``_GROUPS`` (fused backend, several
    dropout groups) or ``_GENERIC`` (reference backend)."""

    __slots__ = ("res", "key", "kind", "adapters", "meta", "M", "coef_args", "p")

    def __init__(self, res: ResolvedRouting, key: tuple, kind: int):
        self.res, self.key, self.kind = res, key, kind
        self.adapters, self.meta, self.M, self.coef_args, self.p = [], None, None, None, 0.0

    def coefficients(self) -> Tensor:
        return self.M if self.coef_args is None else coefficients(*self.coef_args)[1]

    def params(self) -> list[Tensor]:
        """The kept adapters' ``A_k`` then ``B_k`` (read per call: parameters may be replaced)."""
        ads = self.adapters
        if len(ads) == 1:
            p = ads[0]._parameters
            return [p["A"], p["B"]]
        return [a._parameters["A"] for a in ads] + [a._parameters["B"] for a in ads]


class MultiLoRALinear(nn.Module):
    """A frozen ``nn.Linear`` (``base_layer``) plus named adapters (``adapters[name]``).

    Input ``(..., d_in)``, output ``(..., d_out)``. Which adapters act on which token comes
    from the routing plan installed by :func:`mmlora.routing.routing`.
    """

    created = 0  # instances ever made (invalidates cached layer lists, see routing._lora_layers)

    def __init__(self, base_layer: nn.Linear):
        super().__init__()
        MultiLoRALinear.created += 1
        if not isinstance(base_layer, nn.Linear):
            raise TypeError(f"MultiLoRALinear wraps nn.Linear, got {type(base_layer).__name__}")
        self.base_layer = base_layer
        self.adapters = nn.ModuleDict()
        self.merged: set[str] = set()
        self._merge_backup: Tensor | None = None  # base weight before the first merge (CPU)
        self._routing: _ActiveRouting | None = None
        self._call: _Call | None = None  # prepared kernel call of the last routing plan seen

    @property
    def in_features(self) -> int:
        return self.base_layer.in_features

    @property
    def out_features(self) -> int:
        return self.base_layer.out_features

    @property
    def weight(self) -> Tensor:  # some HF code reads .weight of projections
        return self.base_layer.weight

    @property
    def bias(self) -> Tensor | None:
        return self.base_layer.bias

    def add_adapter(self, name: str, spec: LoRASpec) -> None:
        if name in self.adapters:
            raise ValueError(f"adapter {name!r} already exists")
        w = self.base_layer.weight
        dtype = w.dtype if w.dtype.is_floating_point else torch.float32
        self.adapters[name] = LoRAAdapter(spec, self.in_features, self.out_features, device=w.device,
                                          dtype=torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype)
        _bump()

    # ---------------------------------------------------------------- forward
    def forward(self, x: Tensor) -> Tensor:
        c = self._prepared(x)
        if c is None or c.kind == _NONE:
            return self.base_layer(x)
        x2d = x.reshape(-1, x.shape[-1])
        if c.kind == _FUSED:  # base GEMM + shrink + routed in-place expand in one autograd function
            bp = self._modules["base_layer"]._parameters  # (dict reads: nn.Module.__getattr__ is slow)
            xl = F.dropout(x2d, p=c.p, training=True) if c.p > 0 else None
            y = fused_call(x2d, xl, bp["weight"], bp.get("bias"), c.coefficients(), c.meta, c.params())
            return y.view(*x.shape[:-1], y.shape[-1])
        if c.kind == _GROUPS:  # fused backend, adapters with different dropout: one call per group
            y = self._delta(x2d, c.res, base=self.base_layer)
            return self.base_layer(x) if y is None else y.view(*x.shape[:-1], y.shape[-1])
        y = self.base_layer(x)  # the reference (or a base weight that trains)
        delta = self._delta(x2d, c.res)
        if delta is None:
            return y
        return y + delta.view(y.shape).to(y.dtype)

    def _prepared(self, x: Tensor) -> "_Call | None":
        """The prepared call for input ``x`` under the installed plan (None: no plan or no
        adapters). Rebuilt only when the resolved routing, ``x``'s dtype, train/eval, the backend
        flag, the adapters (:data:`_GENERATION`) or the base weight's ``requires_grad`` change."""
        active = self._routing
        if active is None or not self.adapters:
            return None
        res = active.plan.resolve(x.shape[:-1], active.offset, x.device)
        key = (x.dtype, self.training, os.environ.get("MMLORA_KERNELS"), _GENERATION[0],
               self._modules["base_layer"]._parameters["weight"].requires_grad)
        c = self._call
        if c is None or c.res is not res or c.key != key:
            c = self._prepare(res, key, x)
            self.__dict__["_call"] = c  # plain attribute (nn.Module.__setattr__ is slow)
        return c

    def _active(self, res: ResolvedRouting) -> tuple[list["LoRAAdapter"], Tensor | None, Tensor | None, tuple]:
        """The adapters of ``res`` that act on this layer (merged ones already sit in the base
        weight) and the routing ``(index, weights, shared)`` restricted to them; no adapters: ``[]``."""
        keep: list[int] = []  # plan space -> this layer's adapters
        for i, name in enumerate(res.names):
            if name not in self.adapters:
                raise KeyError(f"routing plan names adapter {name!r}, this layer has {list(self.adapters)}")
            if name not in self.merged:
                keep.append(i)
        index, weights, shared = res.index, res.weights, res.shared
        if keep and len(keep) != len(res.names):  # drop merged adapters from the index space
            index, weights, shared = _restrict(index, weights, shared, keep, len(res.names))
        return [self.adapters[res.names[i]] for i in keep], index, weights, shared

    def _prepare(self, res: ResolvedRouting, key: tuple, x: Tensor) -> "_Call":
        adapters, index, weights, shared = self._active(res)
        if not adapters:
            return _Call(res, key, _NONE)
        backend = resolve_backend(x)
        ops = backend_ops(backend) if backend != "torch" else None
        if ops is None or self.base_layer.weight.requires_grad:
            return _Call(res, key, _GENERIC)
        drop = {ad.spec.dropout if self.training else 0.0 for ad in adapters}
        if len(drop) > 1:
            return _Call(res, key, _GROUPS)
        ranks = [ad.spec.rank for ad in adapters]
        scalings = [ad.spec.scaling for ad in adapters]
        T = x.numel() // max(x.shape[-1], 1)
        coef_args = (ranks, scalings, T, index, weights, shared, x.device,
                     torch.float64 if x.dtype == torch.float64 else torch.float32)
        space = coefficients(*coef_args)
        if space is None:
            return _Call(res, key, _NONE)
        kept, M = space
        c = _Call(res, key, _FUSED)
        c.adapters = [adapters[k] for k in kept]
        c.meta = _Meta(ops, tuple(ranks[k] for k in kept), adapters[0].A.dtype)
        c.p = drop.pop()
        if weights is not None and weights.requires_grad:  # coefficients take the soft weights' gradient: per call
            c.coef_args = coef_args
        else:
            c.M = M
        return c

    def _mlp_call(self, h: Tensor) -> "_Call | None":
        """The prepared fused call when this layer is a gated MLP's ``down_proj`` fed ``h`` (only
        its shape, dtype and device are read): None where the fused MLP does not apply (no
        adapter acts, reference backend, adapter dropout, hooks on this layer)."""
        c = self._prepared(h)
        if c is None or c.kind != _FUSED or c.p > 0:
            return None
        base = self._modules["base_layer"]
        if self._forward_hooks or self._forward_pre_hooks or base._forward_hooks or base._forward_pre_hooks:
            return None
        return c

    def _delta(self, x2d: Tensor, res: ResolvedRouting, base: nn.Linear | None = None) -> Tensor | None:
        """Route ``x2d [T, d_in]`` through the adapters named in ``res``; None if none act.
        With ``base``, return ``base(x2d) + delta`` (fused by the kernel backend when it can)."""
        adapters, index, weights, shared = self._active(res)
        if not adapters:
            return None
        # adapters with different dropout see differently dropped inputs: one call per group
        groups: dict[float, list[int]] = {}
        for j, ad in enumerate(adapters):
            p = ad.spec.dropout if self.training else 0.0
            groups.setdefault(p, []).append(j)
        out = None
        fuse = base is not None and len(groups) == 1
        for p, members in groups.items():
            xin = F.dropout(x2d, p=p, training=True) if p > 0 else x2d
            part = self._call_kernel(xin, adapters, members, index, weights, shared, len(groups) > 1,
                                     base=base if fuse else None, x_base=x2d)
            out = part if out is None else out + part
        if base is not None and not fuse:
            y = base(x2d)
            out = y + out.to(y.dtype)
        return out

    @staticmethod
    def _call_kernel(x: Tensor, adapters: list[LoRAAdapter], members: list[int], index, weights, shared,
                     partial: bool, base: nn.Linear | None = None, x_base: Tensor | None = None) -> Tensor:
        if partial:  # restrict routing to this dropout group's adapters
            index, weights, shared = _restrict(index, weights, shared, members, len(adapters))
            adapters = [adapters[j] for j in members]
        ranks = [ad.spec.rank for ad in adapters]
        scalings = [ad.spec.scaling for ad in adapters]
        if base is not None:  # fused backend: y = base(x_base) + delta(x), x = dropout(x_base) or x_base;
            # the raw parameters go in (cast inside the fused function, no stacking)
            return lora_linear(x_base, base.weight, base.bias, [ad.A for ad in adapters], [ad.B for ad in adapters],
                               ranks, scalings, index=index, weights=weights, shared=shared,
                               x_lora=None if x is x_base else x)
        r_max = max(ranks)
        dt = x.dtype
        if len(adapters) == 1:
            A = adapters[0].A.to(dt)[None]
            B = adapters[0].B.to(dt)[None]
        else:
            A = torch.stack([F.pad(ad.A.to(dt), (0, 0, 0, r_max - ad.spec.rank)) for ad in adapters])
            B = torch.stack([F.pad(ad.B.to(dt), (0, r_max - ad.spec.rank)) for ad in adapters])
        return lora_delta(x, A, B, ranks, scalings, index=index, weights=weights, shared=shared)

    # ---------------------------------------------------------------- merge / reset
    def delta_weight(self, name: str, dtype: torch.dtype = torch.float32) -> Tensor:
        """``s · B A`` of adapter ``name`` as a ``[d_out, d_in]`` matrix in ``dtype``, with the adapter's graph where
        gradients are recorded (merge, unmerge and reset call it under no_grad; the lip encoder's live folded
        program trains through it)."""
        ad = self.adapters[name]
        return ad.spec.scaling * (ad.B.to(dtype) @ ad.A.to(dtype))

    @torch.no_grad()
    def merge(self, name: str) -> None:
        if name in self.merged:
            return
        w = self.base_layer.weight
        if self._merge_backup is None:
            self._merge_backup = w.detach().to("cpu", copy=True)
        w.copy_((w.float() + self.delta_weight(name).to(w.device)).to(w.dtype))
        self.merged.add(name)
        _bump()

    @torch.no_grad()
    def unmerge(self, name: str) -> None:
        if name not in self.merged:
            return
        self.merged.discard(name)
        _bump()
        w = self.base_layer.weight
        w.copy_(self._merge_backup.to(w.device))  # exact restore, then re-apply the others
        if not self.merged:
            self._merge_backup = None
        for other in sorted(self.merged):
            w.copy_((w.float() + self.delta_weight(other).to(w.device)).to(w.dtype))

    @torch.no_grad()
    def reset(self, name: str) -> None:
        """Fresh init of ``name``. A merged adapter's update stays in the base weight for good."""
        self.adapters[name].reset_parameters()
        if name in self.merged:
            self.merged.discard(name)
            _bump()
            if not self.merged:
                self._merge_backup = None
            else:  # base now = old base + this adapter's old update: that is the new backup point
                w = self.base_layer.weight.detach().float()
                for other in self.merged:
                    w = w - self.delta_weight(other).to(w.device)
                self._merge_backup = w.to(self.base_layer.weight.dtype).to("cpu")

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, merged={sorted(self.merged)}"


# -------------------------------------------------------------------- model-level API
def _matches(module_name: str, target: str) -> bool:
    """PEFT-style suffix match: ``q_proj`` matches ``...layers.0.self_attn.q_proj``;
    a target that contains regex characters is a full regex match."""
    if any(c in target for c in "*[]()+?^$|\\"):
        return re.fullmatch(target, module_name) is not None
    return module_name == target or module_name.endswith("." + target)


def _output_layer_names(model: nn.Module) -> set[str]:
    names = set()
    get_out = getattr(model, "get_output_embeddings", None)
    out = get_out() if callable(get_out) else None
    for name, module in model.named_modules():
        if module is out or name.split(".")[-1] in ("lm_head", "output", "embed_out"):
            names.add(name)
    return names


def lora_layers(model: nn.Module) -> list[tuple[str, MultiLoRALinear]]:
    """``(qualified name, layer)`` of every MultiLoRALinear in ``model``."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, MultiLoRALinear)]


def attach(model: nn.Module, adapters: dict[str, LoRASpec], target_modules: list[str] | str,
           overrides: dict[str, dict[str, LoRASpec]] | None = None, fused_mlp: bool = True) -> list[MultiLoRALinear]:
    """Wrap every ``nn.Linear`` whose name matches ``target_modules`` with a MultiLoRALinear
    holding all ``adapters``; freeze every base parameter; return the wrapped layers.

    ``target_modules``: name suffixes (``["q_proj", "v_proj"]``), full-match regexes, or
    ``"all-linear"`` (every linear except the output head). ``overrides`` maps a target
    (same matching) to per-adapter specs for those layers, e.g.
    ``{"o_proj": {"vision": LoRASpec(8, 16)}}``. Layers already wrapped get the new adapters.

    ``fused_mlp``: gated MLPs whose ``down_proj`` gets adapters run ``act(gate) * up -> down``
    as one function that recomputes the product in backward instead of keeping it (less
    activation memory; used when a fused kernel backend applies, see
    :func:`mmlora.kernels.lora_mlp.gated_mlp_forward`).
    """
    if not adapters:
        raise ValueError("attach() needs at least one adapter")
    if isinstance(target_modules, str):
        target_modules = [target_modules]
    all_linear = "all-linear" in target_modules
    heads = _output_layer_names(model) if all_linear else set()
    for p in model.parameters():
        p.requires_grad_(False)
    wrapped: list[MultiLoRALinear] = []
    for name, module in list(model.named_modules()):
        if isinstance(module, MultiLoRALinear):
            hit = any(_matches(name, t) for t in target_modules) or (all_linear and name not in heads)
            if hit:
                _add_all(module, name, adapters, overrides)
                wrapped.append(module)
            continue
        if not isinstance(module, nn.Linear) or name.endswith(".base_layer"):
            continue
        if all_linear:
            hit = name not in heads
        else:
            hit = any(_matches(name, t) for t in target_modules)
        if not hit:
            continue
        layer = MultiLoRALinear(module)
        _add_all(layer, name, adapters, overrides)
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, layer)
        wrapped.append(layer)
    if not wrapped:
        raise ValueError(f"no nn.Linear in the model matches target_modules={target_modules}")
    for layer in wrapped:
        for p in layer.adapters.parameters():
            p.requires_grad_(True)
    if fused_mlp:
        patch_gated_mlps(model)
    return wrapped


def detach(model: nn.Module) -> nn.Module:
    """Remove every adapter from ``model``: merged adapters are unmerged (exact restore of the
    base weights), each MultiLoRALinear is replaced by its base ``nn.Linear``, patched MLP
    forwards and the routing hook are removed. The model then computes exactly what it did
    before :func:`attach` (``requires_grad`` flags stay as attach left them: frozen)."""
    for name, layer in lora_layers(model):
        for ad_name in sorted(layer.merged):
            layer.unmerge(ad_name)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, layer.base_layer)
    unpatch_gated_mlps(model)
    hook = model.__dict__.pop("_mmlora_route_hook", None)
    if hook is not None:
        hook.remove()
    model.__dict__.pop("_mmlora_layer_cache", None)
    _bump()
    return model


def _add_all(layer: MultiLoRALinear, name: str, adapters: dict[str, LoRASpec],
             overrides: dict[str, dict[str, LoRASpec]] | None) -> None:
    for ad_name, spec in adapters.items():
        for target, per_adapter in (overrides or {}).items():
            if _matches(name, target) and ad_name in per_adapter:
                spec = per_adapter[ad_name]
        layer.add_adapter(ad_name, spec)


def _layers_with(model: nn.Module, name: str) -> list[MultiLoRALinear]:
    layers = [m for _, m in lora_layers(model) if name in m.adapters]
    if not layers:
        raise KeyError(f"no layer of the model has an adapter named {name!r}; have {adapter_names(model)}")
    return layers


def adapter_names(model: nn.Module) -> list[str]:
    names: dict[str, None] = {}
    for _, layer in lora_layers(model):
        names.update(dict.fromkeys(layer.adapters))
    return list(names)


def merge(model: nn.Module, name: str) -> None:
    """Add adapter ``name`` into the base weights (it then acts on every token); exact
    :func:`unmerge` restores the previous base weights."""
    for layer in _layers_with(model, name):
        layer.merge(name)


def unmerge(model: nn.Module, name: str) -> None:
    for layer in _layers_with(model, name):
        layer.unmerge(name)


def reset(model: nn.Module, name: str) -> None:
    """Re-initialize adapter ``name`` (A fresh, B = 0) in every layer; only that adapter
    changes. If it was merged, its old update stays in the base weights (mrDPO rounds)."""
    for layer in _layers_with(model, name):
        layer.reset(name)


def adapter_parameters(model: nn.Module, name: str | None = None) -> list[nn.Parameter]:
    """The parameters that train: every adapter's A and B (only adapter ``name`` if given).

    The one place that says what an adapter parameter is."""
    params: list[nn.Parameter] = []
    for _, layer in lora_layers(model):
        for ad_name, ad in layer.adapters.items():
            if name is None or ad_name == name:
                params.extend((ad.A, ad.B))
    if name is not None and not params:
        raise KeyError(f"no adapter named {name!r}; have {adapter_names(model)}")
    return params


# -------------------------------------------------------------------- save / load / export
def _adapter_tensors(model: nn.Module, state_dict: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
    """A/B of every adapter, by ``layer.adapter.A``; with ``state_dict`` (whole tensors by the
    parameter names of ``model``, e.g. gathered under FSDP) the values come from there."""
    out = {}
    for path, layer in lora_layers(model):
        for ad_name, ad in layer.adapters.items():
            for part in ("A", "B"):
                if state_dict is None:
                    t = getattr(ad, part)
                else:
                    name = f"{path}.adapters.{ad_name}.{part}"
                    if name not in state_dict:
                        raise KeyError(f"state_dict lacks the adapter weight {name!r}")
                    t = state_dict[name]
                out[f"{path}.{ad_name}.{part}"] = t.detach().contiguous().cpu()
    return out


def _adapter_config(model: nn.Module) -> dict:
    layers = {}
    for path, layer in lora_layers(model):
        layers[path] = {n: asdict(ad.spec) for n, ad in layer.adapters.items()}
    return {"format": "mmlora-adapters", "version": 1, "adapters": adapter_names(model), "layers": layers}


def _atomic_dir(out_dir: str | os.PathLike, write) -> Path:
    """Write a folder's files through ``write(tmp_dir)`` into a temp folder, then rename."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        write(tmp)
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def save_adapters(model: nn.Module, out_dir: str | os.PathLike,
                  state_dict: Mapping[str, Tensor] | None = None) -> Path:
    """Write ``adapters.safetensors`` (adapter A/B only) and ``adapters.json`` (specs per
    layer) into ``out_dir``, atomically. Base weights are never written. ``state_dict``: take
    the values from there (whole tensors by ``model``'s parameter names) instead of the
    module's own parameters, which under FSDP are shards."""
    tensors, config = _adapter_tensors(model, state_dict), _adapter_config(model)
    if not tensors:
        raise ValueError("the model has no adapters to save")
    return write_adapter_folder(out_dir, config, tensors)


def write_adapter_folder(out_dir: str | os.PathLike, config: dict, tensors: Mapping[str, Tensor]) -> Path:
    """An adapter folder (:func:`save_adapters`' files) from ``(config, tensors)`` as :func:`read_adapter_folder`
    gives them, atomically: a model folder keeps one it read without the module it came from."""
    from safetensors.torch import save_file

    def write(tmp: Path) -> None:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp / ADAPTER_WEIGHTS),
                  metadata={"format": "mmlora-adapters"})
        (tmp / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2))

    return _atomic_dir(out_dir, write)


def read_adapter_folder(in_dir: str | os.PathLike) -> tuple[dict, dict[str, Tensor]]:
    """``(config, tensors)`` of a :func:`save_adapters` folder: the specs (``config["layers"]
    [layer][adapter]``) and the weights by ``layer.adapter.A|B``. Missing, unparsable or foreign
    files raise an error naming the file; only safetensors and JSON are read."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    in_dir = Path(in_dir)
    cfg_path, w_path = in_dir / ADAPTER_CONFIG, in_dir / ADAPTER_WEIGHTS
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p}: missing (expected an mmlora adapter folder)")
    try:
        config = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{cfg_path}: not valid JSON ({e})") from None
    if config.get("format") != "mmlora-adapters" or "layers" not in config:
        raise ValueError(f"{cfg_path}: not an mmlora adapter config (format={config.get('format')!r})")
    try:
        tensors = load_file(str(w_path))
    except (SafetensorError, OSError, RuntimeError) as e:
        raise ValueError(f"{w_path}: unreadable safetensors file ({e})") from None
    return config, tensors


def mix_adapter_folders(base: tuple[dict, Mapping[str, Tensor]], other: tuple[dict, Mapping[str, Tensor]],
                        share: float) -> tuple[dict, dict[str, Tensor]]:
    """``(config, tensors)`` of one adapter per layer whose weight change is ``(1 − share)`` times ``base``'s plus
    ``share`` times ``other``'s (two :func:`read_adapter_folder` results with the same layers and adapter names):
    ``A = [A_base; A_other]``, ``B = [(1 − share) s_base B_base, share s_other B_other]``, rank the sum, scaling 1,
    no dropout. Exact (up to rounding) at every share, which averaging the factors is not: a LoRA trained on from
    another (the judge's encoder LoRA from the release's) moved half-way by its change."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share: in [0, 1], got {share}")
    (cb, tb), (co, to) = base, other
    if set(cb["layers"]) != set(co["layers"]):
        odd = sorted(set(cb["layers"]) ^ set(co["layers"]))
        raise ValueError(f"the two adapter folders hold other layers: {odd[:3]}")
    layers, tensors = {}, {}
    for path, specs in cb["layers"].items():
        if set(specs) != set(co["layers"][path]):
            raise ValueError(f"{path}: adapters {sorted(specs)} against {sorted(co['layers'][path])}")
        layers[path] = {}
        for name, spec in specs.items():
            sb, so = LoRASpec(**spec), LoRASpec(**co["layers"][path][name])
            rank = sb.rank + so.rank
            layers[path][name] = {**asdict(LoRASpec(rank=rank, alpha=float(rank))), "dropout": 0.0}
            key = f"{path}.{name}."
            tensors[key + "A"] = torch.cat([tb[key + "A"].float(), to[key + "A"].float()])
            tensors[key + "B"] = torch.cat([(1 - share) * sb.scaling * tb[key + "B"].float(),
                                            share * so.scaling * to[key + "B"].float()], dim=1)
    return {**cb, "layers": layers}, tensors


def mean_adapter_folders(folders: list[tuple[dict, Mapping[str, Tensor]]], weights: list[float]
                         ) -> tuple[dict, dict[str, Tensor]]:
    """One adapter per layer whose weight change is the weighted mean of ``folders``' (:func:`read_adapter_folder`
    results with the same layers): :func:`mix_adapter_folders` applied in turn, each next folder with its share of
    the weight so far, so the result is exact and its rank the sum of theirs."""
    if not folders or len(weights) != len(folders) or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"mean_adapter_folders: {len(folders)} folder(s), weights {weights}")
    mixed, total = folders[0], weights[0]
    for folder, w in zip(folders[1:], weights[1:]):
        total += w
        mixed = mix_adapter_folders(mixed, folder, w / total if total > 0 else 0.0)
    return mixed


def load_adapters(model: nn.Module, in_dir: str | os.PathLike, strict: bool = True) -> nn.Module:
    """Load adapters saved by :func:`save_adapters`.

    A model without adapters gets them attached from the saved specs; a model with adapters
    must match the file exactly (names and shapes), else ``ValueError`` says what differs.
    Only safetensors and JSON are read: nothing is unpickled or executed.
    """
    config, tensors = read_adapter_folder(in_dir)
    return apply_adapter_folder(model, config, tensors, in_dir, strict)


def apply_adapter_folder(model: nn.Module, config: dict, tensors: Mapping[str, Tensor],
                         in_dir: str | os.PathLike, strict: bool = True) -> nn.Module:
    """:func:`load_adapters` from an adapter folder already read (:func:`read_adapter_folder`'s ``(config,
    tensors)``; ``in_dir`` names it in errors)."""
    in_dir = Path(in_dir)
    cfg_path, w_path = in_dir / ADAPTER_CONFIG, in_dir / ADAPTER_WEIGHTS
    if not lora_layers(model):  # attach what the file describes, layer by layer
        modules = dict(model.named_modules())
        for path, specs in config["layers"].items():
            base = modules.get(path)
            if not isinstance(base, nn.Linear):
                raise ValueError(f"{cfg_path}: layer {path!r} is not an nn.Linear of this model")
            layer = MultiLoRALinear(base)
            for ad_name, spec in specs.items():
                layer.add_adapter(ad_name, LoRASpec(**spec))
            parent_name, _, child = path.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, layer)
        for p in model.parameters():
            p.requires_grad_(False)
        for p in adapter_parameters(model):
            p.requires_grad_(True)
        patch_gated_mlps(model)

    expected = {k: v.shape for k, v in _adapter_tensors(model).items()}
    check_tensors_match(str(w_path), expected, tensors, allow_missing=not strict, allow_unexpected=not strict,
                        what="adapters")
    differ: list[str] = []
    for path, layer in lora_layers(model):
        for ad_name, ad in layer.adapters.items():
            saved_spec = config["layers"].get(path, {}).get(ad_name)
            if saved_spec is not None:
                saved = LoRASpec(**saved_spec)
                differ += [f"{path} {ad_name}: {k} {getattr(ad.spec, k)} -> {getattr(saved, k)}"
                           for k in ("alpha", "dropout", "use_rslora") if getattr(ad.spec, k) != getattr(saved, k)]
                ad.spec = saved
            with torch.no_grad():
                for part in ("A", "B"):
                    key = f"{path}.{ad_name}.{part}"
                    if key in tensors:
                        getattr(ad, part).copy_(tensors[key])
    if differ:  # the saved settings belong to the saved weights; a config that says otherwise is not used
        import logging

        logging.getLogger("mmlora.lora").warning(
            "%s: the saved adapter settings replace the model's own in %d place(s), e.g. %s (edit the saved file to "
            "change them)", cfg_path, len(differ), "; ".join(differ[:2]))
    return model


def export_peft(model: nn.Module, name: str, out_dir: str | os.PathLike,
                base_model_name_or_path: str | None = None) -> Path:
    """Write adapter ``name`` as a PEFT LoRA folder (``adapter_config.json`` +
    ``adapter_model.safetensors``) that ``PeftModel.from_pretrained(base, out_dir)`` loads.

    Layer names are those of ``model`` (the wrapped HF model); per-layer rank/alpha
    differences become PEFT's ``rank_pattern`` / ``alpha_pattern``.
    """
    from safetensors.torch import save_file

    layers = _layers_with(model, name)
    paths = {id(m): p for p, m in lora_layers(model)}
    specs = {paths[id(layer)]: layer.adapters[name].spec for layer in layers}
    dropouts = {s.dropout for s in specs.values()}
    inits = {s.init for s in specs.values()}
    rsl = {s.use_rslora for s in specs.values()}
    if len(dropouts) > 1 or len(rsl) > 1:
        raise ValueError(f"adapter {name!r} mixes dropout or rsLoRA settings across layers; PEFT cannot express that")
    ranks = [s.rank for s in specs.values()]
    alphas = [s.alpha for s in specs.values()]
    r0 = max(set(ranks), key=ranks.count)
    a0 = max(set(alphas), key=alphas.count)
    tensors = {}
    for path, layer in zip(specs, layers):
        ad = layer.adapters[name]
        tensors[f"base_model.model.{path}.lora_A.weight"] = ad.A.detach().float().contiguous().cpu()
        tensors[f"base_model.model.{path}.lora_B.weight"] = ad.B.detach().float().contiguous().cpu()
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model_name_or_path,
        "r": r0,
        "lora_alpha": a0,
        "lora_dropout": dropouts.pop(),
        "use_rslora": rsl.pop(),
        "target_modules": sorted({p.split(".")[-1] for p in specs}),
        "rank_pattern": {re.escape(p): s.rank for p, s in specs.items() if s.rank != r0},
        "alpha_pattern": {re.escape(p): s.alpha for p, s in specs.items() if s.alpha != a0},
        "bias": "none",
        "fan_in_fan_out": False,
        "init_lora_weights": "gaussian" if inits == {"gaussian"} else True,
        "modules_to_save": None,
        "inference_mode": True,
    }
    # PEFT matches target_modules by suffix; restrict to the exact layers when some layers
    # with the same suffix carry no adapter
    all_linear_paths = {p for p, m in model.named_modules() if isinstance(m, (nn.Linear, MultiLoRALinear))
                        and not p.endswith(".base_layer")}
    same_suffix = {p for p in all_linear_paths if p.split(".")[-1] in config["target_modules"]}
    if same_suffix != set(specs):
        config["target_modules"] = "^(" + "|".join(re.escape(p) for p in sorted(specs)) + ")$"

    def write(tmp: Path) -> None:
        save_file(tensors, str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
        (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2))

    return _atomic_dir(out_dir, write)


def iter_adapters(model: nn.Module) -> Iterable[tuple[str, str, LoRAAdapter]]:
    """``(layer path, adapter name, adapter)`` for every adapter in ``model``."""
    for path, layer in lora_layers(model):
        for ad_name, ad in layer.adapters.items():
            yield path, ad_name, ad
