"""scripts/bench_anchor_batch.py: the anchor's batch timed with its targets decoded and with them known."""
from __future__ import annotations

import copy
import itertools
from pathlib import Path

import pytest
import torch

from conftest import load_script

ROOT = Path(__file__).resolve().parents[2]
CLIPS = ROOT / "tests" / "data" / "speech" / "test.jsonl"


def _judges(monkeypatch):
    """A tiny judge whose encoders are stand-ins (frames_many returns frames seeded by each clip's length, whichever
    encoder) and an own decoder unlike the judge's; returns (judge, own, the clips' paths, calls to
    own.propose_many)."""
    from mmlora.encoders.whisper_judge import WhisperJudge

    ref = load_script("judge_tests", "tests/encoders/test_whisper_judge.py")
    tok = ref.tokenizer()
    g = torch.Generator().manual_seed(3)
    judge = WhisperJudge(ref.tiny_decoder(tok.get_vocab_size()), tok, [1, 7], 23, padded=torch.nn.Identity())
    monkeypatch.setattr(judge, "frames_many", lambda waves, encoder=None, warps=None, grad=False:
                        [torch.randn(20, 32, generator=torch.Generator().manual_seed(len(w))) for w in waves])
    own = copy.copy(judge)
    own.decoder = ref.tiny_decoder(tok.get_vocab_size())
    with torch.no_grad():
        for p in own.decoder.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.2)
    proposed = []
    real = own.propose_many
    monkeypatch.setattr(own, "propose_many", lambda frames, *a, **k: proposed.append(len(frames))
                        or real(frames, *a, **k))
    paths = [p for p, _, _ in load_script("whisper_decoder_probe").read_clips(str(CLIPS))]
    return judge, own, paths, proposed


def test_bench_decodes_only_the_first_way_and_times_every_batch(monkeypatch):
    mod = load_script("bench_anchor_batch")
    judge, own, paths, proposed = _judges(monkeypatch)
    ticks = itertools.count()
    r = mod.bench(judge, own, "model's", "trained", paths[:7], 3, 6, repeats=2, clock=lambda: next(ticks))
    assert r["batches"] == 4 and r["batch"] == 3  # 7 clips: two whole batches of 3, twice over
    assert proposed == [3] * 4  # Whisper's own decoder runs in the decoded calls only, on the whole batch
    assert r["decoded_s"] == r["known_s"] == [1] * 4 and r["decoded_s_mean"] == 1
    assert all(0 < t <= 3 * 6 for t in r["tokens"])  # at most max_tokens a clip
    with pytest.raises(ValueError, match="fewer clips"):
        mod.bench(judge, own, "model's", "trained", paths[:2], 3, 6)


def test_bench_refuses_known_targets_that_come_back_changed(monkeypatch):
    mod = load_script("bench_anchor_batch")
    judge, own, paths, _ = _judges(monkeypatch)
    real = mod.anchor_batch
    monkeypatch.setattr(mod, "anchor_batch", lambda *a, known=None, **k: (
        real(*a, **k) if known is None else (None, None, [[0]] * len(known))))
    with pytest.raises(RuntimeError, match="changed"):
        mod.bench(judge, own, "model's", "trained", paths[:3], 3, 6)
