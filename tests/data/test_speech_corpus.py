"""Speech corpus: committed sample set (no TTS needed), augmentation maths, lip video, text
cleaning, and (skipped without the TTS binaries) seeded reproducible generation."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import shutil
from pathlib import Path

import numpy as np
import pytest

from mmlora.data import lipvideo as LV
from mmlora.data import speech_augment as A
from mmlora.data import speech_corpus as C
from mmlora.data.speech_text import TextConfig, clean_sentence

SAMPLE = Path(__file__).parent / "speech"
FIELDS = {"id", "audio", "video", "text", "voice", "split", "snr", "noise", "speed", "gain_db", "rt60", "duration", "frames",
          "seed"}


def _read(name: str) -> list[dict]:
    return [json.loads(ln) for ln in (SAMPLE / name).read_text().splitlines() if ln.strip()]


def _frames(path: Path) -> np.ndarray:
    import decord

    vr = decord.VideoReader(str(path))
    return vr.get_batch(list(range(len(vr)))).asnumpy()[..., 0].astype(np.float64)


def _log_energy(x: np.ndarray, sr: int, T: int) -> np.ndarray:
    hop = sr // 25
    return np.log(np.array([np.sqrt(np.mean(x[i * hop : (i + 1) * hop] ** 2) + 1e-12) for i in range(T)]))


# --- committed sample set (no TTS) --------------------------------------------------------------
def test_committed_manifest_schema_and_files():
    import decord
    import soundfile as sf

    recs = _read("manifest.jsonl")
    assert 30 <= len(recs) <= 80
    assert {r["split"] for r in recs} == {"train", "val", "test"}
    voices = {s: {r["voice"] for r in recs if r["split"] == s} for s in ("train", "val", "test")}
    tr, va, te = voices["train"], voices["val"], voices["test"]
    assert not (tr & va) and not (tr & te) and not (va & te)
    texts = [r["text"] for r in recs]
    assert len(set(texts)) == len(texts)  # sentences are not reused across clips
    for r in recs:
        assert FIELDS <= set(r), r["id"]
        assert r["text"].isascii() and r["text"].strip() == r["text"] and "  " not in r["text"]
        info = sf.info(str(SAMPLE / r["audio"]))
        assert (info.samplerate, info.channels) == (16000, 1), r["audio"]
        assert abs(info.frames / 16000 - r["duration"]) < 1e-3
        vr = decord.VideoReader(str(SAMPLE / r["video"]))
        assert len(vr) == r["frames"] == math.ceil(info.frames / 16000 * 25 - 1e-9)
        assert abs(vr.get_avg_fps() - 25.0) < 1e-6
        if r["split"] != "train":  # held-out clips are clean and unperturbed
            assert r["snr"] is None and r["speed"] == 1.0 and r["gain_db"] == 0.0 and r["rt60"] is None
    by_split = {s: [r["id"] for r in _read(f"{s}.jsonl")] for s in ("train", "val", "test")}
    assert sum(by_split.values(), []) == [r["id"] for r in recs]


def test_committed_lip_video_follows_the_audio():
    """Mouth opening (dark cavity pixels) correlates with the audio's log energy, best at lag 0."""
    import soundfile as sf

    by_lag = []
    for r in _read("manifest.jsonl"):
        if r["snr"] is not None:
            continue
        x, sr = sf.read(str(SAMPLE / r["audio"]), dtype="float32")
        F = _frames(SAMPLE / r["video"])
        T = len(F)
        e = _log_energy(x, sr, T)
        o = (F < 60).reshape(T, -1).sum(1).astype(np.float64)
        row = []
        for lag in (-4, 0, 4):
            a, b = o[max(0, lag) : T + min(0, lag)], e[max(0, -lag) : T - max(0, lag)]
            row.append(np.corrcoef(a, b)[0, 1])
        by_lag.append(row)
    m = np.nanmean(np.array(by_lag), axis=0)
    assert m[1] > 0.3, m
    assert m[1] > m[0] + 0.2 and m[1] > m[2] + 0.2, m


