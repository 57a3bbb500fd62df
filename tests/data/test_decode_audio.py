"""scripts/decode_audio.py: manifests rewritten to 16-bit WAV copies of their audio (against load_audio of the
originals), other media kept, failures named and left pointing to the original file, reruns incremental."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from conftest import load_script
from mmlora.data.media import load_audio
from mmlora.tasks.speech import read_manifest

ROOT = Path(__file__).resolve().parents[2]
CLIPS = ROOT / "tests" / "data" / "speech"


def _script():
    return load_script("decode_audio")  # its worker function must be importable by name in the worker processes


def _corpus(tmp_path: Path, n: int = 4) -> Path:
    """A copy of n committed test clips (FLAC + lip video) in tmp_path/corp/test.jsonl."""
    corp = tmp_path / "corp"
    rows = [json.loads(line) for line in (CLIPS / "test.jsonl").read_text().splitlines()[:n]]
    for r in rows:
        for key in ("audio", "video"):
            (corp / r[key]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(CLIPS / r[key], corp / r[key])
    (corp / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return corp / "test.jsonl"


def test_wav_copies_match_the_decoded_originals_and_other_fields_stay(tmp_path):
    man = _corpus(tmp_path)
    out = tmp_path / "out"
    assert _script().main([str(man), "--out", str(out), "--workers", "1"]) == 0
    new = out / "corp" / "test.jsonl"
    before, after = read_manifest(man, need=("audio", "video")), read_manifest(new, need=("audio", "video"))
    assert [r.text for r in before] == [r.text for r in after] and [r.id for r in before] == [r.id for r in after]
    for b, a in zip(before, after):
        assert a.audio.suffix == ".wav" and a.audio.is_file() and str(out) in str(a.audio)
        assert a.video.resolve() == b.video.resolve()  # lip videos: the original files
        x, y = load_audio(b.audio).numpy(), load_audio(a.audio).numpy()
        assert x.shape == y.shape and np.abs(x - y).max() <= 0.5 / 32768 + 1e-7
    raw_b = [json.loads(line) for line in man.read_text().splitlines()]
    raw_a = [json.loads(line) for line in new.read_text().splitlines()]
    for b, a in zip(raw_b, raw_a):
        assert {k: v for k, v in b.items() if k not in ("audio", "video")} == {k: v for k, v in a.items()
                                                                              if k not in ("audio", "video")}


def test_a_file_that_cannot_be_decoded_keeps_its_line_and_fails_the_run(tmp_path, capsys):
    man = _corpus(tmp_path)
    bad = read_manifest(man)[1].audio
    bad.write_bytes(b"not audio at all")
    out = tmp_path / "out"
    assert _script().main([str(man), "--out", str(out), "--workers", "2"]) == 1
    assert bad.name in capsys.readouterr().err
    after = read_manifest(out / "corp" / "test.jsonl")
    assert after[1].audio.resolve() == bad.resolve()  # the original: a training run skips it, counted
    assert all(r.audio.suffix == ".wav" for i, r in enumerate(after) if i != 1)


def test_rerun_keeps_existing_wavs_and_chat_form_is_rewritten(tmp_path):
    man = _corpus(tmp_path, n=2)
    rows = [json.loads(line) for line in man.read_text().splitlines()]
    chat = man.parent / "chat.jsonl"
    chat.write_text("".join(json.dumps({"id": r["id"], "audios": [r["audio"]], "messages": [
        {"role": "user", "content": "<audio>Transcribe."}, {"role": "assistant", "content": r["text"]}]}) + "\n"
        for r in rows))
    out = tmp_path / "out"
    mod = _script()
    assert mod.main([str(man), str(chat), "--out", str(out), "--workers", "1"]) == 0
    wavs = sorted((out / "corp" / "audio_wav").iterdir())
    assert len(wavs) == 2  # both manifests name the same two clips: decoded once
    stamp = [os.path.getmtime(w) for w in wavs]
    assert mod.main([str(chat), "--out", str(out), "--workers", "1"]) == 0
    assert [os.path.getmtime(w) for w in wavs] == stamp
    got = read_manifest(out / "corp" / "chat.jsonl")
    assert [r.audio.resolve() for r in got] == [r.audio.resolve() for r in read_manifest(out / "corp" / "test.jsonl")]
    assert mod.main([str(man), str(man), "--out", str(out)]) == 2  # the same output twice: refused


def test_a_bad_manifest_is_named_with_its_line(tmp_path, capsys):
    man = _corpus(tmp_path, n=1)
    man.write_text(man.read_text() + "not json\n")
    assert _script().main([str(man), "--out", str(tmp_path / "out"), "--workers", "1"]) == 2
    assert f"{man.resolve()}:2: not valid JSON" in capsys.readouterr().err
    assert _script().main([str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "out")]) == 2
    assert "missing.jsonl: file not found" in capsys.readouterr().err
