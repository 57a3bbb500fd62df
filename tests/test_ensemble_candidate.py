"""scripts/ensemble_candidate.py: a model folder with other folders' judges as second judges and their weight in its
generation settings, nothing else changed; bad input named."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import ensemble_candidate  # noqa: E402


def tree(d: Path) -> dict[str, bytes]:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def _judge_folder(d: Path, value: float, encoder: bool) -> Path:
    d.mkdir(parents=True)
    save_file({"w": torch.full((2,), value)}, str(d / "whisper_decoder.safetensors"))
    if encoder:
        (d / "whisper_encoder_adapters").mkdir()
        (d / "whisper_encoder_adapters" / "adapters.json").write_text(json.dumps({"v": value}))
        (d / "whisper_encoder_adapters" / "adapters.safetensors").write_bytes(b"enc %g" % value)
    return d


def test_adds_each_judge_and_the_weight_and_keeps_the_rest(tmp_path):
    base = _judge_folder(tmp_path / "release", 0.0, True)
    (base / "config.json").write_text(json.dumps({"pipeline": {"generation": {"whisper_weight": 0.9}}}))
    s1, s2 = _judge_folder(tmp_path / "S1", 1.0, True), _judge_folder(tmp_path / "S2", 2.0, False)
    out = tmp_path / "ENS"
    assert ensemble_candidate.main([str(out), f"s1={s1}", f"s2={s2}", "--weight", "0.1", "--base", str(base)]) == 0
    got, before = tree(out), tree(base)
    assert {k: v for k, v in got.items() if not k.startswith("second_judges/") and k != "config.json"} == \
        {k: v for k, v in before.items() if k != "config.json"}
    assert json.loads(got["config.json"])["pipeline"]["generation"] == {"whisper_weight": 0.9, "second_judge_weight": 0.1}
    assert {k for k in got if k.startswith("second_judges/")} == {
        "second_judges/s1/whisper_decoder.safetensors", "second_judges/s1/whisper_encoder_adapters/adapters.json",
        "second_judges/s1/whisper_encoder_adapters/adapters.safetensors", "second_judges/s2/whisper_decoder.safetensors"}
    assert got["second_judges/s2/whisper_decoder.safetensors"] == (s2 / "whisper_decoder.safetensors").read_bytes()
    assert got["second_judges/s1/whisper_encoder_adapters/adapters.safetensors"] == b"enc 1"
    assert not (tmp_path / "ENS.tmp").exists()
    # again with one judge and --force: the old second judges give way
    assert ensemble_candidate.main([str(out), f"s2={s2}", "--weight", "0.2", "--base", str(out)]) == 2
    assert ensemble_candidate.main([str(out), f"s2={s2}", "--weight", "0.2", "--base", str(base), "--force"]) == 0
    assert sorted(p.name for p in (out / "second_judges").iterdir()) == ["s2"]


def test_bad_input_is_named(tmp_path, capsys):
    base = tmp_path / "release"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"pipeline": {"generation": {"num_beams": 4}}}))
    s1 = _judge_folder(tmp_path / "S1", 1.0, False)
    args = ["--base", str(base)]
    cases = [([f"s1={tmp_path / 'nope'}", "--weight", "0.1"], "nope/whisper_decoder.safetensors"),
             ([f"s1={s1}", "--weight", "1"], r"must be in \(0, 1\)"),
             ([f"s1={s1}", f"s1={s1}", "--weight", "0.1"], "each second judge's NAME once"),
             ([f"s1={s1}", "--weight", "0.1"], "no whisper_weight")]
    for extra, message in cases:
        assert ensemble_candidate.main([str(tmp_path / "E"), *extra, *args]) == 2
        assert message.replace("\\", "") in capsys.readouterr().err or pytest.fail(message)
    assert not (tmp_path / "E").exists() and not (tmp_path / "E.tmp").exists()
    with pytest.raises(SystemExit):
        ensemble_candidate.main([str(tmp_path / "E"), "s1", "--weight", "0.1"])  # not NAME=DIR


def test_other_decoding_settings_are_saved_with_it_and_unknown_ones_refused(tmp_path, capsys):
    base = _judge_folder(tmp_path / "release", 0.0, False)
    (base / "config.json").write_text(json.dumps({"pipeline": {"generation": {
        "whisper_weight": 0.9, "ctc_weight": 0.07, "whisper_both": True, "whisper_proposal": 4}}}))
    s1 = _judge_folder(tmp_path / "S1", 1.0, False)
    out = tmp_path / "ENSW8"
    assert ensemble_candidate.main([str(out), f"s1={s1}", "--weight", "0.45", "--base", str(base), "--set",
                                    "ctc_weight=0", "--set", "whisper_weight=0.8", "--set", "whisper_both=0.3",
                                    "--set", "whisper_proposal=8"]) == 0
    assert json.loads((out / "config.json").read_text())["pipeline"]["generation"] == {
        "whisper_weight": 0.8, "ctc_weight": 0, "whisper_both": 0.3, "whisper_proposal": 8,
        "second_judge_weight": 0.45}
    assert "whisper_proposal=8" in capsys.readouterr().out
    assert ensemble_candidate.main([str(tmp_path / "X"), f"s1={s1}", "--weight", "0.4", "--base", str(base),
                                    "--set", "second_judge_weight=0.9"]) == 2
    assert "--set second_judge_weight: not a decoding setting here" in capsys.readouterr().err
    for bad in ("ctc_weight", "ctc_weight=high", "ctc_weight=[1]"):
        with pytest.raises(SystemExit):
            ensemble_candidate.main([str(tmp_path / "X"), f"s1={s1}", "--weight", "0.4", "--set", bad])
    assert not (tmp_path / "X").exists()


def test_a_confidence_gate_is_saved_as_a_json_object_and_checked(tmp_path, capsys):
    base = _judge_folder(tmp_path / "release", 0.0, False)
    (base / "config.json").write_text(json.dumps({"pipeline": {"generation": {"whisper_weight": 0.9}}}))
    s1 = _judge_folder(tmp_path / "S1", 1.0, False)
    gate = {"judge": "trained", "below": -0.8, "whisper_weight": 1.0, "whisper_both": 0.7}
    assert ensemble_candidate.main([str(tmp_path / "G"), f"s1={s1}", "--weight", "0.45", "--base", str(base),
                                    "--set", "whisper_both=0.3", "--set", f"confidence_gate={json.dumps(gate)}"]) == 0
    gen = json.loads((tmp_path / "G" / "config.json").read_text())["pipeline"]["generation"]
    assert gen["confidence_gate"] == gate and gen["whisper_both"] == 0.3
    for bad, message in (("confidence_gate=0.3", "confidence_gate: a JSON object"),
                         ('whisper_weight={"below": 1}', "whisper_weight: a number"),
                         ('confidence_gate={"below": 1, "weight": 2}', "unknown weight"),
                         ('confidence_gate={"whisper_weight": 0.9}', "one of 'above' / 'below'")):
        assert ensemble_candidate.main([str(tmp_path / "X"), f"s1={s1}", "--weight", "0.4", "--base", str(base),
                                        "--set", bad]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "X").exists()
