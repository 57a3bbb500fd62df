"""scripts/asr_candidate.py: a candidate is the release with an arm's decoder and encoder LoRA, nothing else changed."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import asr_candidate  # noqa: E402


def tree(d: Path) -> dict[str, bytes]:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture
def folders(tmp_path):
    rel = tmp_path / "release"
    (rel / "whisper_encoder_adapters").mkdir(parents=True)
    (rel / "adapters").mkdir()
    (rel / "config.json").write_text('{"pipeline": {}}')
    (rel / "adapters" / "a.safetensors").write_bytes(b"llm lora")
    save_file({"w": torch.zeros(2)}, str(rel / "whisper_decoder.safetensors"))
    (rel / "whisper_encoder_adapters" / "adapters.json").write_text("{}")
    (rel / "whisper_encoder_adapters" / "adapters.safetensors").write_bytes(b"old enc")
    packed = tmp_path / "packed"
    (packed / "ek2_encoder").mkdir(parents=True)
    save_file({"w": torch.ones(2)}, str(packed / "ek2.safetensors"))
    (packed / "ek2_encoder" / "adapters.json").write_text('{"r": 8}')
    (packed / "ek2_encoder" / "adapters.safetensors").write_bytes(b"new enc")
    save_file({"w": torch.full((2,), 2.0)}, str(packed / "dec_only.safetensors"))  # an arm without ENC_LR
    return rel, packed


def test_replaces_the_decoder_and_encoder_lora_and_keeps_the_rest(folders, tmp_path):
    rel, packed = folders
    out = tmp_path / "cand" / "EK2"
    out.parent.mkdir()
    assert asr_candidate.main([str(packed), "ek2", str(out), "--release", str(rel)]) == 0
    got, before = tree(out), tree(rel)
    assert set(got) == set(before)
    changed = {k for k in got if got[k] != before[k]}
    assert changed == {"whisper_decoder.safetensors", "whisper_encoder_adapters/adapters.json",
                       "whisper_encoder_adapters/adapters.safetensors"}
    assert got["whisper_decoder.safetensors"] == (packed / "ek2.safetensors").read_bytes()
    assert got["whisper_encoder_adapters/adapters.safetensors"] == b"new enc"
    assert not (tmp_path / "cand" / "EK2.tmp").exists()


def test_an_arm_without_encoder_lora_keeps_the_releases(folders, tmp_path):
    rel, packed = folders
    out = tmp_path / "D"
    assert asr_candidate.make_candidate(packed, "dec_only", out, rel) == ["whisper_decoder.safetensors"]
    assert (out / "whisper_encoder_adapters" / "adapters.safetensors").read_bytes() == b"old enc"
    assert (out / "whisper_decoder.safetensors").read_bytes() == (packed / "dec_only.safetensors").read_bytes()


def test_clear_errors_and_no_overwrite_without_force(folders, tmp_path, capsys):
    rel, packed = folders
    out = tmp_path / "C"
    assert asr_candidate.main([str(packed), "nope", str(out), "--release", str(rel)]) == 2
    err = capsys.readouterr().err
    assert "nope.safetensors: no such decoder (arms in" in err and "dec_only, ek2" in err
    assert not out.exists()
    (packed / "bad.safetensors").write_bytes(b"not safetensors at all")
    with pytest.raises(ValueError, match="bad.safetensors: not a readable safetensors file"):
        asr_candidate.make_candidate(packed, "bad", out, rel)
    (packed / "ek2_encoder" / "adapters.json").unlink()
    with pytest.raises(FileNotFoundError, match="ek2_encoder: not an adapter folder .missing adapters.json"):
        asr_candidate.make_candidate(packed, "ek2", out, rel)
    with pytest.raises(FileNotFoundError, match="not a model folder"):
        asr_candidate.make_candidate(packed, "dec_only", out, tmp_path / "nowhere")
    asr_candidate.make_candidate(packed, "dec_only", out, rel)
    with pytest.raises(FileExistsError, match="--force"):
        asr_candidate.make_candidate(packed, "dec_only", out, rel)
    (out / "stray").write_text("x")
    asr_candidate.make_candidate(packed, "dec_only", out, rel, force=True)
    assert not (out / "stray").exists()
