"""CPU smoke test of scripts/bench_lora.py with the tiny config."""
from __future__ import annotations

import pytest

from conftest import load_script


def _load():
    return load_script("bench_lora")


def test_bench_tiny_cpu_writes_table(tmp_path):
    pytest.importorskip("peft")
    out = tmp_path / "bench.md"
    rc = _load().main(["--tiny", "--device", "cpu", "--backends", "fused", "--no-fused-mlp", "--out", str(out)])
    assert rc == 0
    text = out.read_text()
    for row in ("| frozen base |", "| PEFT LoRA, dropout 0 |", "| mmlora single | fused |",
                "| mmlora routed 25/75 | fused |", "| mmlora per-sample 3+text | fused |",
                "| mmlora single | fused, no fused MLP |", "| mmlora per-sample 3+text | fused, no fused MLP |",
                "PEFT adapter_names mixed batch", "mmlora by_sample (fused)"):
        assert row in text, row
    assert "FAILED" not in text


def test_bench_rejects_unknown_backend(capsys):
    assert _load().main(["--tiny", "--device", "cpu", "--backends", "nope", "--no-inference"]) == 2
    assert "unknown backends" in capsys.readouterr().err


def test_bench_saved_activations_drop_with_fused_mlp(tmp_path):
    """--saved counts saved-for-backward bytes on the meta device: the fused gated MLP keeps
    2 [T, ffn] tensors per layer where the frozen base keeps 3 and plain LoRA 4 (+ h = act(g)*u),
    so per layer plain LoRA - base = T*ffn*e + the adapters' inputs, fused - base = that - 2*T*ffn*e."""
    mod = _load()
    cfg = mod.TINY
    rows = {r["variant"]: r["gib"] * 2 ** 30 for r in mod.saved_activations(cfg, log=lambda *a: None)}
    T, e = cfg.batch * cfg.seq, 4  # fp32 tiny config
    plain = rows["mmlora single, no fused MLP"] - rows["frozen base"]
    fused = rows["mmlora single, fused MLP"] - rows["frozen base"]
    assert plain - fused == cfg.layers * 2 * T * cfg.ffn * e
    assert fused < plain / 2
    out = tmp_path / "saved.md"
    assert mod.main(["--tiny", "--saved", "--out", str(out)]) == 0
    assert "| mmlora single, fused MLP |" in out.read_text()


def test_bench_cpu_default_backends_and_triton_refusal(capsys):
    mod = _load()
    assert mod.main(["--tiny", "--device", "cpu", "--backends", "triton", "--no-inference"]) == 2
    assert "needs CUDA" in capsys.readouterr().err
