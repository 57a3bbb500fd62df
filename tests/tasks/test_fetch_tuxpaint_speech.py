"""scripts/fetch_tuxpaint_speech.py on a fake .deb (the package's member paths, synthetic audio; no network)."""
from __future__ import annotations

import hashlib
import io
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import deb_bytes, load_script, tar_bytes

def _ogg(seconds: float, sr: int = 44_100) -> bytes:
    t = np.arange(int(seconds * sr)) / sr
    buf = io.BytesIO()
    sf.write(buf, 0.3 * np.sin(2 * np.pi * 220 * t), sr, format="OGG", subtype="VORBIS")
    return buf.getvalue()


def _fake_deb(tmp: Path) -> Path:
    """Stamps as the package lays them out: English recordings (one at 8 kHz, one without a text), another language's
    (``_desc_fr``, ``_desc_en_GB``), a stamp's sound effect (not speech: ``NAME.ogg``), a folder named ``_desc``."""
    stamps = "./usr/share/tuxpaint/stamps/"
    files = {"animals/birds/blackbird_desc.ogg": _ogg(1.25), "animals/birds/blackbird_desc_fr.ogg": _ogg(0.5),
             "animals/birds/blackbird.txt": "A blackbird.\naf.utf8='n Blackbird.\n",
             "animals/mammals/wildboar_desc.ogg": _ogg(1.1, 8_000),
             "animals/mammals/wildboar.txt": "Two wild boars.\nfr.utf8=Deux sangliers.\n",
             "animals/marsupials/wallaby_desc.ogg": _ogg(0.9),
             "animals/birds/blackbird.ogg": _ogg(0.3), "animals/owl_desc_en_GB.ogg": _ogg(0.7),
             "x_desc/frog.ogg": _ogg(0.2)}
    control = (b"Package: tuxpaint-stamps-default\nVersion: 2022.06.04-1\nArchitecture: all\nMaintainer: t <t@t>\n"
               b"Description: fake\n")
    deb = tmp / "fake.deb"
    # data.tar.xz, as Debian's dpkg-deb writes by default (Ubuntu's would write .zst)
    deb.write_bytes(deb_bytes({"control.tar.xz": tar_bytes({"./control": control}, "w:xz"), "data.tar.xz": tar_bytes(
        {stamps + rel: data if isinstance(data, bytes) else data.encode() for rel, data in files.items()}, "w:xz")}))
    return deb


def test_every_language_s_recording_becomes_a_16k_clip_without_a_text(tmp_path, monkeypatch):
    mod = load_script("fetch_tuxpaint_speech")
    deb = _fake_deb(tmp_path)
    assert mod.main(["--out", str(tmp_path / "out"), "--deb", str(deb)]) == 1  # not the pinned package
    digest = hashlib.sha256(deb.read_bytes()).hexdigest()
    monkeypatch.setattr(mod, "SHA256", digest)
    assert mod.main(["--out", str(tmp_path / "out"), "--deb", str(deb)]) == 0
    lines = [json.loads(x) for x in (tmp_path / "out" / "tuxpaint.jsonl").read_text().splitlines()]
    want = [("tux-animals-birds-blackbird_desc", "en", 1.25), ("tux-animals-birds-blackbird_desc_fr", "fr", 0.5),
            ("tux-animals-mammals-wildboar_desc", "en", 1.1), ("tux-animals-marsupials-wallaby_desc", "en", 0.9),
            ("tux-animals-owl_desc_en_GB", "en_GB", 0.7)]
    assert [(r["id"], r["lang"]) for r in lines] == [w[:2] for w in want]
    for r, (_, _, seconds) in zip(lines, want):
        x, sr = sf.read(tmp_path / "out" / r["audio"])
        assert sr == 16_000 and x.ndim == 1 and abs(len(x) / sr - seconds) < 0.01 and r["duration"] == len(x) / sr
        assert r["text"] == "" and r["split"] == "anchor"
    probe = load_script("whisper_decoder_probe")  # what --anchor reads
    assert [i for _, _, i in probe.read_clips(str(tmp_path / "out" / "tuxpaint.jsonl"))] == [w[0] for w in want]


def test_a_wrong_or_unreadable_package_is_an_error_naming_it(tmp_path, capsys):
    mod = load_script("fetch_tuxpaint_speech")
    with pytest.raises(mod.FetchError, match=r"tuxpaint-stamps-default=2022\.06\.04-1: .*fake.deb has SHA-256 "
                                             r"[0-9a-f]{64}, expected " + mod.SHA256):
        mod.check(_fake_deb(tmp_path))
    bad = tmp_path / "bad.deb"
    bad.write_bytes(b"not a deb")
    with pytest.raises(mod.FetchError, match=r"bad\.deb: not a readable \.deb"):
        mod.read_deb(bad, mod.is_recording)


