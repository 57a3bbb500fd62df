"""CTranslate2 ``model.bin`` reader/writer and the Whisper-encoder mapping onto transformers.

File layout (little-endian)::

    u32 version
    (version >= 2)  str spec_name, u32 revision           str = u16 length + bytes (NUL-terminated)
    u32 n_variables
    n × { str name, u8 rank, u32 dims[rank],
          (version >= 4) u8 dtype_id, u32 n_bytes        dtype_id: 0 f32, 1 i8, 2 i16, 3 i32, 4 f16, 5 bf16
          (version <  4) u8 item_size, u32 n_items
          bytes data }
    (version >= 3)  u32 n_aliases, n × { str alias, str target }

Whisper encoder names map one-to-one onto ``transformers.WhisperEncoder`` (the decoder's onto ``WhisperDecoder``:
:func:`whisper_decoder_from_ct2`):
``encoder/conv{1,2}`` → ``conv{1,2}``, ``encoder/position_encodings/encodings`` → ``embed_positions.weight``,
``encoder/layer_i/self_attention/linear_0`` = [q; k; v] fused on dim 0 (k has no bias: zeros there),
``…/self_attention/linear_1`` → ``out_proj``, ``…/self_attention/layer_norm`` → ``self_attn_layer_norm``,
``…/ffn/linear_{0,1}`` → ``fc{1,2}``, ``…/ffn/layer_norm`` → ``final_layer_norm``,
``encoder/layer_norm`` → ``layer_norm``; ``gamma``/``beta`` → ``weight``/``bias``.
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

DTYPES: dict[int, torch.dtype] = {0: torch.float32, 1: torch.int8, 2: torch.int16, 3: torch.int32,
                                  4: torch.float16, 5: torch.bfloat16}
DTYPE_IDS = {v: k for k, v in DTYPES.items()}
_NUMPY = {torch.float32: np.float32, torch.int8: np.int8, torch.int16: np.int16, torch.int32: np.int32,
          torch.float16: np.float16, torch.bfloat16: np.int16}
_ITEM_SIZE_V3 = {4: torch.float32, 2: torch.int16, 1: torch.int8}


class CT2FormatError(ValueError):
    """A CTranslate2 file that cannot be read or mapped (the message names the file)."""


@dataclass
class CT2Model:
    """The content of one ``model.bin``."""

    version: int  # binary format version
    spec: str  # e.g. "WhisperSpec"
    revision: int  # spec revision
    variables: dict[str, Tensor] = field(default_factory=dict)  # name -> tensor (scalars are 0-d)
    aliases: dict[str, str] = field(default_factory=dict)  # alias -> target name
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # every variable's shape, kept or not

    def resolved(self) -> dict[str, Tensor]:
        """The variables with each alias (e.g. ``decoder/projection/weight``) bound to its target's tensor."""
        return {**self.variables, **{a: self.variables[t] for a, t in self.aliases.items() if t in self.variables}}


class _Cursor:
    def __init__(self, buf: memoryview, path: Path):
        self.buf, self.pos, self.path = buf, 0, path

    def take(self, n: int, what: str) -> memoryview:
        if self.pos + n > len(self.buf):
            raise CT2FormatError(f"{self.path}: truncated while reading {what} "
                                 f"(needs {n} bytes at offset {self.pos}, file has {len(self.buf)})")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str, what: str):
        size = struct.calcsize("<" + fmt)
        return struct.unpack("<" + fmt, self.take(size, what))

    def string(self, what: str) -> str:
        (n,) = self.unpack("H", what)
        return bytes(self.take(n, what)).rstrip(b"\0").decode("utf-8")


