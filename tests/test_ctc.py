"""model.ctc: the auxiliary CTC objective on a modality's encoder features, against the transcript's characters.
The loss against a brute-force sum over every frame path (no F.ctc_loss), its place in the model's loss, the
gradient it sends, save / load / init_from with and without the head, and the clear errors (tiny models, CPU)."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from mmlora.cli import main
from mmlora.ctc import CTC_CHARS, ctc_loss, ctc_targets

CTC = "model.ctc={modality: video, weight: 0.5}"


def _vsr(*overrides: str):
    from mmlora.tasks.cli import build_model, load_run_config

    _, cfg = load_run_config("recipes/vsr_tiny.yaml", list(overrides))
    return build_model(cfg)


def brute_force_nll(logp: torch.Tensor, target: list[int]) -> float:
    """-log of the summed probability of every frame path that collapses (repeats merged, blanks dropped) to
    ``target``: the definition of CTC, by enumeration."""
    T, C = logp.shape
    total = 0.0
    for path in itertools.product(range(C), repeat=T):
        collapsed = [c for i, c in enumerate(path) if c != 0 and (i == 0 or c != path[i - 1])]
        if collapsed == target:
            total += math.exp(sum(float(logp[t, c]) for t, c in enumerate(path)))
    return -math.log(total)


def test_targets_are_the_normalized_characters():
    labels, lengths = ctc_targets(["Hi, Bo's 2!", ""])
    assert lengths.tolist() == [len("hi bo's two"), 0]
    assert "".join(CTC_CHARS[i - 1] for i in labels.tolist()) == "hi bo's two"
    assert 0 not in labels.tolist()  # 0 is the blank


def test_loss_is_the_per_character_path_sum_averaged_over_the_batch():
    # a 4-letter alphabet stand-in would not test the real head size: use the real one, with few frames
    g = torch.Generator().manual_seed(0)
    C = len(CTC_CHARS) + 1
    logits = torch.randn(2, 3, C, generator=g)
    mask = torch.tensor([[True, True, True], [True, True, False]])  # the second sample has 2 frames
    texts = ["ab", "A"]
    got = ctc_loss(logits, mask, texts)
    logp = torch.log_softmax(logits.double(), -1)
    a, b = CTC_CHARS.index("a") + 1, CTC_CHARS.index("b") + 1
    want = (brute_force_nll(logp[0], [a, b]) / 2 + brute_force_nll(logp[1, :2], [a]) / 1) / 2
    assert float(got) == pytest.approx(want, rel=1e-5)
    # a transcript longer than its frames counts 0 (not inf); an empty one is its all-blank path
    too_long = ctc_loss(logits[:1], mask[:1], ["abcd"])
    assert float(too_long) == 0.0
    empty = ctc_loss(logits[:1], mask[:1], [""])
    assert float(empty) == pytest.approx(-float(logp[0, :, 0].sum()), rel=1e-5)


def test_the_model_adds_weight_times_ctc_and_the_head_trains_with_the_projector():
    from mmlora.data.collate import collate_samples
    from mmlora.tasks.speech import SpeechDataset, read_manifest

    plain, model = _vsr(), _vsr(CTC)
    # the head is drawn last: every other fresh weight is what it is without model.ctc
    for (n, p), (n0, p0) in zip(
            ((n, p) for n, p in model.named_parameters() if "ctc_head" not in n), plain.named_parameters()):
        assert n == n0 and torch.equal(p, p0), n
    ds = SpeechDataset(read_manifest("tests/data/speech/train.jsonl"), ("video",))
    batch = collate_samples([ds[i] for i in range(3)], model.prompts)
    assert batch["answers"] == [ds.records[i].text for i in range(3)]
    model.train(), plain.train()
    torch.manual_seed(0)
    out = model(batch)
    torch.manual_seed(0)
    ce = plain(batch)["loss"]
    feats = model.encode_media(batch["media"])["video"]
    head = model.projectors["video"].ctc_head
    ctc = ctc_loss(head(feats.x), feats.mask, batch["answers"])
    assert float(out["metrics"]["ctc_loss"]) == pytest.approx(float(ctc.detach()), rel=1e-5)
    assert float(out["loss"].detach()) == pytest.approx(float(ce.detach()) + 0.5 * float(ctc.detach()), rel=1e-5)
    out["loss"].backward()
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0
    group = {g["name"]: g for g in model.param_groups()}["projectors"]
    assert any(p is head.weight for p in group["params"])
    model.eval()
    assert "ctc_loss" not in model(batch)["metrics"]  # validation: the LLM's loss only


def test_save_load_and_init_from_with_and_without_a_head(tmp_path, caplog):
    from mmlora.model import MultimodalLM

    model = _vsr(CTC)
    with torch.no_grad():
        model.projectors["video"].ctc_head.weight.add_(1.0)
    model.save_pretrained(tmp_path / "ctc")
    again = MultimodalLM.from_pretrained(tmp_path / "ctc")
    assert again.cfg.ctc.modality == "video"
    assert torch.equal(again.projectors["video"].ctc_head.weight, model.projectors["video"].ctc_head.weight)
    with caplog.at_level("INFO", logger="mmlora.model"):
        plain = _vsr(f"train.init_from={tmp_path / 'ctc'}")  # the recipe without model.ctc: the head is left out
    assert not hasattr(plain.projectors["video"], "ctc_head") and "CTC head left out" in caplog.text
    torch.testing.assert_close(plain.projectors["video"].state_dict(),
                               {k: v for k, v in model.projectors["video"].state_dict().items() if "ctc" not in k})
    _vsr().save_pretrained(tmp_path / "plain")
    caplog.clear()
    with caplog.at_level("INFO", logger="mmlora.model"):
        fresh = _vsr(CTC, f"train.init_from={tmp_path / 'plain'}")  # a lip reader without CTC: a fresh head
    assert hasattr(fresh.projectors["video"], "ctc_head") and "starts fresh" in caplog.text


def test_bad_settings_name_the_field():
    with pytest.raises(ValueError, match=r"model.ctc.modality: 'audio' is not one of model.media \['video'\]"):
        _vsr("model.ctc={modality: audio}")
    with pytest.raises(ValueError, match=r"model.ctc.weight must be > 0"):
        _vsr("model.ctc={modality: video, weight: 0}")
    with pytest.raises(ValueError, match=r"model.ctc"):
        _vsr("model.ctc={modality: video, blank: 3}")


def test_a_tiny_training_logs_the_ctc_loss(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "recipes/vsr_tiny.yaml", CTC, f"train.output_dir={out}", "train.max_steps=2",
                 "train.save_every=0", "train.log_every=1"]) == 0
    metrics = (out / "metrics.jsonl").read_text()
    assert "ctc_loss" in metrics


def test_a_batch_without_answers_is_a_clear_error():
    from mmlora.data.collate import collate_samples
    from mmlora.tasks.speech import SpeechDataset, read_manifest

    model = _vsr(CTC)
    model.train()
    ds = SpeechDataset(read_manifest("tests/data/speech/train.jsonl"), ("video",), with_answer=False)
    batch = collate_samples([ds[i] for i in range(2)], model.prompts, with_answer=False)
    with pytest.raises(ValueError, match=r"model.ctc needs one video item and one answer per sample; this batch has "
                                         r"2 video item\(s\) and 0 answer\(s\) for 2 sample\(s\)"):
        model.ctc_loss(model.encode_media(batch["media"]), batch)