def test_committed_noisy_copies_have_the_stated_snr():
    import soundfile as sf

    clean = {r["id"]: r for r in _read("test.jsonl")}
    noisy = _read("test_babble_snr0.jsonl")
    assert len(noisy) == len(clean)
    for r in noisy:
        c = clean[r["id"].rsplit("_", 1)[0]]
        same = (r["video"], r["text"], r["voice"], r["snr"], r["noise"])
        assert same == (c["video"], c["text"], c["voice"], 0.0, "babble")
        s, _ = sf.read(str(SAMPLE / c["audio"]), dtype="float64")
        y, _ = sf.read(str(SAMPLE / r["audio"]), dtype="float64")
        scale = np.dot(y, s) / np.dot(s, s)  # the mix may have been scaled down as a whole
        snr = 10 * np.log10(np.mean((scale * s) ** 2) / np.mean((y - scale * s) ** 2))
        assert abs(snr - 0.0) < 1.5, (r["id"], snr)


# --- augmentation -------------------------------------------------------------------------------
@pytest.mark.parametrize("snr", [-5.0, 0.0, 7.5, 20.0])
def test_mix_at_snr_is_exact(snr):
    rng = np.random.default_rng(0)
    s = (0.1 * np.sin(np.arange(16000) * 0.05)).astype(np.float32)
    n = A.white_noise(16000, rng)
    y = A.mix_at_snr(s, n, snr, peak=1e9).astype(np.float64)
    got = 10 * np.log10(A.power(s) / A.power(y - s))
    assert abs(got - snr) < 1e-3
    # peak limiting scales the whole mix: the SNR stays the same
    z = A.mix_at_snr(s * 20, n, snr, peak=0.5).astype(np.float64)
    assert np.abs(z).max() <= 0.5 + 1e-6
    k = np.dot(z, s) / np.dot(s, s) if snr > 10 else None
    if k is not None:
        assert abs(10 * np.log10(A.power(k * s) / A.power(z - k * s)) - snr) < 0.5


def test_mix_at_snr_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        A.mix_at_snr(np.ones(10, np.float32), np.ones(11, np.float32), 0.0)
    with pytest.raises(ValueError, match="silent"):
        A.mix_at_snr(np.zeros(10, np.float32), np.ones(10, np.float32), 0.0)


def test_babble_is_seeded_sum_of_pool_utterances():
    pool = [np.sin(np.arange(n) * w).astype(np.float32) for n, w in [(3000, 0.1), (5000, 0.23), (7000, 0.31), (4000, 0.05)]]
    a = A.babble_noise(pool, 12345, np.random.default_rng(3))
    b = A.babble_noise(pool, 12345, np.random.default_rng(3))
    c = A.babble_noise(pool, 12345, np.random.default_rng(4))
    assert a.shape == (12345,) and np.array_equal(a, b) and not np.array_equal(a, c)
    spec = np.abs(np.fft.rfft(a))
    peaks = {round(2 * np.pi * k / 12345, 2) for k in np.argsort(spec)[-6:]}
    assert peaks & {0.1, 0.23, 0.31, 0.05}  # made of the pool's talkers
    with pytest.raises(ValueError, match="empty"):
        A.babble_noise([], 10, np.random.default_rng(0))


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_perturb_scales_length_and_pitch(factor):
    sr, f0 = 16000, 440.0
    x = np.sin(2 * np.pi * f0 * np.arange(sr) / sr).astype(np.float32)
    y = A.speed_perturb(x, sr, factor)
    assert abs(len(y) - len(x) / factor) <= 1
    k = np.argmax(np.abs(np.fft.rfft(y * np.hanning(len(y)))))
    assert abs(k * sr / len(y) - f0 * factor) < 3.0


@pytest.mark.parametrize("rt60", [0.25, 0.6])
def test_synthetic_rir_decays_60db_at_rt60(rt60):
    h = A.synthetic_rir(16000, rt60, 4.0, np.random.default_rng(1))
    assert h[0] == 1.0 and abs(10 * np.log10(1.0 / np.sum(h[1:] ** 2)) - 4.0) < 1e-6
    edc = np.cumsum(h[1:][::-1] ** 2)[::-1]
    edc_db = 10 * np.log10(edc / edc[0])
    t5, t25 = np.argmax(edc_db < -5) / 16000, np.argmax(edc_db < -25) / 16000
    assert abs(3 * (t25 - t5) - rt60) < 0.1 * rt60  # T20 extrapolated to 60 dB


def test_reverb_keeps_length_power_and_timing():
    rng = np.random.default_rng(0)
    x = np.zeros(16000, np.float32)
    x[4000:4400] = rng.standard_normal(400)
    y = A.add_reverb(x, A.synthetic_rir(16000, 0.4, 6.0, rng))
    assert y.shape == x.shape and abs(A.power(y) / A.power(x) - 1) < 1e-5
    assert np.argmax(np.abs(y)) in range(4000, 4400)  # the direct path is not delayed
    assert np.abs(y[5000:8000]).max() > 1e-3 and np.abs(x[5000:8000]).max() == 0  # a tail after the burst


