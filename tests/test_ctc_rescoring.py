"""Joint CTC / LLM rescoring of the beams (``generate(ctc_weight=…)``, ``--ctc-weight``) and
scripts/fit_ctc_head.py, which gives a trained model a CTC head afterwards. The CTC likelihood is checked against the
definition by enumeration (test_ctc's brute force), the choice against the formula, and generate against its own
n-best list."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from mmlora.ctc import CTC_CHARS, ctc_log_likelihood, rescore_with_ctc
from test_ctc import brute_force_nll

ROOT = Path(__file__).resolve().parents[1]
TEMPORAL_AUDIO = "model.ctc={modality: audio, weight: 0.5, head: temporal, width: 16, kernel: 3, layers: 2}"


def _labels(text: str) -> list[int]:
    return [CTC_CHARS.index(c) + 1 for c in text]


def test_log_likelihood_is_the_summed_path_probability():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 3, len(CTC_CHARS) + 1, generator=g)
    mask = torch.tensor([[True, True, True], [True, True, False], [True, True, True]])
    got = ctc_log_likelihood(logits, mask, ["Ab", "a", "abcd"])  # normalized as WER scoring does: "ab"
    logp = torch.log_softmax(logits.double(), -1)
    assert float(got[0]) == pytest.approx(-brute_force_nll(logp[0], _labels("ab")), rel=1e-5)
    assert float(got[1]) == pytest.approx(-brute_force_nll(logp[1, :2], _labels("a")), rel=1e-5)
    assert got[2] == float("-inf")  # four characters cannot fit three frames


def test_rescoring_takes_the_best_weighted_sum_for_each_sample():
    g = torch.Generator().manual_seed(2)
    B, K, T = 2, 3, 3
    logits = torch.randn(B, T, len(CTC_CHARS) + 1, generator=g)
    mask = torch.ones(B, T, dtype=torch.bool)
    texts = ["a", "b", "ab", "ba", "b", "a"]
    llm = torch.tensor([-1.0, -2.0, -3.0, -0.5, -4.0, -1.5])
    logp = torch.log_softmax(logits.double(), -1)
    ctc = [-brute_force_nll(logp[i // K], _labels(t)) for i, t in enumerate(texts)]
    for w in (0.01, 0.3, 0.7, 1.0):
        want = [max(range(K), key=lambda k: (1 - w) * float(llm[b * K + k]) + w * ctc[b * K + k]) for b in range(B)]
        assert rescore_with_ctc(texts, llm, logits, mask, w) == [texts[b * K + k] for b, k in enumerate(want)]
    # nearly all LLM: its own best; all CTC: the best-spelled candidate
    assert rescore_with_ctc(texts, llm, logits, mask, 1e-9) == ["a", "ba"]
    assert rescore_with_ctc(texts, llm, logits, mask, 1.0) == [
        texts[max(range(K), key=lambda k: ctc[b * K + k]) + b * K] for b in range(B)]
    # equal candidates tie: the first (the LLM's ranking) wins
    assert rescore_with_ctc(["x", "x"], torch.zeros(2), logits[:1], mask[:1], 0.5) == ["x"]
    with pytest.raises(ValueError, match="5 candidates and 5 scores for 2 samples"):
        rescore_with_ctc(texts[:5], llm[:5], logits, mask, 0.5)


def _asr(*overrides: str):
    from mmlora.tasks.cli import build_model, load_run_config

    _, cfg = load_run_config("recipes/asr_tiny.yaml", list(overrides))
    torch.manual_seed(0)
    return build_model(cfg).eval()


def _audio_batch(model, n=2):
    from mmlora.data.collate import collate_samples
    from mmlora.tasks.speech import SpeechDataset, read_manifest

    ds = SpeechDataset(read_manifest("tests/data/speech/test.jsonl"), ("audio",))
    return collate_samples([ds[i] for i in range(n)], model.prompts, with_answer=False)


def test_generate_returns_the_candidate_of_its_own_nbest_that_the_formula_picks():
    model = _asr(TEMPORAL_AUDIO)
    batch = _audio_batch(model)
    K, gen = 4, {"max_new_tokens": 6, "num_beams": 4}
    torch.manual_seed(0)
    nbest = model.generate(batch, num_return_sequences=K, **gen)
    with torch.no_grad():
        f = model.encode_media(batch["media"])["audio"]
        from mmlora.ctc import run_ctc_head

        logits = run_ctc_head(model.projectors["audio"].ctc_head, f.x, f.mask)
    ctc = ctc_log_likelihood(logits.repeat_interleave(K, 0), f.mask.repeat_interleave(K, 0), nbest)
    got = model.generate(batch, ctc_weight=1.0, **gen)
    assert got == [nbest[b * K + int(ctc[b * K:(b + 1) * K].argmax())] for b in range(2)]
    for w in (1e-4, 0.5):  # every weight returns one of the beams
        assert all(t in nbest[b * K:(b + 1) * K] for b, t in enumerate(model.generate(batch, ctc_weight=w, **gen)))
    assert model.generate(batch, ctc_weight=0.0, **gen) == model.generate(batch, **gen)  # 0: off


@pytest.mark.parametrize("overrides, gen, message", [
    ((), {"num_beams": 2, "ctc_weight": 0.5}, "needs a model with a CTC head"),
    ((TEMPORAL_AUDIO,), {"num_beams": 1, "ctc_weight": 0.5}, "set num_beams > 1"),
    ((TEMPORAL_AUDIO,), {"num_beams": 2, "ctc_weight": 1.5}, r"ctc_weight must be in \(0, 1\]"),
])
def test_bad_rescoring_settings_are_clear_errors(overrides, gen, message):
    model = _asr(*overrides)
    with pytest.raises(ValueError, match=message):
        model.generate(_audio_batch(model, 1), max_new_tokens=4, **gen)


def test_folding_the_standardization_keeps_the_heads_output():
    sys.path.insert(0, str(ROOT / "scripts"))
    from fit_ctc_head import fold_standardization
    from lip_ctc_probe import fit_head, pad

    g = torch.Generator().manual_seed(3)
    x, m = pad([torch.randn(n, 8, generator=g) * 3 + 1 for n in (6, 4, 5)])
    probe = fit_head(x, m, ["ab", "b", "a"], epochs=2, lr=1e-2, batch=2, kind="temporal")
    with torch.no_grad():
        want = probe(x, m)
        got = fold_standardization(probe)(x, m)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_fit_ctc_head_writes_a_copy_that_rescores(tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "scripts"))
    import fit_ctc_head

    from mmlora.pipelines import load_pipeline

    src = tmp_path / "model"
    _asr("model.llm.dtype=bfloat16").save_pretrained(src, pipeline={"task": "asr", "instruction": "Transcribe the audio.",
                                          "modalities": ["audio"], "generation": {"num_beams": 2,
                                                                                 "max_new_tokens": 6}})
    out = tmp_path / "with_ctc"
    rc = fit_ctc_head.main(["--model", str(src), "--out", str(out), "--train", "tests/data/speech/train.jsonl",
                            "--n-per-manifest", "6", "--epochs", "1", "--test", "tests/data/speech/test.jsonl",
                            "--ctc-weight", "0.3"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["clips"] == 6 and 0 <= report["test"]["cer"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"]["ctc"]["modality"] == "audio" and cfg["model"]["ctc"]["head"] == "temporal"
    assert cfg["pipeline"]["generation"] == {"num_beams": 2, "max_new_tokens": 6, "ctc_weight": 0.3}
    before = json.loads((src / "config.json").read_text())["model"]
    assert {k: v for k, v in cfg["model"].items() if k != "ctc"} == {k: v for k, v in before.items() if k != "ctc"}
    assert "ctc" not in json.loads((src / "config.json").read_text())["model"] or \
        not json.loads((src / "config.json").read_text())["model"]["ctc"]["modality"]
    pipe = load_pipeline(out, device="cpu")
    assert pipe.model.projectors["audio"].ctc_head is not None
    a = pipe.transcribe(audio="tests/data/speech/audio/test-00000.flac")
    assert isinstance(a, str)
    # asking for greedy decoding drops the saved rescoring (it needs beams); asking for both is still an error
    assert pipe.generation_for({"num_beams": 1}) == {"num_beams": 1, "max_new_tokens": 6}
    assert pipe.generation_for({})["ctc_weight"] == 0.3
    assert isinstance(pipe.transcribe(audio="tests/data/speech/audio/test-00000.flac", num_beams=1), str)
    with pytest.raises(ValueError, match="set num_beams > 1"):
        pipe.transcribe(audio="tests/data/speech/audio/test-00000.flac", num_beams=1, ctc_weight=0.3)
    with pytest.raises(SystemExit, match="has a CTC head already"):
        fit_ctc_head.main(["--model", str(out), "--out", str(tmp_path / "again"), "--train",
                           "tests/data/speech/train.jsonl"])


def test_the_augmenter_changes_clips_as_training_does_and_repeats_with_its_seed():
    sys.path.insert(0, str(ROOT / "scripts"))
    from mmlora.data.speech_augment import training_change as augmenter

    x = torch.sin(torch.arange(16000) * 0.05)  # 1 s at 16 kHz
    outs = []
    for seed in (7, 7, 8):
        transform, warp = augmenter(seed)
        outs.append(([transform(x) for _ in range(20)], warp(5)))
    for a, b in zip(outs[0][0], outs[1][0]):  # the same seed, the same copies and warps
        torch.testing.assert_close(a, b)
    assert outs[0][1] == outs[1][1] and outs[0][1] != outs[2][1]
    assert all(0.9 <= f <= 1.1 for f in outs[0][1])
    for y in outs[0][0]:
        # speed 0.9-1.1 (0.91-1.11 s of speech) plus 0.2-1.2 s of room tone at each end
        assert isinstance(y, torch.Tensor) and 16000 * (1 / 1.1 + 0.4) - 2 <= len(y) <= 16000 * (1 / 0.9 + 2.4) + 2
        assert float(y[:3200].abs().max()) < 0.05 * float(x.abs().max())  # its first 0.2 s: quiet room tone
    assert len({len(y) for y in outs[0][0]}) > 10  # lengths drawn anew for each copy


def test_fit_ctc_head_with_augmented_copies(tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "scripts"))
    import fit_ctc_head

    src = tmp_path / "model"
    _asr().save_pretrained(src, pipeline={"task": "asr", "instruction": "Transcribe the audio.", "modalities": ["audio"]})
    rc = fit_ctc_head.main(["--model", str(src), "--out", str(tmp_path / "aug"), "--train", "tests/data/speech/train.jsonl",
                            "--n-per-manifest", "4", "--epochs", "1", "--augment", "2"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["source_clips"] == 4 and report["clips"] == 12  # each clip and two changed copies
    with pytest.raises(SystemExit, match="--augment"):
        fit_ctc_head.main(["--model", str(src), "--out", str(tmp_path / "bad"), "--train",
                           "tests/data/speech/train.jsonl", "--augment", "-1"])


def test_a_sweep_of_weights_equals_one_search_per_weight():
    """generate(ctc_weight=[...]) searches once and returns, for each weight, what that weight alone returns; 0 is the
    plain beam search."""
    model = _asr(TEMPORAL_AUDIO)
    batch = _audio_batch(model)
    gen = {"max_new_tokens": 6, "num_beams": 4}
    weights = [0.0, 0.3, 1.0]
    want = [model.generate(batch, **gen)] + [model.generate(batch, ctc_weight=w, **gen) for w in weights[1:]]
    assert want[0] != want[2]  # the weights choose differently here, so the order of the answers is checked too
    assert model.generate(batch, ctc_weight=weights, **gen) == want
    with pytest.raises(ValueError, match=r"each weight of a sweep must be in \[0, 1\]"):
        model.generate(batch, ctc_weight=[0.1, 2.0], **gen)


def test_evaluate_writes_one_report_per_weight_of_a_sweep(tmp_path, capsys):
    from mmlora.cli import main

    model = _asr(TEMPORAL_AUDIO)
    model.save_pretrained(tmp_path / "m")
    common = ["evaluate", "--model", str(tmp_path / "m"), "--manifest", "tests/data/speech/test.jsonl",
              "--num-beams", "4", "--max-samples", "3", "--device", "cpu"]
    assert main(common + ["--ctc-weight", "0,1", "--out", str(tmp_path / "sweep.json")]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [line["ctc_weight"] for line in lines] == [0.0, 1.0]
    for w in ("0", "1"):
        assert main(common + ["--ctc-weight", w, "--out", str(tmp_path / f"one{w}.json")]) == 0
        one = json.loads((tmp_path / f"one{w}.json").read_text())
        swept = json.loads((tmp_path / f"sweep_ctc{w}.json").read_text())
        assert [u["hypothesis"] for u in swept["utterances"]] == [u["hypothesis"] for u in one["utterances"]]
        assert swept["decoding"]["ctc_weight"] == float(w) and swept["wer"] == one["wer"]
    from mmlora.pipelines import load_pipeline

    with pytest.raises(ValueError, match=r"transcribe takes one ctc_weight, got \[0.0, 1.0\]"):
        load_pipeline(tmp_path / "m").transcribe(audio="tests/data/speech/audio/test-00000.flac", num_beams=2,
                                                 ctc_weight=[0.0, 1.0])
