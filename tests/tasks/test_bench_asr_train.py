"""scripts/bench_asr_train.py on the tiny CPU recipe: it runs, times every part of the step for the base model and
a variant, and writes the tables (a smoke test: the timings themselves are for docs/PERFORMANCE.md, not tests)."""
from __future__ import annotations

from pathlib import Path

from conftest import load_script

ROOT = Path(__file__).resolve().parents[2]


def test_bench_asr_train_writes_step_tables_for_each_variant(tmp_path):
    mod = load_script("bench_asr_train")
    out = tmp_path / "bench.md"
    rc = mod.main([str(ROOT / "recipes" / "asr_tiny.yaml"), f"data.train_manifest={ROOT}/tests/data/speech/train.jsonl",
                   "data.val_manifest=null", "--batch-sizes", "2,3", "--steps", "1", "--workers", "0",
                   "--loader-batches", "2", "--profile", "--variant", "r4:model.adapters={default: {rank: 4, alpha: 8}}",
                   "--out", str(out)])
    assert rc == 0
    rows = [line.split("|")[1:-1] for line in out.read_text().splitlines() if line.startswith("| ")]
    steps = {(r[0].strip(), r[1].strip()): [float(x) for x in r[2:10]] for r in rows if len(r) == 11 and r[0].strip() in ("base", "r4")}
    assert set(steps) == {("base", "2"), ("base", "3"), ("r4", "2"), ("r4", "3")}
    for enc, fwd, bwd, opt, step, host, sps, tps in steps.values():  # five numbers printed to 0.1: 5 x 0.05 apart at most
        assert min(enc, fwd, bwd, opt) > 0 and abs(step - (enc + fwd + bwd + opt)) <= 0.25 + 1e-9 and sps > 0 and tps > 0
    assert "torch.profiler" in out.read_text() and "aten::" in out.read_text()