def test_augment_train_clip_with_reverb_and_noise():
    cfg = C.CorpusConfig(augment=C.AugmentConfig(reverb_prob=1.0, noise_prob=1.0, speeds=(1.1,), speed_probs=(1.0,)))
    u = C._Utt("train", 0, "flite:slt", "x", "fortunes", 1.0, None, [0, 0, 0])
    x = (0.3 * np.sin(np.arange(16000) * 0.05)).astype(np.float32)
    pool = [np.sin(np.arange(8000) * 0.2).astype(np.float32)] * 4
    y, phones, meta = C._augment(x, [("aa", 0.0, 0.55)], u, cfg, pool, np.random.default_rng(0))
    assert abs(len(y) - 16000 / 1.1) <= 1 and phones == [("aa", 0.0, 0.55 / 1.1)]
    assert 0.2 <= meta["rt60"] <= 0.7 and meta["snr"] in cfg.augment.train_snrs and meta["noise"] in ("white", "babble")
    held = C._Utt("test", 0, "flite:rms", "x", "bible", 1.0, None, [0, 2, 0])
    z, _, m2 = C._augment(x, [], held, cfg, pool, np.random.default_rng(0))
    assert z is x and m2 == {"speed": 1.0, "gain_db": 0.0, "snr": None, "noise": None, "rt60": None}


# --- lip video ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "phone,visemes",
    [("m", ("bilabial",)), ("pau", ("sil",)), ("aa", ("open",)), ("ay", ("open", "spread")), ("uw", ("round_close",)),
     ("'aI", ("open", "spread")), ("_:", ("sil",)), ("tS", ("postalveolar",)), ("D", ("dental",)), ("i:", ("spread",))],
)
def test_phone_to_visemes(phone, visemes):
    assert LV.phone_to_visemes(phone) == visemes


def test_mouth_trajectory_closes_on_bilabials_and_opens_on_vowels():
    cfg = LV.MouthConfig()
    phones = [("pau", 0.0, 0.3), ("aa", 0.3, 0.7), ("m", 0.7, 1.1), ("iy", 1.1, 1.4), ("uw", 1.4, 1.8), ("pau", 1.8, 2.03)]
    P = LV.mouth_trajectory(phones, 2.03, cfg)
    assert P.shape == (math.ceil(2.03 * 25), 3) and P.dtype == np.float32
    at = lambda t: P[int(t * 25)]  # noqa: E731
    assert at(0.5)[0] > 0.6 and at(0.9)[0] < 0.1  # open 'aa', closed 'm'
    assert at(1.25)[1] > 1.1 and at(1.6)[1] < 0.8 and at(1.6)[2] > 0.7  # spread 'iy', rounded 'uw'


def test_write_mp4_roundtrip_and_reproducible(tmp_path):
    cfg = LV.MouthConfig()
    phones = [("pau", 0.0, 0.2), ("aa", 0.2, 0.5), ("m", 0.5, 0.6), ("iy", 0.6, 0.9), ("ow", 0.9, 1.3)]
    frames = [LV.render_frames(LV.mouth_trajectory(phones, 1.5, cfg), cfg, LV.Appearance.sample(np.random.default_rng(s)),
                               np.random.default_rng(s + 1)) for s in (1, 2)]
    assert frames[0].shape == (38, 64, 64) and frames[0].dtype == np.uint8
    for k in range(3):  # bytes do not depend on what was encoded before
        LV.write_mp4(tmp_path / f"a{k}.mp4", frames[k % 2 if k < 2 else 0])
    assert (tmp_path / "a0.mp4").read_bytes() == (tmp_path / "a2.mp4").read_bytes()
    back = _frames(tmp_path / "a0.mp4")
    assert back.shape == frames[0].shape
    assert np.abs(back - frames[0]).mean() < 4.0
    with pytest.raises(ValueError, match="uint8"):
        LV.write_mp4(tmp_path / "bad.mp4", np.zeros((3, 63, 64), np.uint8))


