"""Second judges (``generate(second_judge_weight=…)``, a model folder's ``second_judges/NAME/``): other trainings'
Whisper judges, each reading its own encoder LoRA, whose mean score weighs beside the decoding's total. Checked
against each judge scoring the candidates alone and the formula over the kept candidates; tiny random weights."""
from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest
import torch

from mmlora.ctc import candidate_rows, rescore_beams, rescore_rows, rescore_totals, with_second
from mmlora.encoders.whisper_judge import WhisperJudge
from mmlora.lora import lora_layers
from mmlora.model import SECOND_JUDGES, WHISPER_DECODER, WHISPER_ENCODER, MultimodalLM

sys.path.insert(0, str(Path(__file__).parent))
from test_whisper_judge import _asr_with_judge, _batch, tiny_decoder  # noqa: E402


def _moved(dec, seed: float) -> dict:
    """A trained decoder's weights: every weight but the embeddings moved (as WHISPER_DECODER holds them)."""
    g = torch.Generator().manual_seed(int(seed))
    return {k: v + torch.randn(v.shape, generator=g) * 0.2 for k, v in dec.state_dict().items()
            if k != "embed_tokens.weight"}


def _lora_of(model, seed: int) -> tuple[dict, dict]:
    """An encoder LoRA as read_adapter_folder gives it: the model's encoder LoRA layers with random factors."""
    other = copy.deepcopy(model.encoders["audio"])
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in other.named_parameters():
            if ".adapters." in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return ({"format": "mmlora-adapters", "version": 1,
             "layers": {n: {a: vars(ad.spec) for a, ad in layer.adapters.items()} for n, layer in lora_layers(other)}},
            {f"{n}.{a}.{x}": getattr(ad, x).detach().clone() for n, layer in lora_layers(other)
             for a, ad in layer.adapters.items() for x in "AB"})


def _with_second_judges(monkeypatch, preset: bool = True):
    """An ASR model with an encoder LoRA and two second judges (one with its own encoder LoRA, one without), the
    packaged Whisper replaced by fresh tiny judges (``preset``: its name set, as a released model has it)."""
    model = _asr_with_judge("model.media.audio.encoder_lora={rank: 2, alpha: 4}")
    judge = model.whisper_judge()
    base = tiny_decoder(judge.tokenizer.get_vocab_size(), model.encoders["audio"].output_dim)
    model.second_judge_states = [("a", _moved(base, 1), _lora_of(model, 3)), ("b", _moved(base, 2), None)]
    monkeypatch.setattr(WhisperJudge, "load", classmethod(lambda cls, name: WhisperJudge(
        copy.deepcopy(base), judge.tokenizer, judge.start, judge.eot, padded=judge.padded_encoder())))
    if preset:
        model.cfg.media["audio"].encoder = {**(model.cfg.media["audio"].encoder or {}), "preset": "whisper-tiny.en"}
    return model


def test_second_judges_score_by_their_own_weights_and_encoders_and_weigh_their_mean(monkeypatch):
    model, K = _with_second_judges(monkeypatch), 3
    batch, gen = _batch(model, 2), {"max_new_tokens": 6, "num_beams": K, "whisper_weight": 0.5}
    judges = model.second_judges()
    assert model.second_judges() is judges and len(judges) == 2  # built once
    (ja, ea), (jb, eb) = judges
    assert eb is model.encoders["audio"] and ea is not eb  # a: its own LoRA; b: none, the model's encoder
    for (name, dec, _), (j, _) in zip(model.second_judge_states, judges):
        got = j.decoder.state_dict()
        for k, v in dec.items():
            torch.testing.assert_close(got[k], v, msg=f"{name}: {k}")
    rows = []
    plain = model.generate(batch, candidates=rows, **gen)
    waves = batch["media"]["audio"]
    assert not any("second" in row for row in rows)  # no second weight: no second scores kept
    for v in (0.3, 0.9):  # kept: the mean of each judge's scores of the clip's candidates through its own encoder
        kept = []
        got = model.generate(batch, candidates=kept, second_judge_weight=v, **gen)
        for b, row in enumerate(kept):
            want = torch.stack([j.score(j.frames(waves[b], e), row["texts"]) for j, e in judges]).mean(0)
            torch.testing.assert_close(torch.tensor(row["second"]), want)
            total = rescore_totals(torch.tensor(row["llm"]), None, 0.0, torch.tensor(row["judges"][0]), 0.5)
            pick = int(((1 - v) * total + v * want).argmax())
            assert got[b] == row["texts"][pick]
        assert rescore_rows(kept, 0.0, 0.5, 0.5, v) == got  # the kept rows pick again what the search picked
        assert [r["texts"] for r in kept] == [r["texts"] for r in rows]  # the same candidates as without
    # a second judge that likes one candidate by far decides where it weighs, and not where it is off
    target = [r["texts"][-1] for r in rows]
    for j, _ in judges:
        score = j.score
        monkeypatch.setattr(j, "score", lambda f, c, score=score: score(f, c) * 0 + 1e4 * torch.tensor(
            [t in target for t in c], dtype=torch.float))
    assert model.generate(batch, second_judge_weight=0.5, **gen) == target
    assert model.generate(batch, **gen) == plain


