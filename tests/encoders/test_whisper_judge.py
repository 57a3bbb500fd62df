"""Whisper's decoder as a judge of the beams (encoders/whisper_judge.py, ``generate(whisper_weight=…)``): the batched
score against each candidate scored alone by transformers' decoder, and generate's choice against the formula over
its own n-best list. Tiny random weights; the real packaged Whisper in tests/tasks/test_whisper_rescore_probe.py."""
from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch
from transformers import WhisperConfig
from transformers.models.whisper.modeling_whisper import WhisperDecoder

from mmlora.encoders.whisper_judge import WhisperJudge, decoder_features
from mmlora.lora import lora_layers, read_adapter_folder, save_adapters


def tiny_decoder(vocab: int, d_model: int = 32) -> WhisperDecoder:
    cfg = WhisperConfig(d_model=d_model, decoder_layers=2, decoder_attention_heads=4, decoder_ffn_dim=48,
                        max_target_positions=64, vocab_size=vocab, pad_token_id=0)
    torch.manual_seed(5)
    dec = WhisperDecoder(cfg)
    with torch.no_grad():
        for p in dec.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return dec.eval()


def tokenizer():
    from mmlora.llm import LLMConfig, load_llm

    return load_llm(LLMConfig(path="random:tiny"))[1].backend_tokenizer  # a tokenizers.Tokenizer


def alone(dec, tok, start, eot, frames, text, as_align=False):
    """One candidate scored by itself, by the definition: the log-softmax of each next token after the prompt."""
    ids = tok.encode(" " + text.strip(), add_special_tokens=False).ids if text.strip() else []
    targets = ids if as_align else ids + [eot]
    if not targets:
        return 0.0
    seq = torch.tensor([start + targets])
    total = 0.0
    with torch.no_grad():
        h = dec(input_ids=seq[:, :-1], encoder_hidden_states=frames[None]).last_hidden_state[0]
        for i, t in enumerate(targets):
            logits = h[len(start) - 1 + i] @ dec.embed_tokens.weight.T
            if as_align:
                logits[eot] = float("-inf")
            total += float(torch.log_softmax(logits.double(), -1)[t])
    return total


@pytest.mark.parametrize("as_align", [False, True])
def test_batched_score_equals_each_candidate_scored_alone(as_align):
    tok = tokenizer()
    dec = tiny_decoder(tok.get_vocab_size())
    start, eot = [1, 7], 2
    judge = WhisperJudge(dec, tok, start, eot)
    frames = torch.randn(30, 32, generator=torch.Generator().manual_seed(0))
    cands = ["the cat sat", "a", "", "the cat sat on the mat today"]
    got = judge.score(frames, cands, as_align=as_align)
    want = torch.tensor([alone(dec, tok, start, eot, frames, c, as_align) for c in cands], dtype=torch.float32)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert (got[2] == 0) == as_align  # the empty candidate: <|endoftext|> alone, or nothing scored
    assert torch.equal(judge.score(frames, [""] * 2, as_align=True), torch.zeros(2))


def test_score_projects_the_frames_once_and_matches_the_decoder_given_them_per_candidate():
    """score() reads the frames' cross-attention keys and values from one projection, repeated for the K candidates
    (judge.cross_cache), and gives what the decoder gives when each candidate is handed the frames itself."""
    tok = tokenizer()
    dec = tiny_decoder(tok.get_vocab_size())
    start, eot = [1, 7], 2
    judge = WhisperJudge(dec, tok, start, eot)
    frames = torch.randn(30, 32, generator=torch.Generator().manual_seed(4))
    cands = ["the cat sat", "a", "", "the cat sat on the mat today", "mat"]
    seen = []
    hook = dec.layers[0].encoder_attn.k_proj.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[0]))
    try:
        got = judge.score(frames, cands)
    finally:
        hook.remove()
    assert seen == [1]  # once, from one row of frames, for all five candidates
    targets = [judge.token_ids(c) + [eot] for c in cands]
    n = max(map(len, targets))
    ids = torch.tensor([start + t + [eot] * (n - len(t)) for t in targets])
    with torch.no_grad():
        h = dec(input_ids=ids[:, :-1], encoder_hidden_states=frames[None].expand(len(ids), -1, -1)).last_hidden_state
        logp = torch.log_softmax(h @ dec.embed_tokens.weight.T, -1)[:, len(start) - 1:]
    want = torch.stack([logp[i, torch.arange(len(t)), t].sum() for i, t in enumerate(targets)])
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_frames_are_the_clips_own_then_the_padded_runs():
    class Enc:  # frames of 0.02 s: the clip's count from the unpadded encoder, 1500 from the padded one
        def __init__(self, value):
            self.value = value

        def encode(self, waves):
            n = 1500 if waves[0].shape[0] == 480000 else -(-waves[0].shape[0] // 320)
            return type("F", (), {"x": torch.full((1, n, 4), self.value)})()
    got = decoder_features(torch.zeros(16000), Enc(1.0), Enc(2.0))
    assert got.shape == (1500, 4) and (got[:50] == 2).all() and (got[50:] == 1).all()
    assert (decoder_features(torch.zeros(16000), Enc(1.0)) == 1).all()


def test_frames_pass_a_warp_to_both_encoders():
    seen = []

    class Enc:
        def encode(self, waves, warp=None):
            seen.append(warp)
            n = 1500 if waves[0].shape[0] == 480000 else 50
            return type("F", (), {"x": torch.zeros(1, n, 4)})()
    decoder_features(torch.zeros(16000), Enc(), Enc(), warp=1.05)
    decoder_features(torch.zeros(16000), Enc(), Enc())
    assert seen == [[1.05], [1.05], None, None]


def test_frames_of_a_batch_are_each_clips_frames_alone():
    """decoder_features_many: both encoders once over clips of other lengths and warps, each clip's frames as
    decoder_features reads it alone (mask_padding: the unpadded encoder's features do not depend on the batch)."""
    from mmlora.encoders import build_encoder
    from mmlora.encoders.registry import config_from_dict
    from mmlora.encoders.whisper_judge import decoder_features_many

    torch.manual_seed(0)
    padded = build_encoder(config_from_dict({"kind": "whisper", "path": "random:tiny", "full_context": True}))
    clip = build_encoder(config_from_dict({"kind": "whisper", "path": "random:tiny", "mask_padding": True}))
    clip.model.load_state_dict(padded.model.state_dict())
    g = torch.Generator().manual_seed(2)
    waves = [torch.randn(n, generator=g) * 0.1 for n in (16000, 5000, 23000)]
    for warps in (None, [1.0, 1.07, 0.93]):
        got = decoder_features_many(waves, padded, clip, warps)
        for i, w in enumerate(waves):
            alone = decoder_features(w, padded, clip, None if warps is None else warps[i])
            assert got[i].shape == alone.shape == (1500, padded.output_dim)
            torch.testing.assert_close(got[i], alone, atol=2e-5, rtol=1e-4)
    assert not torch.allclose(decoder_features_many(waves, padded, clip, [1.0, 1.07, 0.93])[1],
                              decoder_features(waves[1], padded, clip))  # the warp reached the batch



def test_frames_keep_a_graph_to_a_training_encoder_lora_only_when_asked():
    """decoder_features_many(grad=True): the clip's frames reach the unpadded encoder's training LoRA (its B gets a
    gradient), the padded run's frames never (its own LoRA, trainable too, gets none); the values as without grad."""
    from mmlora.encoders import build_encoder
    from mmlora.encoders.registry import config_from_dict
    from mmlora.encoders.whisper_judge import decoder_features_many
    from mmlora.lora import LoRASpec
    from mmlora.model import attach_encoder_lora

    torch.manual_seed(0)
    padded = build_encoder(config_from_dict({"kind": "whisper", "path": "random:tiny", "full_context": True}))
    clip = build_encoder(config_from_dict({"kind": "whisper", "path": "random:tiny", "mask_padding": True}))
    for enc in (padded, clip):
        attach_encoder_lora(enc, LoRASpec(rank=2, alpha=4), None)
    lora = [p for n, p in clip.named_parameters() if ".adapters." in n]
    assert lora and all(p.requires_grad for p in lora) and padded.adapters_train()
    waves = [torch.randn(n, generator=torch.Generator().manual_seed(n)) * 0.1 for n in (16000, 7000)]
    with torch.enable_grad():
        plain = decoder_features_many(waves, padded, clip)
        got = decoder_features_many(waves, padded, clip, grad=True)
    assert not any(f.requires_grad for f in plain)
    assert all(f.requires_grad for f in got)
    for x, y in zip(got, plain):
        torch.testing.assert_close(x.detach(), y)
    sum(f[:40].sum() for f in got).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in clip.named_parameters() if n.endswith(".B"))
    assert all(p.grad is None for p in padded.parameters())