# --- text ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "raw,want",
    [
        ("And the LORD said   unto Moses,", "And the Lord said unto Moses."),
        ('He said "hello there" to (nobody) today', "He said hello there to nobody today."),
        ("It costs $5 to get in here today.", None),  # symbols and digits
        ("Mr. Smith went to the market today.", None),  # abbreviation
        ("Too short.", None),
        ("caf\u00e9 au lait is what I drink every day.", None),  # non-ASCII
        (" ".join(["word"] * 25) + ".", None),  # too long
    ],
)
def test_clean_sentence(raw, want):
    assert clean_sentence(raw, TextConfig()) == want


# --- ogg ----------------------------------------------------------------------------------------
def test_opus_files_are_byte_reproducible(tmp_path):
    import soundfile as sf

    cfg = C.CorpusConfig(audio_format="opus")
    x = (0.3 * np.sin(np.arange(24000) * 0.07)).astype(np.float32)
    C.write_audio(tmp_path / "a.ogg", x, cfg, serial=7)
    C.write_audio(tmp_path / "b.ogg", x, cfg, serial=7)
    assert (tmp_path / "a.ogg").read_bytes() == (tmp_path / "b.ogg").read_bytes()
    y, sr = sf.read(str(tmp_path / "a.ogg"), dtype="float32")  # libogg checks the page CRCs
    assert sr == 16000 and len(y) == len(x)
    assert np.corrcoef(x[2000:-2000], y[2000:-2000])[0, 1] > 0.95


# --- generation (needs TTS) ---------------------------------------------------------------------
def _installed() -> list[str]:
    if not (shutil.which("flite") or shutil.which("espeak-ng") or shutil.which("festival")):
        return []
    from mmlora.data.speech_tts import available_voices

    return available_voices()


needs_tts = pytest.mark.skipif(not _installed(), reason="no TTS voice installed (scripts/setup_tts.sh)")


def _tiny_args(out: Path, seed: int) -> list[str]:
    v = _installed()
    fast = [x for x in v if not x.startswith("festival:")] or v
    train, held = fast[:1], fast[1:3]
    args = ["--out", str(out), "--seed", str(seed), "--n-train", "3", "--voices", ",".join(train),
            "--babble-pool", "2", "--max-words", "8", "--eval-snrs", "0", "--audio-format", "opus"]
    if len(held) == 2:
        return args + ["--n-val", "1", "--n-test", "1", "--val-voices", held[0], "--test-voices", held[1]]
    return args + ["--n-val", "0", "--n-test", "0", "--val-voices", "", "--test-voices", ""]


@needs_tts
def test_generation_is_seeded_and_reproducible(tmp_path):
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        assert C.main(_tiny_args(tmp_path / name, seed)) == 0
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert any(str(f).endswith(".mp4") for f in files) and any(str(f).endswith(".ogg") for f in files)
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    ta = [r["text"] for r in map(json.loads, (tmp_path / "a" / "manifest.jsonl").read_text().splitlines())]
    tc = [r["text"] for r in map(json.loads, (tmp_path / "c" / "manifest.jsonl").read_text().splitlines())]
    assert ta != tc
    # an existing corpus is not overwritten by accident
    assert C.main(_tiny_args(tmp_path / "a", 5)) == 2


@needs_tts
def test_plan_only_writes_the_full_runs_sentences_and_synthesizes_nothing(tmp_path):
    """--plan-only: each split's plan_<split>.jsonl holds the id, text and voice of every clip a full run of the same
    arguments writes (it is how an exclusion list is rebuilt without the other corpus's audio)."""
    full, plan = tmp_path / "full", tmp_path / "plan"
    assert C.main(_tiny_args(full, 12) + ["--n-train", "5", "--no-video"]) == 0
    assert C.main(_tiny_args(plan, 12) + ["--n-train", "5", "--no-video", "--plan-only"]) == 0
    assert sorted(p.name for p in plan.iterdir()) == ["plan_test.jsonl", "plan_train.jsonl", "plan_val.jsonl"]
    n = 0
    for split in ("train", "val", "test"):
        want = [{k: r[k] for k in ("id", "text", "voice")}
                for r in map(json.loads, (full / f"{split}.jsonl").read_text().splitlines())]
        got = [{k: r[k] for k in ("id", "text", "voice")}
               for r in map(json.loads, (plan / f"plan_{split}.jsonl").read_text().splitlines())]
        assert got == want, split
        n += len(got)
    assert n >= 5
    # as an exclusion list it leaves the planned sentences out of another corpus
    other = tmp_path / "other"
    assert C.main(_tiny_args(other, 12) + ["--n-train", "5", "--plan-only",
                                           "--exclude-text", str(plan / "plan_train.jsonl")]) == 0
    drawn = {json.loads(r)["text"] for r in (other / "plan_train.jsonl").read_text().splitlines()}
    assert not drawn & {json.loads(r)["text"] for r in (plan / "plan_train.jsonl").read_text().splitlines()}


