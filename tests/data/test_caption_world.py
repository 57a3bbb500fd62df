"""Procedural caption world: determinism, video/audio read back, event/frame consistency, manifest."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from mmlora.data import caption_audio, caption_world
from mmlora.data.caption_events import COLOURS, DIRECTIONS, SIZES, Event
from mmlora.data.caption_world import (CorpusConfig, WorldConfig, make_corpus, render_frame, resolve_voices,
                                       simulate)

DATA = Path(__file__).parent / "captions"


def _corpus(tmp: Path, seed: int = 3, **kw) -> CorpusConfig:
    world = WorldConfig(size=64, min_duration=2.0, max_duration=3.0)
    cfg = CorpusConfig(out=str(tmp), clips=2, images=2, seed=seed, references=2, world=world,
                       sound=caption_audio.SoundConfig(tts="none"), **kw)
    make_corpus(cfg)
    return cfg


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
            and p.name != "corpus.json"}


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    _corpus(tmp_path / "a")
    _corpus(tmp_path / "b")
    _corpus(tmp_path / "c", seed=4)
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert set(a) == {"manifest.jsonl", "images.jsonl", "clips/clip_00000.mp4", "clips/clip_00000.flac",
                      "clips/clip_00001.mp4", "clips/clip_00001.flac", "images/img_00000.png",
                      "images/img_00001.png"}
    # Everything but the h264 streams is byte-identical. libx264 may code a macroblock differently
    # from one process to the next (same decoded picture), so videos are compared decoded.
    assert {k: v for k, v in a.items() if not k.endswith(".mp4")} == {k: v for k, v in b.items() if not k.endswith(".mp4")}
    for name in ("clips/clip_00000.mp4", "clips/clip_00001.mp4"):
        fa, fb = _frames(tmp_path / "a" / name), _frames(tmp_path / "b" / name)
        assert fa.shape == fb.shape and np.array_equal(fa, fb)
    assert a["manifest.jsonl"] != c["manifest.jsonl"]
    assert not np.array_equal(_frames(tmp_path / "a" / "clips/clip_00000.mp4")[:1],
                              _frames(tmp_path / "c" / "clips/clip_00000.mp4")[:1])


def _frames(path: Path) -> np.ndarray:
    import decord

    vr = decord.VideoReader(str(path))
    return vr.get_batch(list(range(len(vr)))).asnumpy()


def test_decord_reads_back_what_was_rendered(tmp_path):
    import decord
    import soundfile as sf

    cfg = _corpus(tmp_path)
    rec = json.loads((tmp_path / "manifest.jsonl").read_text().splitlines()[0])
    vr = decord.VideoReader(str(tmp_path / rec["videos"][0]))
    assert len(vr) == round(rec["duration"] * 25) and vr.get_avg_fps() == 25.0
    scene = simulate(np.random.default_rng([cfg.seed, 0]), cfg.world)
    for i in (0, len(vr) // 2, len(vr) - 1):
        got = vr[i].asnumpy().astype(np.float32)
        want = render_frame(scene, i / 25, 64).astype(np.float32)
        assert got.shape == (64, 64, 3)
        assert np.abs(got - want).mean() < 6.0  # h264 at CRF 23 on flat shapes
    audio, sr = sf.read(str(tmp_path / rec["audios"][0]))
    assert sr == 16000 and audio.ndim == 1 and len(audio) == round(rec["duration"] * 16000)


def test_events_agree_with_the_rendered_frames():
    """Each move/grow/shrink/recolour/appear/leave event is visible in the frames at its start and end."""
    cfg = WorldConfig(size=96)
    checked = 0
    for i in range(12):
        scene = simulate(np.random.default_rng([11, i]), cfg)
        for e in scene.events:
            if e.obj is None or e.action == "collide":
                continue
            if e.action == "appear":
                track = next(k for k in scene.tracks if k.appear == e.start and k.shape == e.obj.shape
                             and k.colours[0][1] == e.obj.colour)
            elif e.action == "leave":
                track = next(k for k in scene.tracks if k.leave == e.start and k.shape == e.obj.shape)
            else:
                track = next(k for k in scene.tracks if k.appear <= e.start < k.leave
                             and k.obj(max(e.start - 1e-3, 0.0)).name() == e.obj.name())
            alone = caption_world.Scene(scene.duration, [track], scene.backgrounds[:1], [])

            def mask(t, colour):
                return np.all(render_frame(alone, t, 96) == COLOURS[colour], axis=-1)

            before, after = mask(e.start - 0.04, e.obj.colour), mask(e.end + 0.04, e.obj.colour)
            if e.action == "appear" and e.start > 0:
                assert not before.any() and after.any()
            elif e.action == "leave":
                assert before.any() and not after.any()
            elif e.action == "recolour":
                assert mask(e.end + 0.04, e.value).sum() >= before.sum() * 0.9
            elif e.action in ("grow", "shrink"):
                assert (after.sum() > before.sum()) == (e.action == "grow")
                assert e.obj.size == ("small" if e.action == "grow" else "large")
            elif e.action == "move":
                (y0, x0), (y1, x1) = np.argwhere(before).mean(0), np.argwhere(after).mean(0)
                dx, dy = DIRECTIONS[e.value]
                assert (x1 - x0) * dx + (y1 - y0) * dy > 0.1 * 96
            else:
                continue
            checked += 1
    assert checked > 40


def test_object_identity_is_unique_and_sizes_are_known():
    for i in range(40):
        scene = simulate(np.random.default_rng([5, i]), WorldConfig())
        for t in np.arange(0, scene.duration, 0.2):
            objs = [k.obj(t) for k in scene.tracks if k.appear <= t < k.leave]
            assert len({(o.colour, o.shape) for o in objs}) == len(objs)
        for e in scene.events:
            assert 0 <= e.start <= e.end <= scene.duration
            if e.obj is not None:
                assert e.obj.size in SIZES and e.obj.colour in COLOURS


def test_committed_corpus_matches_generator_and_schema():
    import decord
    import soundfile as sf

    info = json.loads((DATA / "corpus.json").read_text())
    recs = [json.loads(line) for line in (DATA / "manifest.jsonl").read_text().splitlines()]
    assert len(recs) == info["clips"] >= 24
    world = WorldConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in info["config"]["world"].items()})
    for rec in recs:
        assert rec["messages"][0]["role"] == "user" and "<video>" in rec["messages"][0]["content"]
        assert rec["messages"][1] == {"role": "assistant", "content": rec["references"][0]}
        assert all((DATA / p).is_file() for p in rec["videos"] + rec["audios"])
        events = [Event.from_json(e) for e in rec["events"]]
        audio, sr = sf.read(str(DATA / rec["audios"][0]))
        assert sr == 16000 and len(audio) == round(rec["duration"] * sr)
        quiet = np.ones(len(audio), bool)
        for e in events:  # every audible event has sound in its window, silence elsewhere
            at = e.end if e.action == "collide" else e.start
            if e.modality != "visual":
                a, b = int(at * sr), int((at + 0.05) * sr) if e.modality == "audiovisual" else int(e.end * sr)
                assert np.abs(audio[a:b + 1]).max() > 0.05, (rec["id"], e)
                quiet[max(0, a - 1600):int((e.end + 1.0) * sr)] = False
        assert np.abs(audio[quiet]).max(initial=0.0) < 1e-3
    for idx in (0, 1, 2):  # the visual events and frames are what the generator makes today
        scene = simulate(np.random.default_rng([info["config"]["seed"], idx]), world)
        visual = [e for e in recs[idx]["events"] if e["modality"] != "audio"]
        assert visual == [e.to_json() for e in scene.events]
        vr = decord.VideoReader(str(DATA / recs[idx]["videos"][0]))
        got = vr[len(vr) // 2].asnumpy().astype(np.float32)
        assert np.abs(got - render_frame(scene, (len(vr) // 2) / 25, world.size)).mean() < 6.0
    images = [json.loads(line) for line in (DATA / "images.jsonl").read_text().splitlines()]
    assert len(images) == info["images"]
    from PIL import Image

    for rec in images:
        img = np.asarray(Image.open(DATA / rec["images"][0]).convert("RGB"))
        assert img.shape == (world.size, world.size, 3)
        for e in map(Event.from_json, rec["events"]):
            if e.action == "present":  # every listed object's colour is in the picture
                assert np.all(img == COLOURS[e.obj.colour], axis=-1).sum() > 20


def test_without_espeak_tones_only_with_a_warning(monkeypatch):
    monkeypatch.setattr(caption_world, "tts_available", lambda: False)
    with pytest.warns(UserWarning, match="espeak-ng not found"):
        assert resolve_voices(caption_audio.SoundConfig(tts="auto")) == ([], "none")
    with pytest.raises(RuntimeError, match="setup_caption_tools.sh"):
        resolve_voices(caption_audio.SoundConfig(tts="espeak-ng"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_voices(caption_audio.SoundConfig(tts="none")) == ([], "none")


@pytest.mark.skipif(not caption_audio.tts_available(), reason="espeak-ng not installed")
def test_espeak_words_are_spoken():
    y = caption_audio.speak("banana", "en-us", caption_audio.SoundConfig())
    assert y.dtype == np.float32 and 0.2 < len(y) / 16000 < 1.5 and np.abs(y).max() == pytest.approx(1.0)


def test_tones_are_distinct():
    spectra = {}
    for k in ("chime", "pop", "thud", "bell", "whistle", "buzzer"):
        y = caption_audio.tone(k)
        assert np.abs(y).max() == pytest.approx(1.0, abs=1e-6)
        spec = np.abs(np.fft.rfft(y, 16000))
        spectra[k] = int(np.argmax(spec))  # peak frequency in Hz
    assert len(set(spectra.values())) == 6, spectra


def test_cli_writes_corpus(tmp_path, capsys):
    rc = caption_world.main(["--out", str(tmp_path), "--clips", "1", "--images", "1", "--size", "64",
                             "--min-duration", "2", "--max-duration", "2.5", "--tts", "none"])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 0 and summary["clips"] == 1 and summary["tts"] == "none"
    assert (tmp_path / "clips" / "clip_00000.mp4").is_file() and (tmp_path / "images" / "img_00000.png").is_file()
    with pytest.raises(SystemExit):
        caption_world.main(["--out", str(tmp_path), "--size", "63"])
