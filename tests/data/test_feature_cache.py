"""Feature cache: hit/miss keyed by content + encoder id + preprocessing, corrupt entries recomputed,
atomic writes, hidden states round-trip."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import WhisperConfig
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from mmlora.data.feature_cache import FeatureCache
from mmlora.data.media import AudioConfig, load_audio
from mmlora.encoders import WhisperAudioEncoder, WhisperEncoderConfig
from mmlora.encoders.whisper import feature_extractor_for


class Counting(WhisperAudioEncoder):
    """A tiny random Whisper encoder that counts the items it encodes."""

    def __init__(self, seed: int = 0):
        torch.manual_seed(seed)
        cfg = WhisperConfig(num_mel_bins=16, d_model=32, encoder_layers=2, encoder_attention_heads=4,
                            encoder_ffn_dim=64, max_source_positions=50, vocab_size=60, pad_token_id=0,
                            bos_token_id=1, eos_token_id=2, decoder_start_token_id=3)  # 1 s window
        model = WhisperEncoder(cfg).eval()
        super().__init__(WhisperEncoderConfig(path="tiny"), model, feature_extractor_for(cfg))
        self.encoded = 0

    def _encode(self, batch, output_hidden_states):
        self.encoded += len(batch)
        return super()._encode(batch, output_hidden_states)


@pytest.fixture
def clips(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i, sec in enumerate([0.5, 0.3, 0.8]):
        p = tmp_path / f"c{i}.wav"
        sf.write(p, (rng.standard_normal(int(sec * 16000)) * 0.1).astype(np.float32), 16000, subtype="FLOAT")
        paths.append(p)
    return paths


def test_second_epoch_does_no_encoder_work(tmp_path, clips):
    enc, cache = Counting(), FeatureCache(tmp_path / "cache")
    first = cache.encode(enc, clips, load_audio, preprocess=AudioConfig(), batch_size=2)
    assert enc.encoded == 3 and cache.stats.misses == 3 and cache.stats.writes == 3
    direct = enc.encode([load_audio(p) for p in clips])
    # other batch composition: equal up to float rounding of batched matmuls
    torch.testing.assert_close(first.x, direct.x, rtol=1e-5, atol=1e-5)
    assert torch.equal(first.mask, direct.mask)
    enc.encoded = 0
    again = FeatureCache(tmp_path / "cache").encode(enc, clips, load_audio, preprocess=AudioConfig())
    assert enc.encoded == 0  # second epoch (new cache object, same folder): no encoder work
    assert torch.equal(again.x, first.x) and torch.equal(again.mask, first.mask) and again.rate_hz == 50.0
    mixed = cache.encode(enc, [clips[2], tmp_path / "c0.wav"], load_audio, preprocess=AudioConfig())
    assert enc.encoded == 0 and torch.equal(mixed.x[1, :25], first.x[0, :25])
    assert not list((tmp_path / "cache").rglob("*.tmp"))


def test_key_changes_with_content_encoder_and_preprocessing(tmp_path, clips):
    cache = FeatureCache(tmp_path / "cache")
    a, b = Counting(seed=0), Counting(seed=1)
    k = cache.key(clips[0], a.encoder_id, AudioConfig())
    assert k == cache.key(clips[0], Counting(seed=0).encoder_id, AudioConfig())  # stable across instances
    assert k != cache.key(clips[0], b.encoder_id, AudioConfig())  # other weights
    assert k != cache.key(clips[0], a.encoder_id, AudioConfig(max_seconds=0.2))  # other decoding
    assert k != cache.key(clips[0], a.encoder_id, AudioConfig(), output_hidden_states=True)
    copy = tmp_path / "copy.wav"
    copy.write_bytes(clips[0].read_bytes())
    assert k == cache.key(copy, a.encoder_id, AudioConfig())  # content, not the path
    data, sr = sf.read(copy, dtype="float32")
    data[0] += 0.5
    sf.write(copy, data, sr, subtype="FLOAT")
    assert k != cache.key(copy, a.encoder_id, AudioConfig())
    cache.encode(a, clips[:1], load_audio, AudioConfig())
    cache.encode(a, clips[:1], load_audio, AudioConfig(max_seconds=0.2))
    assert a.encoded == 2 and cache.stats.misses == 2


@pytest.mark.parametrize("damage", ["truncate", "flip_data_byte", "garbage"])
def test_corrupt_entries_are_recomputed(tmp_path, clips, damage):
    enc, cache = Counting(), FeatureCache(tmp_path / "cache")
    ref = cache.encode(enc, clips[:2], load_audio, AudioConfig())
    entry = cache.entry_path(cache.key(clips[1], enc.encoder_id, AudioConfig()))
    raw = bytearray(entry.read_bytes())
    if damage == "truncate":
        raw = raw[: len(raw) // 2]
    elif damage == "flip_data_byte":
        raw[-5] ^= 0xFF  # inside the tensor payload: parses fine, checksum does not match
    else:
        raw = bytearray(b"\x00" * 40)
    entry.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match="corrupt entry"):
        out = cache.encode(enc, clips[:2], load_audio, AudioConfig())
    assert cache.stats.corrupt == 1 and enc.encoded == 3 and cache.stats.hits == 1
    torch.testing.assert_close(out.x, ref.x, rtol=1e-5, atol=1e-5)
    assert cache.load(cache.key(clips[1], enc.encoder_id, AudioConfig())) is not None  # rewritten, valid


def test_failed_write_leaves_no_entry(tmp_path, clips, monkeypatch):
    import safetensors.torch as st

    enc, cache = Counting(), FeatureCache(tmp_path / "cache")

    def boom(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(st, "save_file", boom)
    with pytest.raises(OSError, match="No space left"):
        cache.encode(enc, clips[:1], load_audio, AudioConfig())
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []


def test_hidden_states_round_trip(tmp_path, clips):
    enc, cache = Counting(), FeatureCache(tmp_path / "cache")
    a = cache.encode(enc, clips, load_audio, AudioConfig(), output_hidden_states=True)
    b = cache.encode(enc, clips, load_audio, AudioConfig(), output_hidden_states=True)
    assert enc.encoded == 3 and len(b.hidden_states) == 2
    for x, y in zip(a.hidden_states, b.hidden_states):
        assert torch.equal(x, y)
    assert torch.equal(a.hidden_mask, b.hidden_mask) and torch.equal(b.hidden_mask, b.mask)
    with pytest.raises(FileNotFoundError, match="gone.wav"):
        cache.encode(enc, [tmp_path / "gone.wav"], load_audio)


@pytest.mark.parametrize("workers", [0, 2])
def test_fill_writes_the_entries_encode_reads(tmp_path, clips, workers):
    """``fill`` (decoding in worker processes) writes exactly the entries ``encode`` looks up;
    an unreadable file is skipped, counted and named; a second fill writes nothing."""
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio")
    enc, cache = Counting(), FeatureCache(tmp_path / "cache")
    with pytest.warns(UserWarning, match="skipped 1 unreadable file.*bad.wav"):
        counts = cache.fill(enc, [*clips, bad, clips[0]], load_audio, preprocess=AudioConfig(), batch_size=2,
                            workers=workers)
    assert counts == {"files": 4, "cached": 0, "written": 3, "failed": 1}
    assert enc.encoded == 3
    enc.encoded = 0
    got = FeatureCache(tmp_path / "cache").encode(enc, clips, load_audio, preprocess=AudioConfig())
    assert enc.encoded == 0  # all hits
    direct = enc.encode([load_audio(p) for p in clips])
    torch.testing.assert_close(got.x, direct.x, rtol=1e-5, atol=1e-5)
    assert torch.equal(got.mask, direct.mask)
    assert cache.fill(enc, clips, load_audio, preprocess=AudioConfig()) == {"files": 3, "cached": 3, "written": 0,
                                                                           "failed": 0}


def test_fill_logs_progress_lines_for_a_log_file(tmp_path, clips, capsys):
    """``log_every_s``: lines on stderr while filling (here after every batch) and one at the end, none without it
    or when everything is cached."""
    enc = Counting()
    FeatureCache(tmp_path / "c").fill(enc, clips, load_audio, preprocess=AudioConfig(), batch_size=1, log_every_s=1e-9)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 4 and lines[0].startswith(f"caching {enc.kind}: 1 / 3 files (")
    assert lines[-1].startswith(f"caching {enc.kind}: 3 / 3 files (") and lines[-1].endswith(" files/s)")
    FeatureCache(tmp_path / "c").fill(enc, clips, load_audio, preprocess=AudioConfig(), log_every_s=1e-9)
    FeatureCache(tmp_path / "d").fill(enc, clips, load_audio, preprocess=AudioConfig())
    assert capsys.readouterr().err == ""