@needs_tts
def test_plan_corpus_script_names_the_plans_as_manifests_and_never_plans_over_a_corpus(tmp_path):
    """scripts/plan_corpus.sh, the corpus scripts' `mmlora` under PLAN_ONLY=1: DIR/<split>.jsonl, as the next corpus's
    --exclude-text and the scripts' checks read them, DIR/PLAN_ONLY, and a refusal where DIR holds audio."""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHON": sys.executable}
    run = lambda out: subprocess.run(["bash", str(root / "scripts/plan_corpus.sh"), "make-speech-corpus",  # noqa: E731
                                      *_tiny_args(out, 12)[2:], "--out", str(out), "--n-train", "5"],
                                     cwd=root, env=env, capture_output=True, text=True, timeout=300)
    p = run(tmp_path / "p")
    assert p.returncode == 0, p.stderr
    C.main(_tiny_args(tmp_path / "q", 12) + ["--n-train", "5", "--plan-only"])
    for split in ("train", "val", "test"):
        assert (tmp_path / "p" / f"{split}.jsonl").read_text() == (tmp_path / "q" / f"plan_{split}.jsonl").read_text()
    assert (tmp_path / "p/PLAN_ONLY").exists() and not list((tmp_path / "p").glob("plan_*"))
    (tmp_path / "r/audio").mkdir(parents=True)
    p = run(tmp_path / "r")
    assert p.returncode == 2 and "holds a real corpus" in p.stderr and not list((tmp_path / "r").glob("*.jsonl"))


def test_plan_only_corpora_never_go_where_the_real_ones_belong(tmp_path):
    """PLAN_ONLY=1 make_encoder_lora_corpora.sh names its plans like manifests, which the scripts take for made
    corpora: without a DATA_DIR of its own, or with data/speech_release, it stops before any work."""
    root = Path(__file__).resolve().parents[2]
    for args in ([], ["data/speech_release"], ["./data/speech_release/"]):
        p = subprocess.run(["bash", "scripts/make_encoder_lora_corpora.sh", *args], cwd=root, capture_output=True,
                           text=True, timeout=60, env={**os.environ, "PLAN_ONLY": "1", "PYTHON": "false"})
        assert p.returncode == 2 and "a DATA_DIR of its own" in p.stderr, (args, p.stderr)
        assert not p.stdout  # no step started


@needs_tts
def test_files_do_not_depend_on_the_number_of_workers(tmp_path):
    """TTS processes and the encoding threads beside them (--workers) change only the speed."""
    for name, w in (("one", "1"), ("three", "3")):
        assert C.main(_tiny_args(tmp_path / name, 9) + ["--n-train", "7", "--workers", w]) == 0
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*") if p.is_file())
    assert sum(str(f).endswith(".ogg") for f in files) >= 7 and any(str(f).endswith(".mp4") for f in files)
    assert files == sorted(p.relative_to(tmp_path / "three") for p in (tmp_path / "three").rglob("*") if p.is_file())
    for f in files:
        if f.name != "corpus.json":  # it records --workers
            assert (tmp_path / "one" / f).read_bytes() == (tmp_path / "three" / f).read_bytes(), f
    rows = [json.loads(r) for r in (tmp_path / "three" / "train.jsonl").read_text().splitlines()]
    assert all(r["frames"] and r["frames"] > 0 for r in rows if r["video"])  # frame counts come back from the threads


@needs_tts
def test_no_video_leaves_every_audio_file_unchanged(tmp_path):
    """--no-video only skips the lip videos (AUDIO_ONLY=1 scripts/train_asr_release.sh relies on it)."""
    assert C.main(_tiny_args(tmp_path / "v", 3) + ["--n-train", "4"]) == 0
    assert C.main(_tiny_args(tmp_path / "n", 3) + ["--n-train", "4", "--no-video"]) == 0
    audio = sorted(p.relative_to(tmp_path / "v") for p in (tmp_path / "v" / "audio").iterdir())
    assert len(audio) >= 4 and audio == sorted(p.relative_to(tmp_path / "n") for p in (tmp_path / "n" / "audio").iterdir())
    for f in audio:
        assert (tmp_path / "v" / f).read_bytes() == (tmp_path / "n" / f).read_bytes(), f
    rv, rn = ([json.loads(r) for r in (tmp_path / d / "manifest.jsonl").read_text().splitlines()] for d in ("v", "n"))
    assert [r["text"] for r in rv] == [r["text"] for r in rn] and all(r["video"] is None for r in rn)
    assert any(r["video"] for r in rv) and not (tmp_path / "n" / "video").exists()