def test_without_deb_the_package_is_fetched_and_read_by_fetch_human_speech_s_functions(tmp_path, monkeypatch):
    """No ``--deb``: the pinned package is downloaded under the private apt configuration in ``--apt-dir`` (the
    function ``--set val2`` uses) into ``--apt-dir/debs``, then read without ``dpkg`` (the same reader as val2's):
    with every subprocess but apt-get refused, the stamps' recordings come out."""
    mod = load_script("fetch_tuxpaint_speech")
    assert mod.fetch_deb.__module__ == mod.read_deb.__module__ == "fetch_human_speech"
    payload = _fake_deb(tmp_path).read_bytes()
    monkeypatch.setattr(mod, "SHA256", hashlib.sha256(payload).hexdigest())
    calls = []

    def fake_run(cmd, **kw):
        assert cmd[0] == "apt-get", cmd
        calls.append((cmd, kw.get("cwd")))
        if "download" in cmd:
            (Path(kw["cwd"]) / mod.DEB).write_bytes(payload)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: pytest.fail(f"no process may be started: {a}"))
    apt = tmp_path / "apt"
    assert mod.main(["--out", str(tmp_path / "out"), "--apt-dir", str(apt)]) == 0
    opts = ["-o", f"Dir::Etc::SourceList={apt}/etc/sources.list", "-o", "Dir::Etc::SourceParts=/dev/null",
            "-o", f"Dir::State::Lists={apt}/lists", "-o", f"Dir::Cache={apt}/cache"]
    assert calls == [(["apt-get", *opts, "update", "-qq"], str(apt / "debs")),
                     (["apt-get", *opts, "download", "tuxpaint-stamps-default=2022.06.04-1"], str(apt / "debs"))]
    assert (apt / "etc" / "sources.list").read_text() == "deb http://deb.debian.org/debian bookworm main\n"
    assert (apt / "debs" / "tuxpaint-stamps-default_2022.06.04-1_all.deb").read_bytes() == payload
    lines = (tmp_path / "out" / "tuxpaint.jsonl").read_text().splitlines()
    assert len(lines) == 5 and json.loads(lines[0])["id"] == "tux-animals-birds-blackbird_desc"
    assert mod.main(["--out", str(tmp_path / "out2"), "--apt-dir", str(apt)]) == 0 and len(calls) == 2  # cached


def test_keep_takes_every_english_recording_then_a_seeded_draw_of_the_others(tmp_path, monkeypatch, capsys):
    mod = load_script("fetch_tuxpaint_speech")
    clips = [(f"s{i:02d}", lang, b"") for i, lang in enumerate(["fr", "en", "ru", "en_GB", "es", "ca", "en", "el"])]
    assert mod.keep_part(clips, None) is clips
    others = [c for c in clips if not c[1].startswith("en")]
    for seed in (0, 56):
        got = mod.keep_part(clips, 5, seed)
        assert [c[0] for c in got[:3]] == ["s01", "s03", "s06"]  # the English ones first, in order
        drawn = [c[0] for c in got[3:]]
        assert len(drawn) == 2 and set(drawn) <= {c[0] for c in others}
        assert got == mod.keep_part(clips, 5, seed)  # the same draw again
    draws = {tuple(c[0] for c in mod.keep_part(clips, 8, seed)[3:]) for seed in range(20)}
    assert len(draws) > 1 and all(sorted(d) == sorted(c[0] for c in others) for d in draws)
    assert [c[0] for c in mod.keep_part(clips, 2, 0)] == ["s01", "s03"]
    with pytest.raises(mod.FetchError, match="--keep: a positive count, got 0"):
        mod.keep_part(clips, 0)
    # the command line refuses it before the package is read (a --deb that does not exist is never opened)
    with pytest.raises(SystemExit) as exit_:
        mod.main(["--out", str(tmp_path / "out"), "--deb", str(tmp_path / "missing.deb"), "--keep", "0"])
    assert exit_.value.code == 2 and "--keep: a positive count, got 0" in capsys.readouterr().err
    deb = _fake_deb(tmp_path)
    monkeypatch.setattr(mod, "SHA256", hashlib.sha256(deb.read_bytes()).hexdigest())
    assert mod.main(["--out", str(tmp_path / "out"), "--deb", str(deb), "--keep", "2", "--seed", "3"]) == 0
    lines = [json.loads(x) for x in (tmp_path / "out" / "tuxpaint.jsonl").read_text().splitlines()]
    assert [r["id"] for r in lines] == ["tux-animals-birds-blackbird_desc", "tux-animals-mammals-wildboar_desc"]
    assert sorted(p.name for p in (tmp_path / "out" / "audio").iterdir()) == [r["id"] + ".flac" for r in lines]
