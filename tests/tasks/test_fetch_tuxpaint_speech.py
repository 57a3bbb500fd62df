"""scripts/fetch_tuxpaint_speech.py on a fake .deb (the package's member paths, synthetic audio; no network)."""
from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import load_script
from mmlora.tasks.speech import read_manifest

pytestmark = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")


def _ogg(seconds: float, sr: int = 44_100) -> bytes:
    t = np.arange(int(seconds * sr)) / sr
    buf = io.BytesIO()
    sf.write(buf, 0.3 * np.sin(2 * np.pi * 220 * t), sr, format="OGG", subtype="VORBIS")
    return buf.getvalue()


def _fake_deb(tmp: Path) -> Path:
    """Stamps as the package lays them out: an English recording with its text (several languages' lines), a
    second one at 8 kHz, another language's recording, an English one without a text, one whose text is empty."""
    root = tmp / "pkg"
    stamps = root / "usr/share/tuxpaint/stamps"
    files = {"animals/birds/blackbird_desc.ogg": _ogg(1.25), "animals/birds/blackbird_desc_fr.ogg": _ogg(0.5),
             "animals/birds/blackbird.txt": "A blackbird.\naf.utf8='n Blackbird.\n",
             "animals/mammals/wildboar_desc.ogg": _ogg(1.1, 8_000),
             "animals/mammals/wildboar.txt": "Two wild boars.\nfr.utf8=Deux sangliers.\n",
             "animals/marsupials/wallaby_desc.ogg": _ogg(0.9),
             "animals/empty_desc.ogg": _ogg(0.5), "animals/empty.txt": "\n"}
    for rel, data in files.items():
        (stamps / rel).parent.mkdir(parents=True, exist_ok=True)
        (stamps / rel).write_bytes(data if isinstance(data, bytes) else data.encode())
    (root / "DEBIAN").mkdir()
    (root / "DEBIAN" / "control").write_text("Package: tuxpaint-stamps-default\nVersion: 2022.06.04-1\n"
                                              "Architecture: all\nMaintainer: t <t@t>\nDescription: fake\n")
    deb = tmp / "fake.deb"
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(root), str(deb)], check=True,
                   capture_output=True)
    return deb


def test_each_english_recording_with_a_text_becomes_a_16k_clip(tmp_path, monkeypatch):
    mod = load_script("fetch_tuxpaint_speech")
    deb = _fake_deb(tmp_path)
    assert mod.main(["--out", str(tmp_path / "out"), "--deb", str(deb)]) == 1  # not the pinned package
    digest = hashlib.sha256(deb.read_bytes()).hexdigest()
    monkeypatch.setattr(mod, "SHA256", digest)
    assert mod.main(["--out", str(tmp_path / "out"), "--deb", str(deb)]) == 0
    lines = [json.loads(x) for x in (tmp_path / "out" / "tuxpaint.jsonl").read_text().splitlines()]
    assert [(r["id"], r["text"]) for r in lines] == [("tux-animals-birds-blackbird", "A blackbird."),
                                                      ("tux-animals-mammals-wildboar", "Two wild boars.")]
    for r, seconds in zip(lines, (1.25, 1.1)):
        x, sr = sf.read(tmp_path / "out" / r["audio"])
        assert sr == 16_000 and x.ndim == 1 and abs(len(x) / sr - seconds) < 0.01 and r["duration"] == len(x) / sr
    assert [r.text for r in read_manifest(tmp_path / "out" / "tuxpaint.jsonl", need=("audio",))] == \
        ["A blackbird.", "Two wild boars."]


def test_a_wrong_or_unreadable_package_is_an_error_naming_it(tmp_path, capsys):
    mod = load_script("fetch_tuxpaint_speech")
    with pytest.raises(mod.FetchError, match=r"fake.deb: SHA-256 [0-9a-f]{64}, expected " + mod.SHA256):
        mod.check(_fake_deb(tmp_path))
    bad = tmp_path / "bad.deb"
    bad.write_bytes(b"not a deb")
    with pytest.raises(mod.FetchError, match="bad.deb"):
        mod.read_deb(bad)