@needs_tts
def test_tts_phones_cover_the_audio():
    from mmlora.data.speech_tts import synthesize

    for voice in _installed()[:: max(1, len(_installed()) // 4)]:
        s = synthesize(voice, "The quick brown fox jumps over the lazy dog.")
        assert s.duration > 1.0 and np.abs(s.audio).max() > 0.05, voice
        starts = [p[1] for p in s.phones]
        assert starts == sorted(starts) and all(e > b for _, b, e in s.phones), voice
        assert len(s.phones) >= 25 and s.phones[-1][2] > 0.8 * s.duration, voice


def test_unknown_voice_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="expected"):
        from mmlora.data.speech_tts import parse_voice

        parse_voice("nonsense")
    if _installed():
        with pytest.raises(SystemExit, match="not installed"):
            C.main(["--out", str(tmp_path / "x"), "--voices", "flite:nobody"])


@pytest.mark.skipif(not Path("/usr/share/games/fortunes/fortunes").is_file() or not shutil.which("bible"),
                    reason="fortunes / bible-kjv not installed (scripts/setup_tts.sh)")
def test_plan_draws_a_pitch_for_espeak_and_pico_voices_only():
    """A pitch from pitch_range for every clip of an espeak or pico voice (engines that take one), None for the
    others."""
    installed = ["flite:awb", "festival:kal_diphone", "espeak:en-us", "pico:en-US", "rhvoice:alan"]
    cfg = C.CorpusConfig(n={"train": 300, "val": 0, "test": 0}, val_voices=(), test_voices=())
    plan, _ = C._plan(cfg, C._split_voices(cfg, installed))
    by = {e: [u.pitch for u in plan["train"] if u.voice.startswith(e)] for e in ("flite", "festival", "espeak",
                                                                                    "pico", "rhvoice")}
    assert all(len(v) > 20 for v in by.values()), {e: len(v) for e, v in by.items()}
    lo, hi = cfg.augment.pitch_range
    for e in ("espeak", "pico"):
        assert all(lo <= p <= hi for p in by[e]) and len(set(by[e])) > 10
    assert all(p is None for e in ("flite", "festival", "rhvoice") for p in by[e])


@pytest.mark.skipif(not Path("/usr/share/games/fortunes/fortunes").is_file() or not shutil.which("bible"),
                    reason="fortunes / bible-kjv not installed (scripts/setup_tts.sh)")
def test_plan_holds_out_voices_and_never_reuses_sentences():
    installed = ["flite:awb", "flite:slt", "festival:kal_diphone", "espeak:en-us", "espeak:en+m1", "espeak:en+f3",
                 "flite:rms", "espeak:en-029"]
    cfg = C.CorpusConfig(n={"train": 600, "val": 20, "test": 30}, val_voices=("flite:rms",), test_voices=("espeak:en-029",),
                         engine_weights={"flite": 2.0, "festival": 1.0, "espeak": 1.0})
    voices = C._split_voices(cfg, installed)
    assert voices["val"] == ["flite:rms"] and voices["test"] == ["espeak:en-029"] and len(voices["train"]) == 6
    plan, pools = C._plan(cfg, voices)
    texts = [u.text for lst in (*plan.values(), *pools.values()) for u in lst]
    assert len(texts) == 600 + 20 + 30 + 2 * cfg.augment.babble_pool and len(set(texts)) == len(texts)
    assert {u.voice for u in plan["val"]} == {"flite:rms"} and {u.voice for u in plan["test"]} == {"espeak:en-029"}
    share = {e: np.mean([u.voice.startswith(e) for u in plan["train"]]) for e in ("flite", "festival", "espeak")}
    assert abs(share["flite"] - 0.5) < 0.07 and abs(share["festival"] - 0.25) < 0.06, share
    assert all(u.pitch is None for u in plan["train"] if not u.voice.startswith("espeak:"))
    again, _ = C._plan(cfg, voices)
    assert [u.text for u in again["train"]] == [u.text for u in plan["train"]]
    other, _ = C._plan(C.CorpusConfig(**{**cfg.__dict__, "seed": 1}), voices)
    assert [u.text for u in other["train"]] != [u.text for u in plan["train"]]
    with pytest.raises(SystemExit, match="no installed voice"):
        C._split_voices(C.CorpusConfig(val_voices=("flite:nobody",)), installed)
    # a second corpus that excludes this one's held-out sentences never uses them (case-insensitively)
    held = {u.text for s in ("val", "test") for u in plan[s]}
    excl = C.CorpusConfig(**{**cfg.__dict__, "seed": 1, "exclude_texts": frozenset(t.upper() for t in held)})
    more, _ = C._plan(excl, voices)
    used = {u.text for lst in more.values() for u in lst}
    assert not used & held and len(used) == 650
    crossing, _ = C._plan(C.CorpusConfig(**{**cfg.__dict__, "seed": 1, "n": {"train": 20000, "val": 0, "test": 0}}), voices)
    assert {u.text for u in crossing["train"]} & held  # without the exclusion a large second corpus reuses them


@pytest.mark.skipif(not Path("/usr/share/games/fortunes/fortunes").is_file() or not shutil.which("bible"),
                    reason="fortunes / bible-kjv not installed (scripts/setup_tts.sh)")
def test_held_out_splits_do_not_depend_on_the_training_size():
    """val / test (and the babble pool of their noisy copies) are planned before train, so a corpus's
    held-out splits can be regenerated alone with --n-train 0 (GPU run 9 did so for st/test)."""
    installed = ["flite:awb", "espeak:en-us", "espeak:en+m1", "flite:rms", "espeak:en-029"]
    full = C.CorpusConfig(seed=1, n={"train": 500, "val": 15, "test": 25}, val_voices=("flite:rms",),
                          test_voices=("espeak:en-029",))
    voices = C._split_voices(full, installed)
    plan, pools = C._plan(full, voices)
    alone, alone_pools = C._plan(C.CorpusConfig(**{**full.__dict__, "n": {"train": 0, "val": 15, "test": 25}}), voices)
    key = lambda us: [(u.text, u.voice, u.rate, u.pitch, u.seed) for u in us]  # noqa: E731
    for split in ("val", "test"):
        assert key(alone[split]) == key(plan[split]) and len(plan[split]) == full.n[split]
    assert key(alone_pools["pool_eval"]) == key(pools["pool_eval"]) and alone["train"] == []
    assert not {u.text for u in plan["train"]} & {u.text for s in ("val", "test") for u in plan[s]}


def test_any_installed_espeak_variant_can_be_named_but_not_an_unknown_one(tmp_path):
    if not shutil.which("espeak-ng") or "espeak:en-us" not in _installed():
        pytest.skip("espeak-ng not installed (scripts/setup_tts.sh)")
    cfg = C.CorpusConfig(voices=("espeak:en-us+Storm", "espeak:en-gb-x-gbclan+m3"), val_voices=(), test_voices=(),
                         n={"train": 10, "val": 0, "test": 0})
    assert C._split_voices(cfg, _installed())["train"] == ["espeak:en-us+Storm", "espeak:en-gb-x-gbclan+m3"]
    with pytest.raises(SystemExit, match=r"not installed: espeak:en-us\+nobody"):
        C._split_voices(C.CorpusConfig(voices=("espeak:en-us+nobody",)), _installed())
    # a whole corpus with lip videos over such a voice (each voice gets its own mouth appearance)
    out = tmp_path / "c"
    assert C.main(["--out", str(out), "--voices", "espeak:en-us+Storm", "--val-voices", "", "--test-voices", "",
                   "--n-train", "2", "--n-val", "0", "--n-test", "0", "--max-words", "6", "--babble-pool", "2"]) == 0
    rows = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert [r["voice"] for r in rows] == ["espeak:en-us+Storm"] * 2 and all((out / r["video"]).is_file() for r in rows)


@pytest.mark.skipif(not Path("/usr/share/games/fortunes/fortunes").is_file() or not shutil.which("bible"),
                    reason="fortunes / bible-kjv not installed (scripts/setup_tts.sh)")
def test_word_salad_replaces_only_training_texts_and_keeps_every_other_draw():
    installed = ["flite:awb", "flite:slt", "espeak:en-us", "flite:rms", "espeak:en-029"]
    base = C.CorpusConfig(n={"train": 400, "val": 10, "test": 10}, val_voices=("flite:rms",), test_voices=("espeak:en-029",))
    voices = C._split_voices(base, installed)
    plain, _ = C._plan(base, voices)
    mixed, _ = C._plan(C.CorpusConfig(**{**base.__dict__, "word_salad_frac": 0.5}), voices)
    again, _ = C._plan(C.CorpusConfig(**{**base.__dict__, "word_salad_frac": 0.5}), voices)
    assert [u.text for u in again["train"]] == [u.text for u in mixed["train"]]
    for split in ("val", "test"):
        assert [u.text for u in mixed[split]] == [u.text for u in plain[split]]
    salad = [u for u in mixed["train"] if u.source == "words"]
    assert 0.4 < len(salad) / 400 < 0.6
    vocab = set(C._salad_vocabulary(C.load_sentences(base.text)))
    for u in salad:
        words = u.text.rstrip(".").lower().split()
        assert base.text.min_words <= len(words) <= base.text.max_words and set(words) <= vocab, u.text
        assert u.text[0].isupper() and u.text.endswith(".")
    for p, m in zip(plain["train"], mixed["train"]):  # voice, rate, pitch, seed drawn as without salad
        assert (p.voice, p.rate, p.pitch, p.seed) == (m.voice, m.rate, m.pitch, m.seed)
        assert m.source == "words" or m.text == p.text
    with pytest.raises(SystemExit, match="word-salad-frac"):
        C._plan(C.CorpusConfig(**{**base.__dict__, "word_salad_frac": 1.5}), voices)


def test_exclude_text_reads_manifests_and_names_bad_lines(tmp_path):
    good = tmp_path / "test.jsonl"
    good.write_text('{"id": "a", "text": "One two."}\n\n{"id": "b", "text": "Three."}\n')
    assert C._manifest_texts((str(good),)) == {"One two.", "Three."}
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "text": "x"}\n{"id": "b"}\n')
    with pytest.raises(SystemExit, match=r"bad.jsonl:2: no 'text' field"):
        C._manifest_texts((str(bad),))
    (tmp_path / "broken.jsonl").write_text('{"text": "a"}\n{oops\n')
    with pytest.raises(SystemExit, match=r"broken.jsonl:2: not valid JSON"):
        C._manifest_texts((str(tmp_path / "broken.jsonl"),))
    with pytest.raises(SystemExit, match="nothere.jsonl"):
        C._manifest_texts((str(tmp_path / "nothere.jsonl"),))


