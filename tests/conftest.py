"""Shared fixtures: tiny random decoders of the three supported families (CPU, fp32)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(2)
# the scripts that tests start in a child process (signal_script.py, ddp_script.py, ...) import mmlora from this
# checkout even where it is not installed: the GPU machine's image (session 42: 6 such tests failed there without it)
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path(__file__).resolve().parents[1]),
                                                         os.environ.get("PYTHONPATH")) if p)


def tiny_llm(family: str = "llama", seed: int = 0, vocab: int = 128, layers: int = 2):
    """A tiny random causal LM (Llama / Qwen2 / Phi-3) in eval mode, fp32."""
    import transformers as tf

    torch.manual_seed(seed)
    common = dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                  pad_token_id=0, bos_token_id=1, eos_token_id=2)
    if family == "llama":
        cfg = tf.LlamaConfig(**common)
        model = tf.LlamaForCausalLM(cfg)
    elif family == "qwen2":
        cfg = tf.Qwen2Config(**common)
        model = tf.Qwen2ForCausalLM(cfg)
    elif family == "phi3":
        cfg = tf.Phi3Config(**common)
        model = tf.Phi3ForCausalLM(cfg)
    else:
        raise ValueError(family)
    return model.eval()


@pytest.fixture
def llama():
    return tiny_llm("llama")


def randomize_adapters(model, seed: int = 1, std: float = 0.1):
    """Give every adapter random non-zero A and B (B is zero at init)."""
    from mmlora.lora import iter_adapters

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, _, ad in iter_adapters(model):
            ad.A.copy_(torch.randn(ad.A.shape, generator=g) * std)
            ad.B.copy_(torch.randn(ad.B.shape, generator=g) * std)


def installed(dist: str, version: str) -> bool:
    """Whether the distribution ``dist`` is installed at exactly ``version`` (real-asset tests)."""
    import importlib.metadata as md

    try:
        return md.version(dist) == version
    except md.PackageNotFoundError:
        return False


def load_script(name: str, path=None):
    """``scripts/<name>.py`` (or the file ``path``, relative to the repository, e.g. a test module that a package of
    the same name hides) imported as module ``name`` (registered in ``sys.modules``: dataclasses look their module up
    while being defined, and worker processes import functions by module name)."""
    import importlib.util
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location(name, root / (path or f"scripts/{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def tar_bytes(members: dict[str, bytes], mode: str = "w:gz") -> bytes:
    """A tar archive (bytes; gzip, or another compression with ``mode``, e.g. "w:xz") holding ``members``
    (name -> bytes), in order."""
    import io
    import tarfile

    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode=mode) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def deb_bytes(members: dict[str, bytes]) -> bytes:
    """A Debian package (bytes) as ``dpkg-deb`` lays one out, built without it: an ar archive of ``debian-binary``
    and then ``members`` (name -> bytes, e.g. ``control.tar.xz``, ``data.tar.xz``), in order."""
    import io

    out = io.BytesIO()
    out.write(b"!<arch>\n")
    for name, data in {"debian-binary": b"2.0\n", **members}.items():
        out.write(f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode() + data)
        out.write(b"\n" * (len(data) % 2))
    return out.getvalue()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Eight short tone clips with noise-frame lip videos and three-word transcripts (the speech task tests)."""
    import json

    import numpy as np
    import soundfile as sf

    from mmlora.data.lipvideo import write_mp4

    out = tmp_path_factory.mktemp("speech")
    rng = np.random.default_rng(0)
    words = ["red", "blue", "green", "one", "two", "three"]
    lines = []
    for i in range(8):
        n = 16000 + 4000 * (i % 3)
        t = np.arange(n) / 16000
        sf.write(out / f"u{i}.flac", (0.2 * np.sin(2 * np.pi * (200 + 50 * i) * t)).astype(np.float32), 16000)
        write_mp4(out / f"u{i}.mp4", (rng.random((n * 25 // 16000, 32, 32)) * 255).astype(np.uint8))
        lines.append({"id": f"u{i}", "audio": f"u{i}.flac", "video": f"u{i}.mp4",
                      "text": " ".join(words[j % 6] for j in range(i, i + 3)), "voice": f"v{i % 2}"})
    (out / "train.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return out