def read_ct2(path: str | Path, prefix: str | None = None) -> CT2Model:
    """Read a CTranslate2 ``model.bin``; only variables whose name starts with ``prefix`` are kept
    (all are still parsed and checked; 0-d config scalars are always kept). Raises :class:`CT2FormatError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CTranslate2 model file not found: {path}")
    data = path.read_bytes()
    cur = _Cursor(memoryview(data), path)
    (version,) = cur.unpack("I", "version")
    if not 1 <= version <= 6:
        raise CT2FormatError(f"{path}: unsupported CTranslate2 binary version {version} (known: 1-6); "
                             "is this a CTranslate2 model.bin?")
    spec, revision = "", 1
    if version >= 2:
        spec = cur.string("spec name")
        (revision,) = cur.unpack("I", "spec revision")
    (n_vars,) = cur.unpack("I", "variable count")
    model = CT2Model(version, spec, revision)
    for _ in range(n_vars):
        name = cur.string("variable name")
        (rank,) = cur.unpack("B", f"rank of {name}")
        dims = cur.unpack("I" * rank, f"shape of {name}") if rank else ()
        if version >= 4:
            dtype_id, n_bytes = cur.unpack("BI", f"dtype of {name}")
            if dtype_id not in DTYPES:
                raise CT2FormatError(f"{path}: variable {name} has unknown dtype id {dtype_id}")
            dtype = DTYPES[dtype_id]
        else:
            item_size, n_items = cur.unpack("BI", f"dtype of {name}")
            if item_size not in _ITEM_SIZE_V3:
                raise CT2FormatError(f"{path}: variable {name} has unknown item size {item_size}")
            dtype, n_bytes = _ITEM_SIZE_V3[item_size], n_items * item_size
        numel = int(np.prod(dims)) if dims else 1
        if n_bytes != numel * torch.tensor([], dtype=dtype).element_size():
            raise CT2FormatError(f"{path}: variable {name} declares {n_bytes} bytes for shape {dims} of {dtype}")
        raw = cur.take(n_bytes, f"data of {name}")
        model.shapes[name] = tuple(dims)
        if prefix is None or name.startswith(prefix) or rank == 0:
            arr = np.frombuffer(raw, dtype=_NUMPY[dtype]).copy()
            t = torch.from_numpy(arr)
            if dtype == torch.bfloat16:
                t = t.view(torch.bfloat16)
            model.variables[name] = t.reshape(dims)
    if version >= 3:
        (n_alias,) = cur.unpack("I", "alias count")
        for _ in range(n_alias):
            alias = cur.string("alias name")
            model.aliases[alias] = cur.string("alias target")
    if cur.pos != len(data):
        raise CT2FormatError(f"{path}: {len(data) - cur.pos} unexpected trailing bytes after the last record")
    return model


def write_ct2(path: str | Path, variables: dict[str, Tensor | int | bool], spec: str = "WhisperSpec",
              revision: int = 3, aliases: dict[str, str] | None = None, version: int = 6) -> None:
    """Write variables in the CTranslate2 layout (version 6 by default; ints → i32, bools → i8)."""
    if version < 4:
        raise ValueError("write_ct2 writes binary versions >= 4 only")

    def s(x: str) -> bytes:
        b = x.encode("utf-8") + b"\0"
        return struct.pack("<H", len(b)) + b

    out = [struct.pack("<I", version), s(spec), struct.pack("<I", revision), struct.pack("<I", len(variables))]
    for name, v in variables.items():
        if isinstance(v, bool):
            v = torch.tensor(v, dtype=torch.int8)
        elif isinstance(v, int):
            v = torch.tensor(v, dtype=torch.int32)
        v = v.detach().cpu().contiguous()
        if v.dtype not in DTYPE_IDS:
            raise ValueError(f"write_ct2: variable {name} has unsupported dtype {v.dtype}")
        raw = (v.view(torch.int16) if v.dtype == torch.bfloat16 else v).numpy().tobytes()
        out += [s(name), struct.pack("<B", v.dim()), struct.pack("<" + "I" * v.dim(), *v.shape),
                struct.pack("<BI", DTYPE_IDS[v.dtype], len(raw)), raw]
    aliases = aliases or {}
    out.append(struct.pack("<I", len(aliases)))
    for a, t in aliases.items():
        out += [s(a), s(t)]
    Path(path).write_bytes(b"".join(out))


# ---------------------------------------------------------------- Whisper encoder mapping

_LAYER = re.compile(r"^encoder/layer_(\d+)/(.+)$")
_SUB = {"self_attention/layer_norm": "self_attn_layer_norm", "self_attention/linear_1": "self_attn.out_proj",
        "ffn/layer_norm": "final_layer_norm", "ffn/linear_0": "fc1", "ffn/linear_1": "fc2"}
_PARAM = {"gamma": "weight", "beta": "bias", "weight": "weight", "bias": "bias"}


def _dequantize(vars_: dict[str, Tensor], name: str) -> Tensor:
    """CTranslate2 int8/int16 weights carry ``<name>_scale``: w = q / scale (per output row)."""
    w = vars_[name]
    scale = vars_.get(name + "_scale")
    if scale is None or w.is_floating_point():
        return w
    return w.float() / scale.float().reshape(-1, *([1] * (w.dim() - 1)))


def whisper_encoder_from_ct2(model: CT2Model, path: str | Path = "model.bin"):
    """Map a Whisper ``CT2Model`` to ``(transformers.WhisperConfig, encoder state dict)``.

    The state dict has ``WhisperEncoder`` keys (``conv1.weight``, ``layers.0.fc1.weight``, …), float
    tensors in the file's dtype. Every ``encoder/*`` variable must be used and every encoder parameter
    filled with the right shape, else :class:`CT2FormatError`.
    """
    from transformers import WhisperConfig

    v = model.resolved()
    if "encoder/conv1/weight" not in v:
        raise CT2FormatError(f"{path}: no encoder/conv1/weight: not a Whisper CTranslate2 model (spec {model.spec!r})")
    sd: dict[str, Tensor] = {}
    used = {"encoder/num_heads"}
    for stem, hf in (("encoder/conv1", "conv1"), ("encoder/conv2", "conv2"), ("encoder/layer_norm", "layer_norm")):
        for p_ct2, p_hf in (("weight", "weight"), ("bias", "bias"), ("gamma", "weight"), ("beta", "bias")):
            if f"{stem}/{p_ct2}" in v:
                sd[f"{hf}.{p_hf}"] = _dequantize(v, f"{stem}/{p_ct2}")
                used.add(f"{stem}/{p_ct2}")
    sd["embed_positions.weight"] = v["encoder/position_encodings/encodings"]
    used.add("encoder/position_encodings/encodings")
    n_layers = 0
    for name in v:
        m = _LAYER.match(name)
        if not m or name.endswith("_scale"):
            continue
        i, rest = int(m.group(1)), m.group(2)
        n_layers = max(n_layers, i + 1)
        sub, _, param = rest.rpartition("/")
        if sub == "self_attention/linear_0":
            w = _dequantize(v, name)
            q, k, val = w.chunk(3, dim=0)
            if param == "weight":
                sd.update({f"layers.{i}.self_attn.q_proj.weight": q, f"layers.{i}.self_attn.k_proj.weight": k,
                           f"layers.{i}.self_attn.v_proj.weight": val})
            else:
                if k.abs().max() != 0:
                    raise CT2FormatError(f"{path}: {name} has a non-zero key bias; Whisper's k_proj has none")
                sd.update({f"layers.{i}.self_attn.q_proj.bias": q, f"layers.{i}.self_attn.v_proj.bias": val})
        elif sub in _SUB and param in _PARAM:
            sd[f"layers.{i}.{_SUB[sub]}.{_PARAM[param]}"] = _dequantize(v, name)
        else:
            continue
        used.add(name)
        if name + "_scale" in v:
            used.add(name + "_scale")
    unused = sorted(n for n in v if n.startswith("encoder/") and n not in used)
    if unused:
        raise CT2FormatError(f"{path}: encoder variables not mapped to WhisperEncoder: {unused[:8]}")
    if "encoder/num_heads" not in v:
        raise CT2FormatError(f"{path}: missing encoder/num_heads")
    d_model, n_mels, _ = sd["conv1.weight"].shape
    shapes = {**model.shapes, **{k: tuple(t.shape) for k, t in v.items()}}
    dec_layers = {int(m.group(1)) for n in shapes if (m := re.match(r"^decoder/layer_(\d+)/", n))}
    dec_emb = shapes.get("decoder/embeddings/weight")
    dec_pos = shapes.get("decoder/position_encodings/encodings")
    dec_ffn = shapes.get("decoder/layer_0/ffn/linear_0/weight")
    dec_heads = v.get("decoder/num_heads")
    cfg = WhisperConfig(
        num_mel_bins=int(n_mels), d_model=int(d_model), encoder_layers=n_layers,
        encoder_attention_heads=int(v["encoder/num_heads"]),
        encoder_ffn_dim=int(sd["layers.0.fc1.weight"].shape[0]) if n_layers else 4 * int(d_model),
        max_source_positions=int(sd["embed_positions.weight"].shape[0]),
        decoder_layers=len(dec_layers) or n_layers,
        decoder_attention_heads=int(dec_heads) if dec_heads is not None else int(v["encoder/num_heads"]),
        decoder_ffn_dim=int(dec_ffn[0]) if dec_ffn else 4 * int(d_model),
        vocab_size=int(dec_emb[0]) if dec_emb else 51865,
        max_target_positions=int(dec_pos[0]) if dec_pos else 448,
    )
    _check_against(sd, _encoder_shapes(cfg), "WhisperEncoder", path)
    return cfg, sd


def _check_against(sd: dict[str, Tensor], ref: dict[str, tuple[int, ...]], what: str, path) -> None:
    """Every key of ``ref`` (a module's parameter shapes) in ``sd`` with that shape, and nothing else."""
    missing, extra = sorted(set(ref) - set(sd)), sorted(set(sd) - set(ref))
    if missing or extra:
        raise CT2FormatError(f"{path}: {what} keys missing {missing[:8]} / unexpected {extra[:8]}")
    for k, shape in ref.items():
        if tuple(sd[k].shape) != shape:
            raise CT2FormatError(f"{path}: {k} has shape {tuple(sd[k].shape)}, {what} expects {shape}")


def _encoder_shapes(cfg) -> dict[str, tuple[int, ...]]:
    """Parameter shapes of ``WhisperEncoder(cfg)`` without allocating it (meta device)."""
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    with torch.device("meta"):
        enc = WhisperEncoder(cfg)
    return {k: tuple(t.shape) for k, t in enc.state_dict().items()}


def whisper_encoder_to_ct2(sd: dict[str, Tensor], num_heads: int) -> dict[str, Tensor]:
    """Inverse of :func:`whisper_encoder_from_ct2` for the encoder (export / test fixtures)."""
    out: dict[str, Tensor] = {"encoder/num_heads": torch.tensor(num_heads, dtype=torch.int16)}
    inv_sub = {v: k for k, v in _SUB.items()}
    for k, t in sd.items():
        parts = k.split(".")
        if parts[0] == "layers":
            i, mod, param = int(parts[1]), ".".join(parts[2:-1]), parts[-1]
            base = f"encoder/layer_{i}/"
            if mod in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
                continue
            ct2_param = {"weight": "gamma", "bias": "beta"}[param] if "layer_norm" in mod else param
            out[f"{base}{inv_sub[mod]}/{ct2_param}"] = t
        elif parts[0] == "embed_positions":
            out["encoder/position_encodings/encodings"] = t
        elif parts[0] == "layer_norm":
            out[f"encoder/layer_norm/{ {'weight': 'gamma', 'bias': 'beta'}[parts[1]] }"] = t
        else:
            out[f"encoder/{parts[0]}/{parts[1]}"] = t
    n_layers = 1 + max((int(k.split(".")[1]) for k in sd if k.startswith("layers.")), default=-1)
    for i in range(n_layers):
        a = f"layers.{i}.self_attn."
        out[f"encoder/layer_{i}/self_attention/linear_0/weight"] = torch.cat(
            [sd[a + "q_proj.weight"], sd[a + "k_proj.weight"], sd[a + "v_proj.weight"]])
        qb = sd[a + "q_proj.bias"]
        out[f"encoder/layer_{i}/self_attention/linear_0/bias"] = torch.cat([qb, torch.zeros_like(qb), sd[a + "v_proj.bias"]])
    return out


# ---------------------------------------------------------------- Whisper decoder mapping (the judge of the beams)

_DEC_SUB = {"self_attention/layer_norm": "self_attn_layer_norm", "self_attention/linear_1": "self_attn.out_proj",
            "attention/layer_norm": "encoder_attn_layer_norm", "attention/linear_0": "encoder_attn.q_proj",
            "attention/linear_2": "encoder_attn.out_proj", **{k: v for k, v in _SUB.items() if k.startswith("ffn/")}}
_FUSED = {"self_attention/linear_0": ("self_attn", ("q_proj", "k_proj", "v_proj")),  # [q; k; v] on dim 0
          "attention/linear_1": ("encoder_attn", ("k_proj", "v_proj"))}  # cross-attention: [k; v] on dim 0


def whisper_decoder_from_ct2(model: CT2Model, cfg, path: str | Path = "model.bin") -> dict[str, Tensor]:
    """The ``transformers`` ``WhisperDecoder(cfg)`` state dict of a Whisper ``CT2Model`` (``cfg``: the config that
    :func:`whisper_encoder_from_ct2` gives for the same file). ``decoder/embeddings`` → ``embed_tokens`` (the output
    projection is tied to it), ``decoder/position_encodings/encodings`` → ``embed_positions``; in each layer
    ``self_attention/linear_0`` = [q; k; v] and the cross ``attention/linear_1`` = [k; v] fused on dim 0 (k has no bias:
    zeros there), ``attention/linear_{0,2}`` → ``encoder_attn.{q,out}_proj``, ``ffn`` as in the encoder. Every
    ``decoder/*`` variable must be used and every parameter filled with the right shape, else :class:`CT2FormatError`."""
    from transformers.models.whisper.modeling_whisper import WhisperDecoder

    v = model.resolved()
    if "decoder/embeddings/weight" not in v:
        raise CT2FormatError(f"{path}: no decoder/embeddings/weight: not a Whisper CTranslate2 model with its decoder")
    sd = {"embed_tokens.weight": _dequantize(v, "decoder/embeddings/weight"),
          "embed_positions.weight": v["decoder/position_encodings/encodings"],
          "layer_norm.weight": v["decoder/layer_norm/gamma"], "layer_norm.bias": v["decoder/layer_norm/beta"]}
    used = {"decoder/embeddings/weight", "decoder/position_encodings/encodings", "decoder/layer_norm/gamma",
            "decoder/layer_norm/beta", "decoder/projection/weight"}
    used |= {n for n, t in v.items() if n.startswith("decoder/") and t.dim() == 0}  # config scalars (num_heads, ...)
    for name in v:
        m = re.match(r"^decoder/layer_(\d+)/(.+)$", name)
        if not m or name.endswith("_scale"):
            continue
        i, (sub, _, param) = int(m.group(1)), m.group(2).rpartition("/")
        if sub in _FUSED:
            mod, parts = _FUSED[sub]
            for part, t in zip(parts, _dequantize(v, name).chunk(len(parts), dim=0)):
                if param == "bias" and part == "k_proj":
                    if t.abs().max() != 0:
                        raise CT2FormatError(f"{path}: {name} has a non-zero key bias; Whisper's k_proj has none")
                    continue
                sd[f"layers.{i}.{mod}.{part}.{param}"] = t
        elif sub in _DEC_SUB and param in _PARAM:
            sd[f"layers.{i}.{_DEC_SUB[sub]}.{_PARAM[param]}"] = _dequantize(v, name)
        else:
            continue
        used.update({name, name + "_scale"})
    unused = sorted(n for n in v if n.startswith("decoder/") and n not in used)
    if unused:
        raise CT2FormatError(f"{path}: decoder variables not mapped to WhisperDecoder: {unused[:8]}")
    with torch.device("meta"):
        ref = {k: tuple(t.shape) for k, t in WhisperDecoder(cfg).state_dict().items()}
    _check_against(sd, ref, "WhisperDecoder", path)
    return sd

