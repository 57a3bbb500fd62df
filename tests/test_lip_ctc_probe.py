"""scripts/lip_ctc_probe.py: a linear CTC reader on frozen lip features (the probe for model.ctc). Greedy CTC
decoding by hand, and the whole probe on the committed clips with a tiny random lip reader (CPU, seconds)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import lip_ctc_probe as probe  # noqa: E402

from mmlora.ctc import CTC_CHARS  # noqa: E402


def _one_hot(labels: list[int]) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(labels), len(CTC_CHARS) + 1).float()


def test_greedy_decoding_merges_repeats_drops_blanks_and_stops_at_the_length():
    a, b, sp = CTC_CHARS.index("a") + 1, CTC_CHARS.index("b") + 1, CTC_CHARS.index(" ") + 1
    logits = _one_hot([a, a, 0, a, b, b, sp, 0, b, a])
    assert probe.greedy_decode(logits, 10) == "aab ba"  # a a _ a -> "aa": a blank separates a repeat
    assert probe.greedy_decode(logits, 5) == "aab"


def test_the_probe_fits_a_head_and_scores_both_sets(tmp_path, capsys):
    from mmlora.tasks.cli import build_model, load_run_config

    _, cfg = load_run_config(str(ROOT / "recipes/vsr_tiny.yaml"), ["model.media.video.encoder_lora={rank: 2, alpha: 4}"])
    build_model(cfg).save_pretrained(tmp_path / "m")
    manifest = str(ROOT / "tests/data/speech/train.jsonl")
    out = tmp_path / "r.json"
    assert probe.main(["--model", str(tmp_path / "m"), "--train", manifest, "--test", manifest, "--n-train", "4",
                       "--n-test", "2", "--epochs", "2", "--out", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert rep == json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rep["train_clips"] == 4 and rep["test_clips"] == 2 and rep["frames_train"] > 0
    for part in ("train", "test"):
        assert 0 <= rep[part]["cer"] and rep[part]["n"] == rep[f"{part}_clips"]


def test_the_standardized_head_gives_the_logits_of_a_head_fitted_on_standardized_features():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 7, 5, generator=g) * 4 + 2
    m = torch.ones(3, 7, dtype=torch.bool)
    m[2, 5:] = False
    head = probe.fit_head(x, m, ["ab", "a", "b"], epochs=3, lr=1e-2, batch=2)
    frames = x[m]
    mu, sd = frames.mean(0), frames.std(0).clamp_min(1e-3)
    # fit by hand on standardized features: the same seed and steps give the head the probe wraps
    g2 = torch.Generator().manual_seed(0)
    ref = torch.nn.Linear(5, len(CTC_CHARS) + 1)
    torch.nn.init.zeros_(ref.weight)
    torch.nn.init.zeros_(ref.bias)
    opt = torch.optim.Adam(ref.parameters(), lr=1e-2)
    from mmlora.ctc import ctc_loss

    z = (x - mu) / sd
    for _ in range(3):
        for idx in torch.randperm(3, generator=g2).split(2):
            loss = ctc_loss(ref(z[idx]), m[idx], [["ab", "a", "b"][i] for i in idx.tolist()])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        torch.testing.assert_close(head(x), ref(z), rtol=1e-4, atol=1e-4)
        assert ref.weight.abs().sum() > 0  # it trained: the comparison can fail


def test_own_head_scores_the_head_the_model_saved_and_fits_nothing(tmp_path, capsys, monkeypatch):
    from mmlora.tasks.cli import build_model, load_run_config

    _, cfg = load_run_config(str(ROOT / "recipes/vsr_tiny.yaml"), ["model.ctc={modality: video, weight: 0.3}"])
    model = build_model(cfg)
    with torch.no_grad():  # a head that is not the fresh init: what the probe scores must be this one
        model.projectors["video"].ctc_head.weight.normal_(0, 2, generator=torch.Generator().manual_seed(3))
    model.save_pretrained(tmp_path / "m")
    head = probe.own_head(str(tmp_path / "m"))
    torch.testing.assert_close(head.weight, model.projectors["video"].ctc_head.weight.float())
    torch.testing.assert_close(head.bias, model.projectors["video"].ctc_head.bias.float())

    def no_fit(*a, **k):
        raise AssertionError("--own-head must not fit a head")

    monkeypatch.setattr(probe, "fit_head", no_fit)
    manifest = str(ROOT / "tests/data/speech/train.jsonl")
    assert probe.main(["--model", str(tmp_path / "m"), "--own-head", "--train", manifest, "--test", manifest,
                       "--n-train", "2", "--n-test", "2"]) == 0
    rep = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rep["head"] == "the model's own"
    # the reference: the saved head applied to the model's own encoder features, decoded and scored directly
    enc = probe.load_encoder(str(tmp_path / "m"))
    feats, texts = probe.encode_manifest(enc, manifest, 2)
    x, m = probe.pad(feats)
    assert rep["test"] == probe.score(head, x, m, texts)


def test_own_head_builds_a_temporal_head_as_the_model_saved_it(tmp_path):
    from mmlora.tasks.cli import build_model, load_run_config

    _, cfg = load_run_config(str(ROOT / "recipes/vsr_tiny.yaml"),
                             ["model.ctc={modality: video, head: temporal, width: 12, kernel: 3, layers: 1}"])
    model = build_model(cfg)
    model.save_pretrained(tmp_path / "m")
    head = probe.own_head(str(tmp_path / "m"))
    from mmlora.ctc import TemporalHead

    assert isinstance(head, TemporalHead) and len(head.convs) == 1 and head.convs[0].kernel_size == (3,)
    torch.testing.assert_close(head.state_dict(), {k: v.float() for k, v in
                                                   model.projectors["video"].ctc_head.state_dict().items()})


def test_own_head_without_a_ctc_head_is_a_clear_error(tmp_path):
    from mmlora.tasks.cli import build_model, load_run_config

    _, cfg = load_run_config(str(ROOT / "recipes/vsr_tiny.yaml"), [])
    build_model(cfg).save_pretrained(tmp_path / "m")
    import pytest

    with pytest.raises(SystemExit, match="no video.ctc_head"):
        probe.own_head(str(tmp_path / "m"))
    with pytest.raises(SystemExit):  # argparse: --own-head needs --model
        probe.main(["--own-head", "--train", "x", "--test", "y"])


def test_the_inputs_choice_changes_what_the_head_sees():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 3, generator=g) * 3 + 5
    m = torch.ones(2, 4, dtype=torch.bool)
    lin = torch.nn.Linear(3, len(CTC_CHARS) + 1)
    mu, sd = torch.full((3,), 5.0), torch.full((3,), 3.0)
    with torch.no_grad():
        torch.testing.assert_close(probe.ProbeHead(lin, "std", mu, sd)(x, m), lin((x - 5) / 3))
        torch.testing.assert_close(probe.ProbeHead(lin, "raw", mu, sd)(x, m), lin(x))
        ln = torch.nn.functional.layer_norm(x, (3,))
        torch.testing.assert_close(probe.ProbeHead(lin, "layernorm", mu, sd)(x, m), lin(ln))


def test_a_temporal_probe_from_the_feature_cache_encodes_nothing_again(tmp_path, capsys, monkeypatch):
    from mmlora.tasks.cli import build_model, load_run_config

    _, cfg = load_run_config(str(ROOT / "recipes/vsr_tiny.yaml"), [])
    build_model(cfg).save_pretrained(tmp_path / "m")
    manifest = str(ROOT / "tests/data/speech/train.jsonl")
    cache = tmp_path / "f.pt"
    args = ["--model", str(tmp_path / "m"), "--train", manifest, "--test", manifest, "--n-train", "3",
            "--n-test", "2", "--epochs", "2", "--cache", str(cache)]
    assert probe.main(args) == 0 and cache.is_file()
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    def no_encoding(*a, **k):
        raise AssertionError("the cache holds these features")

    monkeypatch.setattr(probe, "load_encoder", no_encoding)
    assert probe.main(args) == 0  # the same linear probe from the cache: the same report
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["train"] == first["train"] and again["test"] == first["test"]
    assert probe.main(args + ["--head", "temporal", "--clip", "1"]) == 0
    rep = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rep["head"] == "fitted temporal, inputs std" and rep["test"]["ctc_per_char"] > 0
    # another clip count is another set of features: encoded again (here: refused by the stub)
    import pytest

    with pytest.raises(AssertionError, match="cache holds"):
        probe.main([a if a != "2" else "1" for a in args])