@pytest.mark.parametrize("extra, message", [
    ({"second_judge_weight": 0.5, "whisper_weight": None}, "with whisper_weight set"),
    ({"second_judge_weight": 1.0}, r"must be in \(0, 1\)"),
])
def test_bad_second_judge_settings_are_clear_errors(monkeypatch, extra, message):
    model = _with_second_judges(monkeypatch)
    gen = {"max_new_tokens": 4, "num_beams": 2, "whisper_weight": 0.5, **extra}
    gen = {k: v for k, v in gen.items() if v is not None}
    with pytest.raises(ValueError, match=message):
        model.generate(_batch(model, 1), **gen)
    model.second_judge_states = []
    with pytest.raises(ValueError, match="this model has none"):
        model.generate(_batch(model, 1), max_new_tokens=4, num_beams=2, whisper_weight=0.5, second_judge_weight=0.5)


def test_second_judges_are_saved_reloaded_and_a_folder_without_a_decoder_is_named(tmp_path, monkeypatch):
    model = _with_second_judges(monkeypatch, preset=False)
    judge = model.whisper_judge()
    monkeypatch.setattr(MultimodalLM, "whisper_judge", lambda self: judge)
    model.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m" / SECOND_JUDGES).iterdir()) == ["a", "b"]
    assert (tmp_path / "m" / SECOND_JUDGES / "a" / WHISPER_ENCODER).is_dir()
    assert not (tmp_path / "m" / SECOND_JUDGES / "b" / WHISPER_ENCODER).exists()
    loaded = MultimodalLM.from_pretrained(tmp_path / "m")
    assert [n for n, _, _ in loaded.second_judge_states] == ["a", "b"]
    for (_, d0, l0), (_, d1, l1) in zip(model.second_judge_states, loaded.second_judge_states):
        assert d0.keys() == d1.keys() and all(torch.equal(d0[k], d1[k]) for k in d0)
        assert (l0 is None) == (l1 is None)
        if l0:
            assert l0[0]["layers"] == l1[0]["layers"] and all(torch.equal(l0[1][k], l1[1][k]) for k in l0[1])
    loaded.second_judge_states = []
    loaded.save_pretrained(tmp_path / "none")
    assert not (tmp_path / "none" / SECOND_JUDGES).exists()
    assert MultimodalLM.from_pretrained(tmp_path / "none").second_judge_states == []
    # a lip reader started from it (train_grid.sh's GV from the release) reads no audio: the judges are left out
    # and not carried into the folders it saves (before session 71 they were: 20 MB a lip reader)
    model.whisper_decoder_state = _moved(judge.decoder, 4)
    model.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / WHISPER_DECODER).is_file()
    from mmlora.tasks.cli import build_model, load_run_config

    _, cfg = load_run_config("recipes/vsr_tiny.yaml", [f"train.init_from={tmp_path / 'm'}"])
    vsr = build_model(cfg)
    assert vsr.whisper_decoder_state is None and vsr.second_judge_states == [] and vsr.whisper_encoder_lora is None
    vsr.save_pretrained(tmp_path / "lips")
    assert {p.name for p in (tmp_path / "lips").iterdir()}.isdisjoint({WHISPER_DECODER, WHISPER_ENCODER, SECOND_JUDGES})
    assert MultimodalLM.from_pretrained(tmp_path / "m").whisper_decoder_state is not None  # one that hears keeps it
    (tmp_path / "m" / SECOND_JUDGES / "b" / WHISPER_DECODER).unlink()
    with pytest.raises(ValueError, match=f"{SECOND_JUDGES}/b: a second judge needs its trained decoder"):
        MultimodalLM.from_pretrained(tmp_path / "m")


def test_rescore_beams_and_rows_weigh_the_second_score_by_the_formula():
    torch.manual_seed(0)
    B, K = 3, 4
    texts = [f"t{i}" for i in range(B * K)]
    llm, ctc, judge, second = (torch.randn(B * K) * 5 for _ in range(4))
    for v in (0.0, 0.2, 0.7):
        total = (1 - v) * ((1 - 0.5) * ((1 - 0.1) * llm + 0.1 * ctc) + 0.5 * judge) + v * second
        want = [texts[b * K + int(total.view(B, K)[b].argmax())] for b in range(B)]
        assert rescore_beams(texts, llm, B, ctc, 0.1, judge, 0.5, second, v) == want
        rows = candidate_rows(texts, llm, B, ctc, judge[None], second)
        assert rescore_rows(rows, 0.1, 0.5, 0.5, v) == want
    torch.testing.assert_close(with_second(llm, None, 0.0), llm)
    with pytest.raises(ValueError, match="candidate row 0: no second scores"):
        rescore_rows(candidate_rows(texts, llm, B, ctc, judge[None]), 0.1, 0.5, 0.5, 0.2)
    assert json.loads(json.dumps(candidate_rows(texts, llm, B, second=second)))[0]["dtypes"]["second"] == "float32"