@pytest.mark.skipif(not Path("/usr/share/games/fortunes/fortunes").is_file() or not shutil.which("bible"),
                    reason="fortunes / bible-kjv not installed (scripts/setup_tts.sh)")
def test_running_out_of_sentences_names_the_pools_what_they_held_and_the_way_out():
    """Session 61's kn50 stopped with 'ran out of sentences; lower the sizes' and no more: now the error says what
    each pool drawn from held at the --max-words in force and how many --exclude-text took."""
    from mmlora.data.speech_text import TextConfig

    text = TextConfig(max_words=5)
    bible = C.load_sentences(text)["bible"]
    excl = frozenset(t.upper() for t in bible[:7])
    cfg = C.CorpusConfig(n={"train": len(bible) + 1, "val": 0, "test": 0}, val_voices=(), test_voices=(), text=text,
                         text_weights={"bible": 1.0}, exclude_texts=excl)
    voices = C._split_voices(cfg, ["flite:awb"])
    with pytest.raises(SystemExit) as e:
        C._plan(cfg, voices)
    msg = str(e.value)
    assert f"after drawing {len(bible) - 7:,} (the pools" in msg, msg
    assert f"at most 5 words, after --exclude-text: bible: {len(bible) - 7:,} (7 more excluded)" in msg, msg
    assert "raise --max-words" in msg and "fortunes" not in msg
    fits = C.CorpusConfig(**{**cfg.__dict__, "n": {"train": len(bible) - 7 - cfg.augment.babble_pool, "val": 0,
                                                       "test": 0}})
    plan, pools = C._plan(fits, voices)  # exactly what is left: no error
    assert len(plan["train"]) + len(pools["pool_train"]) == len(bible) - 7
    both = C.CorpusConfig(**{**cfg.__dict__, "text_weights": {}, "n": {"train": 10 ** 6, "val": 0, "test": 0}})
    with pytest.raises(SystemExit, match=r"pools drawn from, at most 5 words, after --exclude-text: fortunes: [\d,]+, "
                                         r"bible: [\d,]+ \(7 more excluded\)"):
        C._plan(both, voices)
