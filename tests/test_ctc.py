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
TEMPORAL = "model.ctc={modality: video, weight: 0.5, head: temporal, width: 16, kernel: 3, layers: 2}"
FEED = "model.ctc={modality: video, weight: 0.5, head: temporal, width: 16, kernel: 3, layers: 2, feed: true}"


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


@pytest.mark.parametrize("ctc", [CTC, TEMPORAL])
def test_the_model_adds_weight_times_ctc_and_the_head_trains_with_the_projector(ctc):
    from mmlora.ctc import TemporalHead, run_ctc_head
    from mmlora.data.collate import collate_samples
    from mmlora.tasks.speech import SpeechDataset, read_manifest

    plain, model = _vsr(), _vsr(ctc)
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
    assert isinstance(head, TemporalHead) == (ctc == TEMPORAL)
    if ctc == TEMPORAL:  # the temporal head sees each clip with its mask (the padding zeroed before each convolution)
        assert not feats.mask.all()
        logits = head(feats.x, feats.mask)
    else:
        logits = head(feats.x)
    torch.testing.assert_close(run_ctc_head(head, feats.x, feats.mask), logits)
    ctc = ctc_loss(logits, feats.mask, batch["answers"])
    assert float(out["metrics"]["ctc_loss"]) == pytest.approx(float(ctc.detach()), rel=1e-5)
    assert float(out["loss"].detach()) == pytest.approx(float(ce.detach()) + 0.5 * float(ctc.detach()), rel=1e-5)
    out["loss"].backward()
    for p in head.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0
    group = {g["name"]: g for g in model.param_groups()}["projectors"]
    assert all(any(p is q for q in group["params"]) for p in head.parameters())
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


def test_a_temporal_head_is_saved_and_loaded_with_its_settings(tmp_path):
    from mmlora.model import MultimodalLM

    model = _vsr(TEMPORAL)
    with torch.no_grad():
        model.projectors["video"].ctc_head.convs[1].weight.add_(1.0)
    model.save_pretrained(tmp_path / "t")
    again = MultimodalLM.from_pretrained(tmp_path / "t")
    assert (again.cfg.ctc.head, again.cfg.ctc.width, again.cfg.ctc.kernel) == ("temporal", 16, 3)
    torch.testing.assert_close(again.projectors["video"].ctc_head.state_dict(),
                               model.projectors["video"].ctc_head.state_dict())


def test_the_temporal_head_ignores_how_much_padding_a_batch_has_and_sees_neighbouring_frames():
    from mmlora.ctc import TemporalHead

    torch.manual_seed(0)
    head = TemporalHead(6, len(CTC_CHARS) + 1, width=8, kernel=3, layers=2).eval()
    x = torch.randn(1, 5, 6)
    padded = torch.cat([x, torch.randn(1, 4, 6) * 50], dim=1)  # garbage in the padding must not leak in
    m = torch.tensor([[True] * 5 + [False] * 4])
    with torch.no_grad():
        torch.testing.assert_close(head(padded, m)[:, :5], head(x, torch.ones(1, 5, dtype=torch.bool)))
        y = x.clone()
        y[0, 3] += 1.0  # a change at frame 3 reaches frame 2 (context), unlike a per-frame linear head
        assert not torch.allclose(head(y)[0, 2], head(x)[0, 2])


def _video_batch(model, n=3):
    from mmlora.data.collate import collate_samples
    from mmlora.tasks.speech import SpeechDataset, read_manifest

    ds = SpeechDataset(read_manifest("tests/data/speech/train.jsonl"), ("video",))
    return collate_samples([ds[i] for i in range(n)], model.prompts)


def _tokens(model, batch):
    with torch.no_grad():
        return model.project(model.encode_media(batch["media"]), {"video": 2})["video"]


@pytest.mark.parametrize("feed", [False, True])
def test_feed_gives_the_projector_and_the_llms_loss_the_heads_hidden_frames(feed):
    """model.ctc.feed: the LLM's tokens depend on the temporal head (inference runs it), the LLM's own loss trains
    it, and its width is added to the projector's input; without feed neither holds."""
    model = _vsr(FEED if feed else TEMPORAL)
    head, enc_dim = model.projectors["video"].ctc_head, model.encoders["video"].output_dim
    first = next(p for n, p in model.projectors["video"].named_parameters() if "ctc_head" not in n and p.dim() == 2)
    assert first.shape[1] == 2 * (enc_dim + 16 * feed)  # vsr_tiny's projector stacks 2 frames
    model.eval()
    batch = _video_batch(model)
    before = _tokens(model, batch)
    with torch.no_grad():
        head.convs[1].weight.add_(0.5)
    after = _tokens(model, batch)
    assert all(torch.equal(a, b) for a, b in zip(before, after)) != feed
    model.zero_grad()
    model(batch)["loss"].backward()  # eval: the LLM's cross-entropy only, no CTC term
    grads = {n: p.grad for n, p in head.named_parameters() if not n.startswith("out.")}  # the labels: CTC's only
    assert len(grads) == 6
    if feed:
        assert all(g is not None and g.abs().sum() > 0 for g in grads.values())
    else:
        assert all(g is None for g in grads.values())


def test_fed_tokens_ignore_how_much_padding_a_batch_has(tmp_path):
    """A clip's tokens are the same alone and beside longer clips (the head zeroes the padding before each
    convolution, the projector masks it), and after save / load."""
    from mmlora.model import MultimodalLM

    model = _vsr(FEED).eval()
    batch = _video_batch(model)
    feats = model.encode_media(batch["media"])["video"]
    lengths = feats.mask.sum(1).tolist()
    short = lengths.index(min(lengths))
    assert min(lengths) < max(lengths)
    alone = _tokens(model, {"media": {"video": [batch["media"]["video"][short]]}})[0]
    torch.testing.assert_close(_tokens(model, batch)[short], alone)
    model.save_pretrained(tmp_path / "fed")
    again = MultimodalLM.from_pretrained(tmp_path / "fed").eval()
    assert again.cfg.ctc.feed
    torch.testing.assert_close(_tokens(again, batch), _tokens(model, batch))


