"""scripts/judge_frame_change.py: the relative change between two views, each clip's own frames only."""
from __future__ import annotations

import torch

from conftest import load_script


def test_relative_change_is_the_norm_of_the_difference_over_all_clips():
    mod = load_script("judge_frame_change")
    g = torch.Generator().manual_seed(0)
    b = [torch.randn(t, 4, generator=g) for t in (3, 7)]
    a = [x + 0.1 * torch.randn(x.shape, generator=g) for x in b]
    want = torch.linalg.norm(torch.cat(a) - torch.cat(b)) / torch.linalg.norm(torch.cat(b))
    assert abs(mod.relative_change(a, b) - float(want)) < 1e-6
    assert mod.relative_change(b, b) == 0.0


def test_clip_frames_leave_out_the_padded_runs_frames():
    mod = load_script("judge_frame_change")

    class Judge:
        def frames_many(self, waves, encoder):
            return [torch.arange(1500.0)[:, None] * encoder for _ in waves]

    got = mod.clip_frames(Judge(), [torch.zeros(16_000), torch.zeros(3_300)], 2.0)
    assert [f.shape[0] for f in got] == [50, 10]  # 20 ms a frame
    assert torch.equal(got[1][:, 0], torch.arange(10.0) * 2)


def test_a_folder_without_a_judge_encoder_is_an_error_naming_it(monkeypatch, capsys):
    import mmlora

    mod = load_script("judge_frame_change")
    model = type("M", (), {"whisper_encoder_lora": None})()
    monkeypatch.setattr(mmlora, "load_pipeline", lambda path, device="cpu": type("P", (), {"model": model})())
    assert mod.main(["--model", "some/folder", "--manifest", "m.jsonl"]) == 1
    assert "some/folder has no judge encoder" in capsys.readouterr().err


def test_a_manifest_may_name_how_many_of_its_clips_to_read():
    mod = load_script("judge_frame_change")
    assert mod.manifest_spec("data/x/test.jsonl:24") == ("data/x/test.jsonl", 24)
    assert mod.manifest_spec("data/x/test.jsonl") == ("data/x/test.jsonl", None)
    assert mod.manifest_spec("c:/x/test.jsonl") == ("c:/x/test.jsonl", None)
