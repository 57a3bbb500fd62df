"""scripts/learn_picker.py: a linear picker fitted on some candidates files picks the clips of another; checked on
synthetic candidates whose best candidate a known mix of scores and length finds, and the weighted sum does not."""
import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import learn_picker  # noqa: E402

from mmlora.ctc import candidate_rows  # noqa: E402


def _doc(seed: int, n: int = 30, k: int = 5) -> dict:
    """Clips whose reference is the candidate with the best ``second - 2 * words`` (the decoding's weights, which
    ignore both, mostly pick another one); every candidate a distinct text of 1 to 5 words."""
    g = torch.Generator().manual_seed(seed)
    utts = []
    for i in range(n):
        texts = [" ".join(("alpha", "bravo", "charlie", "delta", "echo")[:m]) for m in range(1, k + 1)]
        llm, ctc, judge, second = (torch.randn(k, generator=g) * 3 for _ in range(4))
        words = torch.arange(1, k + 1, dtype=torch.float32)
        row = candidate_rows(texts, llm, 1, ctc, judge[None], second)[0]
        utts.append({"id": f"u{i}", "reference": texts[int((second - 2 * words).argmax())], "pieces": [row]})
    return {"decoding": {"ctc_weight": 0.1, "whisper_weight": 0.5, "whisper_both": False},
            "utterances": json.loads(json.dumps(utts))}


def test_the_fitted_picker_finds_what_the_weighted_sum_misses_on_files_it_was_not_fitted_on(tmp_path, capsys):
    files = []
    for s in (1, 2, 3):
        files.append(tmp_path / f"f{s}.json")
        files[-1].write_text(json.dumps(_doc(s)))
    assert learn_picker.main([str(f) for f in files[:2]] + ["--check", str(files[2])]) == 0
    out = json.loads(capsys.readouterr().out)
    check = out["check"][str(files[2])]
    assert check["own"] > 20 and check["picker"] < check["own"] / 4  # fitted on f1 and f2 only
    assert out["picker"] < out["own"] / 4  # each fold picked by the picker fitted on the other
    w = out["weights"]
    assert w["second"] > 0 and w["words"] < 0 and abs(w["words"] / w["second"] + 2) < 0.6  # the mix it was made by


def test_features_and_dropped_ones(tmp_path, capsys):
    row = _doc(5, n=1)["utterances"][0]["pieces"][0]
    f = learn_picker.features(row)
    assert f.shape == (5, len(learn_picker.FEATURES))
    assert f[:, learn_picker.FEATURES.index("words")].tolist() == [1, 2, 3, 4, 5]
    assert f[:, learn_picker.FEATURES.index("whisper")].abs().sum() == 0  # one judge: Whisper's own is absent
    assert f[:, learn_picker.FEATURES.index("vote")].abs().sum() == 0  # every text once
    torch.testing.assert_close(f[:, 0], torch.tensor(row["llm"], dtype=torch.float64))
    p = tmp_path / "f.json"
    p.write_text(json.dumps(_doc(6)))
    with pytest.raises(SystemExit, match="--drop: features are"):
        learn_picker.main([str(p), str(p), "--drop", "nope"])
    assert learn_picker.main([str(p), str(p), "--drop", "second,words"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["weights"]["second"] == 0 and out["weights"]["words"] == 0 and "second" not in out["features"]