@pytest.mark.parametrize("ctc,message", [
    ("{modality: audio}", r"model.ctc.modality: 'audio' is not one of model.media \['video'\]"),
    ("{modality: video, weight: 0}", r"model.ctc.weight must be > 0"),
    ("{modality: video, blank: 3}", r"model.ctc"),
    ("{modality: video, head: lstm}", r"model.ctc.head must be one of \('linear', 'temporal'\), got 'lstm'"),
    ("{modality: video, head: temporal, kernel: 4}", r"kernel odd"),
    ("{modality: video, feed: true}", r"model.ctc.feed needs model.ctc.head: temporal"),
])
def test_bad_settings_name_the_field(ctc, message):
    with pytest.raises(ValueError, match=message):
        _vsr(f"model.ctc={ctc}")


@pytest.mark.parametrize("ctc", [CTC, FEED])
def test_a_tiny_training_logs_the_ctc_loss(tmp_path, ctc):
    out = tmp_path / "run"
    assert main(["train", "recipes/vsr_tiny.yaml", ctc, f"train.output_dir={out}", "train.max_steps=2",
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


def test_init_from_a_model_whose_head_reads_another_modality(tmp_path, caplog):
    """The ASR release carries a CTC head on audio (session 36): an AVSR run with its own head on video starts from it
    (the audio head left out, the video head fresh), and a run without model.ctc starts from it through
    ``train.init_map`` too (that loader once refused the saved head as "no such trainable weight here")."""
    from mmlora.tasks.cli import build_model, load_run_config

    def avsr(*overrides):
        _, cfg = load_run_config("recipes/avsr_tiny.yaml", list(overrides))
        return build_model(cfg)

    src = avsr("model.ctc={modality: audio, weight: 0.5}")
    src.save_pretrained(tmp_path / "audio_head")
    with caplog.at_level("INFO", logger="mmlora.model"):
        video = avsr(CTC, f"train.init_from={tmp_path / 'audio_head'}")
    assert hasattr(video.projectors["video"], "ctc_head") and not hasattr(video.projectors["audio"], "ctc_head")
    assert "CTC head left out" in caplog.text and "starts fresh" in caplog.text
    torch.testing.assert_close(video.projectors["audio"].state_dict(),
                               {k: v for k, v in src.projectors["audio"].state_dict().items() if "ctc" not in k})
    caplog.clear()
    with caplog.at_level("INFO", logger="mmlora.model"):
        renamed = avsr(f"train.init_from={tmp_path / 'audio_head'}",
                       'train.init_map={"adapters.default.": "adapters.default."}')
    assert "CTC head left out" in caplog.text
    torch.testing.assert_close(renamed.projectors["audio"].state_dict(),
                               {k: v for k, v in src.projectors["audio"].state_dict().items() if "ctc" not in k})
    # the audio projector alone (train.init_projectors, as an AVSR run takes the ASR release's): the head stays out
    caplog.clear()
    with caplog.at_level("INFO", logger="mmlora.model"):
        proj = avsr(CTC, f"train.init_projectors={{audio: {tmp_path / 'audio_head'}}}")
    assert "CTC head left out" in caplog.text and "no CTC head saved for" not in caplog.text  # video's head is not its business
    torch.testing.assert_close(proj.projectors["audio"].state_dict(),
                               {k: v for k, v in src.projectors["audio"].state_dict().items() if "ctc" not in k})


def _saved_fed_lip_reader(tmp_path):
    model = _vsr(FEED)
    with torch.no_grad():  # trained-looking weights, so that a fresh head or projector could not pass for them
        for p in model.projectors["video"].parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(tmp_path / "lips")
    return model, tmp_path / "lips"


@pytest.mark.parametrize("start", ["train.init_from={}", "train.init_projectors={{video: {}}}"])
def test_a_run_from_a_fed_projector_takes_its_ctc_settings(tmp_path, start):
    """AVSR from a lip reader trained with model.ctc.feed (GPU run 31's): its video projector reads the head's hidden
    frames, so the run adopts the folder's model.ctc and both the projector and the head load; without the adoption
    the projector's first layer does not fit (the encoder's width alone)."""
    from mmlora.tasks.cli import build_model, load_run_config

    lips, folder = _saved_fed_lip_reader(tmp_path)
    _, cfg = load_run_config("recipes/avsr_tiny.yaml", [start.format(folder)])
    assert not cfg.model.ctc.modality  # the recipe has no CTC
    model = build_model(cfg)
    assert model.cfg.ctc == lips.cfg.ctc
    want = lips.projectors["video"].state_dict()
    got = model.projectors["video"].state_dict()
    assert sorted(got) == sorted(want) and any("ctc_head" in k for k in got)
    for k in want:
        torch.testing.assert_close(got[k], want[k])


def test_a_run_from_a_fed_projector_with_another_head_is_a_clear_error(tmp_path):
    from mmlora.tasks.cli import build_model, load_run_config

    _, folder = _saved_fed_lip_reader(tmp_path)
    other = FEED.replace("width: 16", "width: 8")
    _, cfg = load_run_config("recipes/avsr_tiny.yaml", [f"train.init_from={folder}", other])
    with pytest.raises(ValueError, match=r"lips: its video projector reads its CTC head's hidden frames .*'width': 16"):
        build_model(cfg)