def _asr_with_judge(*overrides: str):
    from mmlora.encoders import build_encoder
    from mmlora.encoders.registry import config_from_dict
    from mmlora.tasks.cli import build_model, load_run_config

    _, cfg = load_run_config("recipes/asr_tiny.yaml", list(overrides))
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    tok = model.tokenizer.backend_tokenizer
    padded = build_encoder(config_from_dict({"kind": "whisper", "path": "random:tiny", "full_context": True}))
    model._whisper_judge = WhisperJudge(tiny_decoder(tok.get_vocab_size(), model.encoders["audio"].output_dim), tok,
                                        [1, 7], 2, padded=padded)
    return model


def _batch(model, n=2):
    from mmlora.data.collate import collate_samples
    from mmlora.tasks.speech import SpeechDataset, read_manifest

    ds = SpeechDataset(read_manifest("tests/data/speech/test.jsonl"), ("audio",))
    return collate_samples([ds[i] for i in range(n)], model.prompts, with_answer=False)


def test_generate_picks_by_the_formula_from_its_own_nbest():
    model, K = _asr_with_judge(), 4
    batch, gen = _batch(model), {"max_new_tokens": 6, "num_beams": 4}
    nbest = model.generate(batch, num_return_sequences=K, **gen)
    judge = model.whisper_judge()
    frames = [judge.frames(w, model.encoders["audio"]) for w in batch["media"]["audio"]]
    scores = [judge.score(f, nbest[b * K:(b + 1) * K]) for b, f in enumerate(frames)]
    got = model.generate(batch, whisper_weight=1.0, **gen)
    assert got == [nbest[b * K + int(s.argmax())] for b, s in enumerate(scores)]
    sweep = model.generate(batch, whisper_weight=[0.0, 1.0], **gen)
    assert sweep == [model.generate(batch, **gen), got]  # 0: the search's own best
    for w in (1e-4, 0.5):  # every weight returns one of the beams
        assert all(t in nbest[b * K:(b + 1) * K] for b, t in enumerate(model.generate(batch, whisper_weight=w, **gen)))


@pytest.mark.parametrize("gen, message", [
    ({"num_beams": 1, "whisper_weight": 0.5}, "set num_beams > 1"),
    ({"num_beams": 2, "whisper_weight": 1.5}, r"whisper_weight must be in \(0, 1\]"),
    ({"num_beams": 2, "whisper_weight": [0, 2]}, r"each weight of a sweep must be in \[0, 1\]"),
    ({"num_beams": 2, "whisper_weight": [0, 1], "ctc_weight": [0, 1]}, "one of ctc_weight, whisper_weight and"),
    ({"num_beams": 2, "whisper_weight": 0.5, "whisper_both": [0, 1], "ctc_weight": [0, 1]}, "at a time"),
    ({"num_beams": 2, "whisper_weight": 0.5, "whisper_both": 1.5}, r"own decoder's share must be in \[0, 1\]"),
    ({"num_beams": 2, "whisper_weight": 0.5, "whisper_both": [0.5, -1]}, r"each weight of a sweep must be in"),
    ({"num_beams": 2, "whisper_weight": 0.5, "whisper_both": 0.3}, "and this model has neither"),
])
def test_bad_judge_settings_are_clear_errors(gen, message):
    model = _asr_with_judge()
    with pytest.raises(ValueError, match=message):
        model.generate(_batch(model, 1), max_new_tokens=4, **gen)


def test_a_model_whose_audio_encoder_is_no_packaged_whisper_is_refused():
    from mmlora.tasks.cli import build_model, load_run_config

    _, cfg = load_run_config("recipes/asr_tiny.yaml", [])
    model = build_model(cfg).eval()
    with pytest.raises(ValueError, match="a packaged Whisper's own decoder"):
        model.generate(_batch(model, 1), max_new_tokens=4, num_beams=2, whisper_weight=0.5)


