"""CPU smoke test of scripts/bench_lora.py with the tiny config."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_lora.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_lora", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_lora"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


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
