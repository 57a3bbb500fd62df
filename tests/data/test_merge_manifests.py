"""scripts/merge_manifests.py: several corpora's training splits in one manifest, paths relative to the common
folder, repeats with distinct ids, lip videos only on request, held-out voices left out, bad input named."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import load_script
from mmlora.tasks.speech import read_manifest


def _corpus(root: Path, sub: str, voices: list[str], video: bool = True) -> None:
    (root / sub).mkdir(parents=True)
    lines = [json.dumps({"id": f"train-{i:05d}", "audio": f"audio/train-{i:05d}.ogg",
                         "video": f"video/train-{i:05d}.mp4" if video else None, "text": f"{sub} clip {i}", "voice": v})
             for i, v in enumerate(voices)]
    (root / sub / "train.jsonl").write_text("\n".join(lines) + "\n")


def test_merge_paths_repeats_video_and_dropped_voices(tmp_path, capsys):
    mm = load_script("merge_manifests")
    _corpus(tmp_path, "a", ["v1", "held", "v2"])
    _corpus(tmp_path, "b", ["v3", "v4"], video=False)
    assert mm.main([str(tmp_path), "--drop-voice", "held", "m.jsonl", "a", "bx2", "--video"]) == 0
    assert f"{tmp_path / 'm.jsonl'}: 6 lines" in capsys.readouterr().out
    rows = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a-train-00000", "a-train-00002", "b-train-00000-0", "b-train-00000-1",
                                       "b-train-00001-0", "b-train-00001-1"]
    assert rows[0]["audio"] == "a/audio/train-00000.ogg" and rows[0]["video"] == "a/video/train-00000.mp4"
    assert rows[2]["audio"] == "b/audio/train-00000.ogg" and rows[2]["video"] is None
    assert "held" not in {r["voice"] for r in rows}
    assert not list(tmp_path.glob(".*.tmp"))
    # the manifest reader resolves the merged paths under the common folder
    parsed = read_manifest(tmp_path / "m.jsonl")
    assert Path(parsed[0].audio) == tmp_path / "a/audio/train-00000.ogg" and parsed[0].video is not None

    # without --video every video is dropped; parts keep their order
    assert mm.main([str(tmp_path), "n.jsonl", "b", "a"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "n.jsonl").read_text().splitlines()]
    assert [r["id"][0] for r in rows] == ["b", "b", "a", "a", "a"] and all(r["video"] is None for r in rows)


def test_bad_input_is_named_and_nothing_is_written(tmp_path, capsys):
    mm = load_script("merge_manifests")
    _corpus(tmp_path, "a", ["v1"])
    assert mm.main([str(tmp_path), "m.jsonl", "a", "missing"]) == 2
    assert "missing/train.jsonl: no such manifest" in capsys.readouterr().err
    assert not (tmp_path / "m.jsonl").exists()
    for bad in ('{"id": "x"}', '{"audio": "a.ogg"}', "not json"):
        (tmp_path / "a" / "train.jsonl").write_text('{"id": "ok", "audio": "ok.ogg"}\n' + bad + "\n")
        assert mm.main([str(tmp_path), "m.jsonl", "a"]) == 2
        assert "a/train.jsonl:2: not a manifest line with 'audio' and 'id' fields" in capsys.readouterr().err
        assert not (tmp_path / "m.jsonl").exists() and not list(tmp_path.glob(".*.tmp"))
    with pytest.raises(ValueError, match="at least 1"):
        mm.parse_part("ax0")
    assert mm.parse_part("wx") == ("wx", 1) and mm.parse_part("n15x2") == ("n15", 2) and mm.parse_part("x3") == ("x3", 1)