def test_evaluate_writes_one_report_per_judge_weight_and_greedy_drops_a_saved_one(tmp_path, capsys, monkeypatch):
    import json

    from mmlora.cli import main
    from mmlora.model import MultimodalLM
    from mmlora.pipelines import load_pipeline

    judge = _asr_with_judge()._whisper_judge
    monkeypatch.setattr(MultimodalLM, "whisper_judge", lambda self: judge)  # the saved model reloads without it
    _asr_with_judge().save_pretrained(tmp_path / "m", pipeline={
        "task": "asr", "instruction": "Transcribe the audio.", "modalities": ["audio"],
        "generation": {"num_beams": 4, "max_new_tokens": 6, "whisper_weight": 1.0}})
    common = ["evaluate", "--model", str(tmp_path / "m"), "--manifest", "tests/data/speech/test.jsonl",
              "--max-samples", "3", "--device", "cpu"]
    assert main(common + ["--whisper-weight", "0,1", "--out", str(tmp_path / "sweep.json")]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [line["whisper_weight"] for line in lines] == [0.0, 1.0]
    assert main(common + ["--out", str(tmp_path / "saved.json")]) == 0  # the saved weight, 1
    saved = json.loads((tmp_path / "saved.json").read_text())
    swept = json.loads((tmp_path / "sweep_whisper1.json").read_text())
    assert [u["hypothesis"] for u in swept["utterances"]] == [u["hypothesis"] for u in saved["utterances"]]
    assert saved["decoding"]["whisper_weight"] == 1.0
    assert main(common + ["--num-beams", "1", "--out", str(tmp_path / "greedy.json")]) == 0
    assert "whisper_weight" not in json.loads((tmp_path / "greedy.json").read_text())["decoding"]
    with pytest.raises(ValueError, match=r"transcribe takes one whisper_weight, got \[0.0, 1.0\]"):
        load_pipeline(tmp_path / "m").transcribe(audio="tests/data/speech/audio/test-00000.flac", whisper_weight=[0.0, 1.0])


def test_evaluate_sweeps_whisper_both_into_one_report_per_share(tmp_path, capsys, monkeypatch):
    """``--whisper-both 0.3,0.7`` reaches generate as one list (one search) and comes back as R_both0.3.json and
    R_both0.7.json, each with its share in its decoding; on / off are True / False; ``--whisper-own-encoder``
    reaches generate."""
    import json

    from mmlora.cli import main
    from mmlora.model import MultimodalLM
    from tasks.cli import _both

    _asr_with_judge().save_pretrained(tmp_path / "m", pipeline={
        "task": "asr", "instruction": "Transcribe the audio.", "modalities": ["audio"],
        "generation": {"num_beams": 4, "max_new_tokens": 6, "whisper_weight": 1.0, "whisper_both": True}})
    calls = []

    def fake(self, batch, rates=None, **kw):
        calls.append(kw["whisper_both"])
        n = len(batch["segments"])
        return [[f"share {s}"] * n for s in kw["whisper_both"]] if isinstance(kw["whisper_both"], list) \
            else [f"share {kw['whisper_both']}"] * n
    monkeypatch.setattr(MultimodalLM, "generate", fake)
    common = ["evaluate", "--model", str(tmp_path / "m"), "--manifest", "tests/data/speech/test.jsonl",
              "--max-samples", "3", "--device", "cpu", "--batch-size", "8"]
    assert main(common + ["--whisper-both", "0.3,0.7", "--out", str(tmp_path / "r.json")]) == 0
    assert calls == [[0.3, 0.7]]
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [line["whisper_both"] for line in lines] == [0.3, 0.7]
    for share in (0.3, 0.7):
        report = json.loads((tmp_path / f"r_both{share}.json").read_text())
        assert report["decoding"]["whisper_both"] == share
        assert {u["hypothesis"] for u in report["utterances"]} == {f"share {share}"}
    assert main(common + ["--out", str(tmp_path / "saved.json")]) == 0 and calls[-1] is True  # the saved setting
    monkeypatch.setattr(MultimodalLM, "generate", lambda self, batch, rates=None, **kw:
                        calls.append(kw.get("whisper_own_encoder")) or [""] * len(batch["segments"]))
    assert main(common + ["--whisper-own-encoder", "base"]) == 0 and calls[-1] == "base"
    assert (_both("on"), _both("off"), _both("0.25")) == (True, False, 0.25)


def test_a_saved_proposal_setting_reaches_generate_and_goes_with_the_judge(tmp_path, monkeypatch, capsys):
    import json

    from mmlora.cli import main
    from mmlora.model import MultimodalLM

    judge = _asr_with_judge()._whisper_judge
    monkeypatch.setattr(MultimodalLM, "whisper_judge", lambda self: judge)
    _asr_with_judge().save_pretrained(tmp_path / "m", pipeline={
        "task": "asr", "instruction": "Transcribe the audio.", "modalities": ["audio"],
        "generation": {"num_beams": 3, "max_new_tokens": 6, "whisper_weight": 1.0, "whisper_proposal": True}})
    seen = []
    plain = MultimodalLM.generate
    monkeypatch.setattr(MultimodalLM, "generate", lambda self, batch, rates=None, **kw: seen.append(
        (kw.get("whisper_weight"), kw.get("whisper_proposal"))) or plain(self, batch, rates, **kw))
    common = ["evaluate", "--model", str(tmp_path / "m"), "--manifest", "tests/data/speech/test.jsonl",
              "--max-samples", "2", "--batch-size", "2", "--device", "cpu"]
    for extra, want in ((["--whisper-weight", "0,1"], ([0.0, 1.0], True)), ([], (1.0, True)),
                        (["--whisper-proposal", "off"], (1.0, False)), (["--whisper-proposal", "2"], (1.0, 2)),
                        (["--whisper-proposal", "1"], (1.0, True)), (["--num-beams", "1"], (None, None)),
                        (["--whisper-weight", "0"], (0.0, None))):
        seen.clear()
        assert main(common + extra + ["--out", str(tmp_path / "r.json")]) == 0, extra
        assert seen == [want], extra
    assert json.loads((tmp_path / "r.json").read_text())["decoding"].get("whisper_proposal") is None
    with pytest.raises(SystemExit):
        main(common + ["--whisper-proposal", "some", "--out", str(tmp_path / "r.json")])
    assert "on, off or a number of Whisper's transcripts" in capsys.readouterr().err


def test_the_judge_installs_its_weight_package_where_only_the_converted_encoder_is_there(monkeypatch, tmp_path):
    """A machine whose Whisper encoder was converted into the cache before can lack the package (make demo on a new
    checkout, session 43): the judge's folder is asked for with install=True, as the encoder's asset is."""
    from mmlora import assets
    from mmlora.encoders import whisper_judge

    asked = []
    monkeypatch.setattr(assets, "whisper_ct2_folder", lambda name, install=False: asked.append((name, install)) or tmp_path)
    assert whisper_judge.model_dir("whisper-tiny.en") == tmp_path and asked == [("whisper-tiny.en", True)]
    assert whisper_judge.model_dir(tmp_path) == tmp_path and len(asked) == 1  # a folder is used as it is
    with pytest.raises(ValueError, match="whisper-tiny.en, whisper-base or a CTranslate2 folder"):
        whisper_judge.model_dir("whisper-huge")


def greedy_by_definition(dec, tok, start, eot, frames, max_tokens, partial=False):
    """Whisper's greedy transcript without a cache: the whole prefix through the decoder at every step, the argmax
    among ids up to <|endoftext|> (excluded at the first step); None where it has not ended within max_tokens (with
    partial: the text of the max_tokens + 1 tokens read)."""
    out = []
    with torch.no_grad():
        for step in range(max_tokens + 1):
            h = dec(input_ids=torch.tensor([start + out]), encoder_hidden_states=frames[None]).last_hidden_state
            logits = h[0, -1] @ dec.embed_tokens.weight.T
            allowed = logits[:eot + 1].clone()
            if step == 0:
                allowed[eot] = float("-inf")
            t = int(allowed.argmax())
            if t == eot:
                return tok.decode(out).strip()
            out.append(t)
    return tok.decode(out).strip() if partial else None


def test_the_proposal_is_the_decoders_greedy_transcript_with_its_cache():
    tok = tokenizer()
    dec = tiny_decoder(tok.get_vocab_size())
    frames = torch.randn(30, 32, generator=torch.Generator().manual_seed(1))
    ended = 0
    for eot in range(3, 60, 4):  # <|endoftext|> at several ids: some transcripts end within the limit, some do not
        judge = WhisperJudge(dec, tok, [1, 7], eot)
        want = greedy_by_definition(dec, tok, [1, 7], eot, frames, 8)
        assert judge.propose(frames, 8) == want, eot
        ended += want is not None
    assert 0 < ended < len(range(3, 60, 4))


def test_greedy_transcripts_of_a_batch_are_each_clips_alone():
    tok = tokenizer()
    dec = tiny_decoder(tok.get_vocab_size())
    g = torch.Generator().manual_seed(3)
    frames = [torch.randn(30, 32, generator=g) for _ in range(5)]
    ended = 0
    for eot in range(3, 60, 8):  # some rows end early, some late, some never: each reads as alone
        judge = WhisperJudge(dec, tok, [1, 7], eot)
        want = [greedy_by_definition(dec, tok, [1, 7], eot, f, 8) for f in frames]
        assert judge.propose_many(frames, 8, batch=2) == want, eot  # batches of 2, the last of 1
        ended += sum(w is not None for w in want)
        # partial (the probe's anchor targets): an unended row's text so far, an ended one's as before
        want = [greedy_by_definition(dec, tok, [1, 7], eot, f, 8, partial=True) for f in frames]
        assert judge.propose_many(frames, 8, batch=2, partial=True) == want, eot
        assert None not in want
    assert 0 < ended < 5 * len(range(3, 60, 8))


def test_generate_adds_whispers_transcript_to_the_beams_it_rescores(monkeypatch):
    model, K = _asr_with_judge(), 3
    batch, gen = _batch(model, 3), {"max_new_tokens": 6, "num_beams": K}
    judge = model.whisper_judge()
    nbest = model.generate(batch, num_return_sequences=K, **gen)
    frames = [judge.frames(w, model.encoders["audio"]) for w in batch["media"]["audio"]]
    # Whisper's transcripts (propose, tested above): a new text for the first clip, one of its beams for the second
    # (nothing new to add), none for the third (a decoder that did not end)
    props = [next(t for t in ("the cat sat", "a dog") if t not in nbest[:K]), nbest[K + 1], None]
    score = judge.score  # a judge that likes the first clip's proposal best: it must be among the candidates to win
    monkeypatch.setattr(judge, "score", lambda f, c: score(f, c) + 100.0 * torch.tensor([t == props[0] for t in c]))
    asked = []

    def propose(f, n):
        asked.append(n)
        return props[[torch.equal(f, g) for g in frames].index(True)]
    monkeypatch.setattr(judge, "propose", propose)
    cands = [nbest[:K] + [props[0]], nbest[K:2 * K], nbest[2 * K:]]
    want = [c[int(judge.score(f, c).argmax())] for f, c in zip(frames, cands)]
    assert want[0] == props[0]
    assert model.generate(batch, whisper_weight=1.0, whisper_proposal=True, **gen) == want
    assert asked == [6, 6, 6]  # the answer's length limit is the decoder's too
    # a sweep's weight 0 is the search's own best
    sweep = model.generate(batch, whisper_weight=[0.0, 1.0], whisper_proposal=True, **gen)
    assert sweep == [model.generate(batch, **gen), want]
    # at a weight below 1 the LLM's score of the proposal counts too: a proposal it finds unlikely loses to the beams
    mixed = model.generate(batch, whisper_weight=1e-3, whisper_proposal=True, **gen)
    assert mixed == model.generate(batch, whisper_weight=1e-3, **gen)
    with pytest.raises(ValueError, match="set whisper_weight too"):
        model.generate(batch, whisper_proposal=True, **gen)


def every_transcript(dec, start, eot, frames, max_tokens):
    """Every ``(score, tokens)`` that Whisper's search may end with, best first, each scored alone without a cache:
    1 to ``max_tokens`` text tokens (ids below ``eot``) then ``eot``, the summed full-vocabulary log-softmax."""
    import itertools

    out = []
    with torch.no_grad():
        for length in range(1, max_tokens + 1):
            for tokens in itertools.product(range(eot), repeat=length):
                seq = start + list(tokens) + [eot]
                h = dec(input_ids=torch.tensor([seq[:-1]]), encoder_hidden_states=frames[None]).last_hidden_state[0]
                logp = torch.log_softmax((h @ dec.embed_tokens.weight.T).double(), -1)
                out.append((sum(float(logp[len(start) - 1 + i, t]) for i, t in enumerate(seq[len(start):])),
                            list(tokens)))
    return sorted(out, key=lambda o: -o[0] / (len(o[1]) + 1))  # by score per token, <|endoftext|> counted


def test_whispers_beam_search_is_exhaustive_when_wide_and_keeps_the_best_when_narrow():
    tok = tokenizer()
    dec = tiny_decoder(tok.get_vocab_size())
    frames = torch.randn(30, 32, generator=torch.Generator().manual_seed(3))
    eot, start = 3, [5, 9]
    judge = WhisperJudge(dec, tok, start, eot)
    want = every_transcript(dec, start, eot, frames, 3)  # 3 + 9 + 27 transcripts
    got = judge.beam_search(frames, 3, n=40)  # 2n >= the 9 * 4 extensions of the widest step
    assert [t for _, t in got] == [t for _, t in want]
    torch.testing.assert_close(torch.tensor([s for s, _ in got]), torch.tensor([s for s, _ in want]),
                               rtol=1e-4, atol=1e-4)
    narrow = judge.beam_search(frames, 3, n=2)  # pruned: the two it returns are real transcripts, scored as alone
    assert len(narrow) == 2 and narrow[0][0] / (len(narrow[0][1]) + 1) >= narrow[1][0] / (len(narrow[1][1]) + 1)
    scores = {tuple(t): s for s, t in want}
    torch.testing.assert_close(torch.tensor([s for s, _ in narrow]), torch.tensor([scores[tuple(t)] for _, t in narrow]),
                               rtol=1e-4, atol=1e-4)
    assert judge.beam_search(frames, 0, n=4) == []  # no text allowed: nothing ends
    # a longer search over the whole tokenizer: its texts decoded, best first, those that decode alike once
    wide = WhisperJudge(dec, tok, start, 60)
    texts = wide.propose_beams(frames, 5, n=4)
    decoded = [tok.decode(t).strip() for _, t in wide.beam_search(frames, 5, n=4)]
    assert texts == list(dict.fromkeys(decoded)) and 1 <= len(texts) <= 4


def test_whispers_beam_search_copies_the_frames_keys_only_when_the_number_of_beams_changes(monkeypatch):
    """Every live beam reads the same clip, so the cache's cross-attention rows are all alike: beam_search reorders
    the self-attention part at every step and copies the cross-attention part only where the number of live beams
    changes (its transcripts and scores against every transcript scored alone: the exhaustive test above)."""
    from transformers import DynamicCache

    tok = tokenizer()
    dec = tiny_decoder(tok.get_vocab_size())
    frames = torch.randn(30, 32, generator=torch.Generator().manual_seed(6))
    judge = WhisperJudge(dec, tok, [5, 9], 60)
    want = judge.beam_search(frames, 6, n=3)
    calls = []  # (positions a row holds, rows asked for) of every reordered cache part
    real = DynamicCache.reorder_cache
    monkeypatch.setattr(DynamicCache, "reorder_cache", lambda self, idx: calls.append(
        (self.layers[0].keys.shape[2], len(idx))) or real(self, idx))
    assert judge.beam_search(frames, 6, n=3) == want
    cross = [rows for held, rows in calls if held == 30]  # the frames' keys: 30 a row
    steps = len(calls) - len(cross)  # the tokens' keys, reordered once a step
    assert steps >= 3 and cross == [3]  # one row at the first step, three beams from then on


def test_generate_adds_whispers_n_best_each_scored_by_the_llm_as_one_proposal_alone(monkeypatch):
    """whisper_proposal=2: each clip's Whisper transcripts (propose_beams) fill two slots after its beams; a slot whose
    text is missing or already a beam repeats the first beam with its score, and each new text gets the LLM score it
    gets as the one greedy proposal (whisper_proposal=True: tested against transformers' beam scores in test_model)."""
    import mmlora.ctc

    model, K = _asr_with_judge(), 3
    batch, gen = _batch(model, 3), {"max_new_tokens": 6, "num_beams": K}
    judge = model.whisper_judge()
    nbest = model.generate(batch, num_return_sequences=K, **gen)
    frames = [judge.frames(w, model.encoders["audio"]) for w in batch["media"]["audio"]]
    new = [t for t in ("the cat sat", "a dog", "on the mat") if t not in nbest]
    props = [[new[0], new[1]], [nbest[K + 1], new[2]], []]
    which = lambda f: [torch.equal(f, g) for g in frames].index(True)  # noqa: E731
    asked, seen = [], []
    monkeypatch.setattr(judge, "propose_beams", lambda f, m, n: asked.append((m, n)) or props[which(f)])
    plain = mmlora.ctc.rescore_beams
    monkeypatch.setattr(mmlora.ctc, "rescore_beams", lambda t, s, *a: seen.append((t, s)) or plain(t, s, *a))
    scored, answer_logp = [], model._answer_logp
    monkeypatch.setattr(model, "_answer_logp", lambda x, attn, cache, answers: scored.append(
        (x.shape[0], attn.shape[0], [len(a) > 0 for a in answers])) or answer_logp(x, attn, cache, answers))
    model.generate(batch, whisper_weight=0.5, whisper_proposal=2, **gen)
    assert asked == [(6, 2)] * 3
    assert scored == [(4, 4, [True] * 4)]  # the four slots with a text; the third clip's two empty ones not run
    texts, logp = seen[0]
    beams = [nbest[b * K:(b + 1) * K] for b in range(3)]
    assert texts == beams[0] + new[:2] + beams[1] + [beams[1][0], new[2]] + beams[2] + [beams[2][0]] * 2
    logp = logp.view(3, K + 2)
    for b in range(3):
        for j, p in enumerate(props[b]):
            if p in beams[b]:
                assert logp[b, K + j] == logp[b, 0]
                continue
            seen.clear()  # the same text as the one greedy proposal of its clip
            monkeypatch.setattr(judge, "propose", lambda f, m, b=b, p=p: p if which(f) == b else None)
            model.generate(batch, whisper_weight=0.5, whisper_proposal=True, **gen)
            torch.testing.assert_close(logp[b, K + j], seen[0][1].view(3, K + 1)[b, K], rtol=0, atol=1e-5)
    assert (logp[2, K:] == logp[2, 0]).all()
    with pytest.raises(ValueError, match="number of Whisper's transcripts"):
        model.generate(batch, whisper_weight=0.5, whisper_proposal=-1, **gen)


def _trained(dec) -> dict:
    """A decoder's weights but its token embeddings, as scripts/whisper_decoder_probe.py trains and saves them."""
    return {k: v.clone() for k, v in dec.state_dict().items() if k != "embed_tokens.weight"}


def test_load_decoder_takes_a_trained_decoders_weights_and_keeps_its_own_embeddings():
    tok = tokenizer()
    base, other = tiny_decoder(tok.get_vocab_size()), tiny_decoder(tok.get_vocab_size())
    with torch.no_grad():  # "other": base trained a little (every weight moved, its embeddings too)
        for p in other.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    judge = WhisperJudge(base, tok, [1, 7], 2)
    frames = torch.randn(30, 32, generator=torch.Generator().manual_seed(3))
    cands = ["the cat sat", "a", "on the mat"]
    before = judge.score(frames, cands)
    emb = base.embed_tokens.weight.detach().clone()
    judge.load_decoder(_trained(other), "trained.safetensors")
    with torch.no_grad():  # what the judge should now be: other's weights with base's embeddings
        other.embed_tokens.weight.copy_(emb)
    want = WhisperJudge(other, tok, [1, 7], 2).score(frames, cands)
    torch.testing.assert_close(judge.score(frames, cands), want)
    assert not torch.allclose(before, want)
    assert torch.equal(judge.decoder.embed_tokens.weight, emb)
    with pytest.raises(ValueError, match=r"trained.safetensors: not weights of this Whisper's decoder: \['extra'\]"):
        judge.load_decoder({"extra": torch.zeros(1)}, "trained.safetensors")
    bad = {"layer_norm.weight": torch.zeros(5)}
    with pytest.raises(ValueError, match=r"trained.safetensors: weights of another size.*layer_norm.weight \(5,\)"):
        judge.load_decoder(bad, "trained.safetensors")


def test_a_model_folders_trained_decoder_is_saved_reloaded_and_judges(tmp_path, monkeypatch):
    from mmlora.model import WHISPER_DECODER, MultimodalLM

    model = _asr_with_judge()
    judge = model._whisper_judge
    trained = tiny_decoder(judge.tokenizer.get_vocab_size(), model.encoders["audio"].output_dim)
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(1.0)
    from safetensors.torch import load_file

    from mmlora.encoders.whisper_judge import pack_decoder_delta

    model.whisper_decoder_state = pack_decoder_delta(_trained(trained), judge.decoder.state_dict(), bits=4, group=16)
    model.save_pretrained(tmp_path / "packed")  # packed weights are saved as the integers they are
    saved = load_file(str(tmp_path / "packed" / WHISPER_DECODER))
    assert {k: v.dtype for k, v in saved.items()} == {k: v.dtype for k, v in model.whisper_decoder_state.items()}
    assert torch.uint8 in {v.dtype for v in saved.values()}
    model.whisper_decoder_state = _trained(trained)
    model.save_pretrained(tmp_path / "with")
    model.whisper_decoder_state = None
    model.save_pretrained(tmp_path / "without")
    assert (tmp_path / "with" / WHISPER_DECODER).is_file() and not (tmp_path / "without" / WHISPER_DECODER).exists()

    fresh = []  # whisper_judge loads the packaged Whisper (here: an untrained tiny judge) and then the folder's weights
    monkeypatch.setattr(WhisperJudge, "load", classmethod(lambda cls, name: fresh.append(name) or WhisperJudge(
        tiny_decoder(judge.tokenizer.get_vocab_size(), model.encoders["audio"].output_dim), judge.tokenizer,
        judge.start, judge.eot)))
    for folder, want in (("with", trained.state_dict()), ("without", _asr_with_judge()._whisper_judge.decoder
                                                          .state_dict())):
        loaded = MultimodalLM.from_pretrained(tmp_path / folder)
        loaded.cfg.media["audio"].encoder = {**(loaded.cfg.media["audio"].encoder or {}), "preset": "whisper-tiny.en"}
        got = loaded.whisper_judge().decoder.state_dict()
        for k, v in want.items():
            if k != "embed_tokens.weight":
                torch.testing.assert_close(got[k], v, msg=f"{folder}: {k}")
    assert fresh == ["whisper-tiny.en", "whisper-tiny.en"]
    assert (loaded.whisper_decoder_state is None) and MultimodalLM.from_pretrained(tmp_path / "with").whisper_decoder_state



def test_a_model_folders_judge_encoder_lora_is_saved_reloaded_and_read_by_the_judge_alone(tmp_path):
    """WHISPER_ENCODER: the judge reads a copy of the audio encoder with the folder's LoRA; the model's encoder (the
    LLM's frames) keeps its own; saved again as read; a folder that does not fit the encoder is a clear error."""
    from mmlora.lora import LoRASpec, attach, detach
    from mmlora.model import WHISPER_ENCODER, MultimodalLM
    from mmlora.routing import RoutingPlan, install_plan

    model = _asr_with_judge("model.media.audio.encoder_lora={rank: 2, alpha: 4}")
    enc = model.encoders["audio"]
    judge = model._whisper_judge
    assert model.judge_encoder() is enc and model.whisper_encoder_lora is None  # none: the model's own
    other = copy.deepcopy(enc)  # the judge's: the same encoder, its LoRA trained elsewhere
    with torch.no_grad():
        for n, p in other.named_parameters():
            if ".adapters." in n:
                p.add_(torch.randn_like(p) * 0.5)
    save_adapters(other, tmp_path / "lora")
    model.save_pretrained(tmp_path / "without")
    shutil.copytree(tmp_path / "lora", tmp_path / "without" / WHISPER_ENCODER)
    loaded = MultimodalLM.from_pretrained(tmp_path / "without")
    assert loaded.whisper_encoder_lora is not None
    loaded._whisper_judge = judge
    wave = torch.randn(16000, generator=torch.Generator().manual_seed(5)) * 0.1
    got = loaded._judge_frames({"media": {"audio": [wave]}}, 0.5, {"num_beams": 2})[0][0]
    torch.testing.assert_close(got, judge.frames(wave, other))
    assert not torch.allclose(got, judge.frames(wave, loaded.encoders["audio"]), atol=1e-3)
    for (n, p), (m, q) in zip(loaded.encoders["audio"].named_parameters(), enc.named_parameters()):
        assert n == m and torch.equal(p, q), n  # the LLM's encoder is the saved model's
    assert loaded.judge_encoder() is loaded.judge_encoder()  # built once
    assert not any("_judge_encoder" in k for k in loaded.state_dict())  # not a part of the model
    loaded.save_pretrained(tmp_path / "again")
    torch.testing.assert_close(read_adapter_folder(tmp_path / "again" / WHISPER_ENCODER)[1],
                               read_adapter_folder(tmp_path / "lora")[1])
    # the folder's LoRA as it describes it: another rank and fewer layers (here rank 3 on the q projections) too
    wide = detach(copy.deepcopy(enc))
    attach(wide, {"encoder": LoRASpec(rank=3, alpha=4)}, ["q_proj"])
    with torch.no_grad():
        for n, p in wide.named_parameters():
            if ".adapters." in n:
                p.normal_(0, 0.3)
    install_plan(wide, RoutingPlan(names=("encoder",), shared=("encoder",)))
    save_adapters(wide, tmp_path / "wide")
    shutil.rmtree(tmp_path / "again" / WHISPER_ENCODER)
    shutil.copytree(tmp_path / "wide", tmp_path / "again" / WHISPER_ENCODER)
    ranked = MultimodalLM.from_pretrained(tmp_path / "again")
    ranked._whisper_judge = judge
    torch.testing.assert_close(ranked._judge_frames({"media": {"audio": [wave]}}, 0.5, {"num_beams": 2})[0][0],
                               judge.frames(wave, wide))
    cfg = json.loads((tmp_path / "wide" / "adapters.json").read_text())  # a layer this encoder lacks: named
    cfg["layers"]["model.layers.9.fc1"] = next(iter(cfg["layers"].values()))
    (tmp_path / "again" / WHISPER_ENCODER / "adapters.json").write_text(json.dumps(cfg))
    bad = MultimodalLM.from_pretrained(tmp_path / "again")
    with pytest.raises(ValueError, match=f"{WHISPER_ENCODER}.*model.layers.9.fc1"):
        bad.judge_encoder()



def test_both_judges_read_their_own_encoders_frames(monkeypatch):
    """whisper_both with a judge encoder LoRA (and no trained decoder): Whisper's own decoder reads the model's
    encoder, the folder's judge the judge encoder's copy; each scores and proposes from its own view."""
    model = _asr_with_judge("model.media.audio.encoder_lora={rank: 2, alpha: 4}")
    K, gen = 2, {"max_new_tokens": 6, "num_beams": 2}
    batch = _batch(model, 2)
    judge = model.whisper_judge()
    other = copy.deepcopy(model.encoders["audio"])
    with torch.no_grad():
        for n, p in other.named_parameters():
            if ".adapters." in n:
                p.add_(torch.randn_like(p) * 0.5)
    model.whisper_encoder_lora = (
        {"format": "mmlora-adapters", "version": 1,
         "layers": {n: {a: vars(ad.spec) for a, ad in layer.adapters.items()} for n, layer in lora_layers(other)}},
        {f"{n}.{a}.{x}": getattr(ad, x).detach().clone() for n, layer in lora_layers(other)
         for a, ad in layer.adapters.items() for x in "AB"})
    own = WhisperJudge(copy.deepcopy(judge.decoder), judge.tokenizer, judge.start, judge.eot)
    monkeypatch.setattr(WhisperJudge, "load", classmethod(lambda cls, name: own))
    model.cfg.media["audio"].encoder = {**(model.cfg.media["audio"].encoder or {}), "preset": "whisper-tiny.en"}
    seen = {"own": [], "trained": []}
    for name, j in (("own", own), ("trained", judge)):
        score, propose = j.score, j.propose
        monkeypatch.setattr(j, "score", lambda f, c, score=score, name=name: seen[name].append(f) or score(f, c))
        monkeypatch.setattr(j, "propose", lambda f, n, propose=propose, name=name: seen[name].append(f) or propose(f, n))
    model.generate(batch, whisper_weight=0.5, whisper_proposal=True, whisper_both=True, **gen)
    waves = batch["media"]["audio"]
    for name, enc in (("own", model.encoders["audio"]), ("trained", model.judge_encoder())):
        assert len(seen[name]) == 2 * len(waves)  # each clip: its proposal, then its candidates' scores
        want = [judge.frames(w.cpu(), enc) for w in waves]
        for got, w in zip(seen[name], [want[0], want[1], want[0], want[1]]):
            torch.testing.assert_close(got, w)
    assert not torch.allclose(seen["own"][0], seen["trained"][0], atol=1e-3)  # two views indeed
    model.whisper_encoder_lora = None
    with pytest.raises(ValueError, match="has neither"):
        model.generate(batch, whisper_weight=1.0, whisper_both=True, **gen)

def test_whisper_own_encoder_base_gives_whispers_own_decoder_the_encoder_without_lora(monkeypatch):
    """whisper_own_encoder="base": Whisper's own decoder reads the packaged encoder without the model's LoRA (its
    frames are the model encoder's with the LoRA's plan taken off), the folder's judge its judge encoder as before;
    the model's encoder keeps its LoRA."""
    from mmlora.model import ENCODER_LORA
    from mmlora.routing import RoutingPlan, install_plan

    model = _asr_with_judge("model.media.audio.encoder_lora={rank: 2, alpha: 4}")
    gen, batch = {"max_new_tokens": 6, "num_beams": 2}, _batch(model, 2)
    with torch.no_grad():
        for n, p in model.encoders["audio"].named_parameters():
            if ".adapters." in n:
                p.add_(torch.randn_like(p) * 0.5)  # a LoRA that changes the frames
    judge = model.whisper_judge()
    model.whisper_decoder_state = {"layer_norm.bias": torch.zeros(1)}  # a folder's trained decoder: both allowed
    own = WhisperJudge(copy.deepcopy(judge.decoder), judge.tokenizer, judge.start, judge.eot)
    monkeypatch.setattr(WhisperJudge, "load", classmethod(lambda cls, name: own))
    model.cfg.media["audio"].encoder = {**(model.cfg.media["audio"].encoder or {}), "preset": "whisper-tiny.en"}
    seen = {"own": [], "trained": []}
    for name, j in (("own", own), ("trained", judge)):
        score = j.score
        monkeypatch.setattr(j, "score", lambda f, c, score=score, name=name: seen[name].append(f) or score(f, c))
    model.generate(batch, whisper_weight=0.5, whisper_both=True, whisper_own_encoder="base", **gen)
    waves = batch["media"]["audio"]
    enc = model.encoders["audio"]
    with_lora = [judge.frames(w.cpu(), enc) for w in waves]
    install_plan(enc, None)  # the reference: the same encoder with its LoRA off
    without = [judge.frames(w.cpu(), enc) for w in waves]
    install_plan(enc, RoutingPlan(names=(ENCODER_LORA,), shared=(ENCODER_LORA,)))
    for got, want in zip(seen["own"], without):
        torch.testing.assert_close(got, want)
    for got, want in zip(seen["trained"], with_lora):  # no judge encoder in this folder: the model's
        torch.testing.assert_close(got, want)
    assert not torch.allclose(without[0], with_lora[0], atol=1e-3)  # the LoRA does change them
    torch.testing.assert_close(judge.frames(waves[0].cpu(), enc), with_lora[0])  # the model's encoder untouched
    with pytest.raises(ValueError, match="whisper_own_encoder is 'model'.*got 'pristine'"):
        model.generate(batch, whisper_weight=0.5, whisper_both=True, whisper_own_encoder="pristine", **gen)


def _base_and_trained(tok):
    """A tiny decoder and a copy of it trained a little (every weight moved by about 0.05)."""
    base, other = tiny_decoder(tok.get_vocab_size()), tiny_decoder(tok.get_vocab_size())
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return base, other


@pytest.mark.parametrize("bits", [8, 4])
def test_packed_weights_come_back_within_half_a_level_of_their_change(bits):
    from mmlora.encoders.whisper_judge import pack_decoder_delta, unpack_decoder_state

    base, other = _base_and_trained(tokenizer())
    own, trained = base.state_dict(), _trained(other)
    packed = pack_decoder_delta(trained, own, bits=bits, group=16)
    top = 2 ** (bits - 1) - 1
    quantized = [k for k, v in trained.items() if v.ndim == 2 and k != "embed_positions.weight"]
    assert quantized and all(packed[k + ".qdelta"].dtype == (torch.int8 if bits == 8 else torch.uint8)
                             for k in quantized)
    assert packed[quantized[0] + ".qdelta"].shape[1] == trained[quantized[0]].shape[1] * bits // 8
    got = unpack_decoder_state(packed, own)
    assert set(got) == set(trained)
    for k, v in trained.items():
        if k not in quantized:  # biases, norms, position embeddings: as they were
            assert torch.equal(got[k], v), k
            continue
        d = (v - own[k]).reshape(v.shape[0], -1, 16)  # each group's level, from the definition
        step = (d.abs().amax(-1, keepdim=True) / top).half().float()
        err = (got[k] - v).reshape(d.shape).abs()
        assert (err <= step / 2 + 1e-6).all(), k
        assert err.max() > 0  # really quantized


def test_packed_levels_round_trip_exactly_in_their_bit_order():
    from mmlora.encoders.whisper_judge import pack_decoder_delta, unpack_decoder_state

    own = {"w": torch.zeros(2, 4)}
    levels = torch.tensor([[7., -7, 3, 1], [-2, 0, 5, -7]])  # each row one group of 4, its largest |level| 7
    trained = {"w": levels * 0.5}  # at 4 bits the scale is 0.5 and every change a whole level: exact
    four = pack_decoder_delta(trained, own, bits=4, group=4)
    assert torch.equal(unpack_decoder_state(four, own)["w"], trained["w"])
    eight = unpack_decoder_state(pack_decoder_delta(trained, own, bits=8, group=4), own)["w"]
    torch.testing.assert_close(eight, trained["w"], atol=3.5 / 127 / 2, rtol=0)  # within half of 8 bits' level
    # row 0: scale 0.5 → levels 7,-7,3,1 → stored +8: 15,1,11,9; even input in the low half of each byte
    assert four["w.qdelta"][0].tolist() == [15 | (1 << 4), 11 | (9 << 4)]
    with pytest.raises(ValueError, match="w.qdelta needs w.qscale"):
        unpack_decoder_state({"w.qdelta": four["w.qdelta"]}, own, "dec.safetensors")
    with pytest.raises(ValueError, match="do not pack w"):
        unpack_decoder_state(four, {"w": torch.zeros(2, 6)})
    with pytest.raises(ValueError, match="bits: 8 or 4"):
        pack_decoder_delta(trained, own, bits=2)


def test_a_judge_loads_packed_weights_as_their_unpacked_values(tmp_path):
    from safetensors.torch import load_file, save_file

    from mmlora.encoders.whisper_judge import pack_decoder_delta, unpack_decoder_state

    tok = tokenizer()
    base, other = _base_and_trained(tok)
    packed = pack_decoder_delta(_trained(other), base.state_dict(), bits=4, group=16)
    save_file(packed, str(tmp_path / "dec.safetensors"))  # integers stay integers on disk
    assert load_file(str(tmp_path / "dec.safetensors"))[next(k for k in packed if k.endswith(".qdelta"))].dtype \
        == torch.uint8
    want = unpack_decoder_state(packed, base.state_dict())
    judge = WhisperJudge(tiny_decoder(tok.get_vocab_size()), tok, [1, 7], 2)
    judge.load_decoder(load_file(str(tmp_path / "dec.safetensors")), "dec.safetensors")
    for k, v in want.items():
        torch.testing.assert_close(judge.decoder.state_dict()[k], v, msg=k)


def test_a_mix_keeps_its_share_of_the_change():
    from mmlora.encoders.whisper_judge import mix_decoder_state

    own = {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor([0.0])}
    trained = {"w": torch.tensor([3.0, -2.0]), "b": torch.tensor([4.0]), "new": torch.tensor([9.0])}
    assert mix_decoder_state(own, trained, 0.0)["w"].tolist() == [1.0, 2.0]
    assert mix_decoder_state(own, trained, 1.0)["w"].tolist() == [3.0, -2.0]
    half = mix_decoder_state(own, trained, 0.75)
    assert half["w"].tolist() == [2.5, -1.0] and half["b"].tolist() == [3.0] and half["new"].tolist() == [9.0]
    with pytest.raises(ValueError, match="share: in"):
        mix_decoder_state(own, trained, 1.2)


def test_both_decoders_propose_and_a_candidate_scores_their_mean_or_mix(monkeypatch):
    model, K = _asr_with_judge(), 3
    batch, gen = _batch(model, 2), {"max_new_tokens": 6, "num_beams": K}
    with pytest.raises(ValueError, match="whisper_both asks Whisper's own decoder beside a trained one"):
        model.generate(batch, whisper_weight=1.0, whisper_both=True, **gen)
    trained = model.whisper_judge()
    own = WhisperJudge(tiny_decoder(trained.tokenizer.get_vocab_size(), model.encoders["audio"].output_dim),
                       trained.tokenizer, trained.start, trained.eot)
    loads = []
    monkeypatch.setattr(WhisperJudge, "load", classmethod(lambda cls, name: loads.append(name) or own))
    model.whisper_decoder_state = {"layer_norm.bias": torch.zeros(1)}  # a folder's trained decoder (judge built)
    model.cfg.media["audio"].encoder = {**(model.cfg.media["audio"].encoder or {}), "preset": "whisper-tiny.en"}
    nbest = model.generate(batch, num_return_sequences=K, **gen)
    cat, dog = [t for t in ("the cat sat", "a dog", "on the mat") if t not in nbest][:2]
    # each decoder proposes its own text; own likes cat by 100, the trained one dog by 60: the mean picks cat, the
    # trained one alone dog; cat can only win if own's proposal joined the candidates
    for judge, text, bonus in ((own, cat, 100.0), (trained, dog, 60.0)):
        monkeypatch.setattr(judge, "propose", lambda f, n, text=text: text)
        score = judge.score
        monkeypatch.setattr(judge, "score", lambda f, c, score=score, text=text, bonus=bonus:
                            score(f, c) * 0 + bonus * torch.tensor([t == text for t in c]))
    assert model.generate(batch, whisper_weight=1.0, whisper_proposal=True, **gen) == [dog, dog]
    assert model.generate(batch, whisper_weight=1.0, whisper_proposal=True, whisper_both=True, **gen) == [cat, cat]
    # whisper_both=s: s * own + (1 - s) * trained, so cat (100 s) beats dog (60 (1 - s)) from s = 0.375 on; a sweep
    # reads the same candidates for every share (own's proposal among them); 0 is off (the trained judge alone)
    both = {"whisper_weight": 1.0, "whisper_proposal": True, **gen}
    for share, want in ((0.0, dog), (0.3, dog), (0.37, dog), (0.38, cat), (1.0, cat)):
        assert model.generate(batch, whisper_both=share, **both) == [want, want], share
    assert model.generate(batch, whisper_both=[0.3, 0.38, 0.5], **both) == [[dog, dog], [cat, cat], [cat, cat]]
    assert model.whisper_judges(True) == [own, trained] and loads == ["whisper-tiny.en"]  # loaded once
    # the proposals of both, each once, own's first
    assert model._whisper_proposals(None, 6, 1, [own, trained, own]) == [cat, dog]
