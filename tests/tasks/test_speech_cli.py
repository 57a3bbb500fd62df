"""The speech tasks end to end on CPU with tiny random models: train -> evaluate -> transcribe."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mmlora.cli import main
from mmlora.config import ConfigError

RECIPES = sorted(Path(__file__).resolve().parents[2].joinpath("recipes").glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.name for r in RECIPES])
def test_every_shipped_recipe_parses(recipe):
    from mmlora.tasks.cli import load_run_config

    spec, cfg = load_run_config(str(recipe), [])
    assert cfg.task == spec.name
    assert set(cfg.model.media) == set(spec.modalities)


def test_recipe_errors_name_the_field(tmp_path):
    from mmlora.tasks.cli import load_run_config

    with pytest.raises(ConfigError, match="lrr"):
        load_run_config("recipes/asr_tiny.yaml", ["train.lrr=1"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: nope\n")
    with pytest.raises(KeyError, match="unknown task 'nope'"):
        load_run_config(str(bad), [])


def test_train_evaluate_transcribe(corpus, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "recipes/asr_tiny.yaml", f"data.train_manifest={corpus / 'train.jsonl'}",
               f"train.output_dir={out}", "train.max_steps=3", "train.save_every=0"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 3 and summary["skipped_samples"] == 0
    model_dir = Path(summary["model"])
    assert sorted(p.name for p in model_dir.iterdir()) == ["adapters", "config.json", "projectors.safetensors"]
    assert (out / "checkpoint-3" / "trainable.safetensors").is_file()

    # a missing file in the manifest is skipped, counted and named
    lines = (corpus / "train.jsonl").read_text().splitlines()
    broken = json.loads(lines[0])
    broken.update(id="gone", audio="missing.flac")
    manifest = corpus / "with_missing.jsonl"
    manifest.write_text("\n".join(lines[1:4] + [json.dumps(broken)]) + "\n")
    report_path = tmp_path / "report.json"
    assert main(["evaluate", "--model", str(model_dir), "--manifest", str(manifest), "--out", str(report_path)]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    report = json.loads(report_path.read_text())
    assert last["n"] == 3 and last["n_skipped"] == 1
    assert report["skipped"][0]["id"] == "gone" and "missing.flac" in report["skipped"][0]["error"]
    assert len(report["utterances"]) == 3 and {"reference", "hypothesis"} <= set(report["utterances"][0])
    voices = [json.loads(line).get("voice") for line in lines[1:4]]
    assert sum(v["n"] for v in report["by_voice"].values()) == 3 and set(report["by_voice"]) == set(voices)
    assert sum(v["ref_words"] for v in report["by_voice"].values()) == report["ref_words"]

    assert main(["evaluate", "--model", str(model_dir), "--manifest", str(manifest), "--show"]) == 0
    shown = capsys.readouterr().out
    assert shown.count("REF: ") == 3 and shown.count("HYP: ") == 3
    # --piece-seconds reaches the pipeline (recorded in the report) and a negative value is refused by name
    assert main(["evaluate", "--model", str(model_dir), "--manifest", str(manifest), "--out", str(report_path),
                 "--piece-seconds", "0.5"]) == 0
    assert json.loads(report_path.read_text())["decoding"]["piece_seconds"] == 0.5
    capsys.readouterr()
    assert main(["evaluate", "--model", str(model_dir), "--manifest", str(manifest), "--piece-seconds", "-1"]) == 2
    assert "--piece-seconds must be >= 0" in capsys.readouterr().err
    assert main(["transcribe", "--model", str(model_dir), "--piece-seconds", "-2", str(corpus / "u1.flac")]) == 2
    assert "--piece-seconds" in capsys.readouterr().err

    import mmlora

    asr = mmlora.load_pipeline(model_dir, device="cpu", dtype="float32")
    texts = asr.transcribe(audio=[corpus / "u1.flac", corpus / "u2.flac"], max_new_tokens=4)
    assert isinstance(texts, list) and len(texts) == 2 and all(isinstance(t, str) for t in texts)
    assert isinstance(asr.transcribe(audio=str(corpus / "u1.flac"), max_new_tokens=4), str)
    # audio longer than piece_seconds (or than the encoder's window): cut at pauses, pieces transcribed, texts joined
    import torch

    from mmlora.data.media import load_audio, split_at_pauses

    w = load_audio(corpus / "u2.flac")
    asr.piece_seconds = 0.4
    pieces = split_at_pauses(w, int(0.4 * 16000))
    assert len(pieces) >= 3
    real_run = asr._run
    asr._run = lambda media, *a: [str(x.numel()) for x in media["audio"]]  # each piece's length stands for its text
    def joined(x):
        return " ".join(str(p.numel()) for p in split_at_pauses(x, int(0.4 * 16000)))

    assert asr.transcribe(audio=w) == joined(w) == " ".join(str(p.numel()) for p in pieces)
    u1 = load_audio(corpus / "u1.flac")
    assert asr.transcribe(audio=[corpus / "u1.flac", w]) == [joined(u1), joined(w)]  # each text to its own input
    asr.piece_seconds = 10.0
    assert asr.transcribe(audio=w) == str(w.numel())  # within the limit: one piece
    asr._run = real_run
    # evaluate decodes the same pieces (a fake generate writes each piece's length as its text)
    from mmlora.tasks.speech import evaluate_speech

    asr.piece_seconds = 0.4
    real_generate = asr.model.generate
    asr.model.generate = lambda batch, **kw: [str(x.numel()) for x in batch["media"]["audio"]]
    rep = evaluate_speech(asr, manifest)
    asr.model.generate = real_generate
    hyps = {u["id"]: u["hypothesis"] for u in rep["utterances"]}
    assert hyps and all(hyps[json.loads(line)["id"]] == joined(load_audio(corpus / json.loads(line)["audio"]))
                        for line in lines[1:4]) and rep["decoding"]["piece_seconds"] == 0.4
    assert rep["decoding"]["piece_samples"] == asr.piece_limit() == int(0.4 * 16000)  # the cut, exactly
    assert isinstance(asr.transcribe(audio=w, max_new_tokens=4), str)  # the real model through the same path
    asr.piece_seconds = None
    window = asr.model.encoders["audio"].max_samples
    long = torch.cat([w] * (window // w.numel() + 1))
    assert long.numel() > window and isinstance(asr.transcribe(audio=long, max_new_tokens=4), str)
    with pytest.raises(ValueError, match="takes"):
        asr.transcribe(audio=corpus / "u1.flac", video=corpus / "u1.mp4")  # an audio-only model

    assert main(["transcribe", "--model", str(model_dir), str(corpus / "u1.flac")]) == 0
    assert capsys.readouterr().out.startswith(str(corpus / "u1.flac") + "\t")
    bad = tmp_path / "bad.flac"
    bad.write_bytes(b"not audio")
    assert main(["transcribe", "--model", str(model_dir), str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.flac" in err and "Traceback" not in err
    empty = tmp_path / "empty.flac"
    empty.write_bytes(b"")
    assert main(["transcribe", "--model", str(model_dir), str(empty)]) == 2
    assert "empty.flac" in capsys.readouterr().err


def test_eval_ascii_only_is_saved_with_the_model_and_used_by_its_pipeline(corpus, tmp_path):
    """eval.ascii_only goes into the saved pipeline settings, and the loaded pipeline's decoding then suppresses
    the model's non-ASCII tokens (their effect on answers: tests/test_model.py); a call can turn it off."""
    import mmlora

    out = tmp_path / "run"
    assert main(["train", "recipes/asr_tiny.yaml", f"data.train_manifest={corpus / 'train.jsonl'}",
                 f"train.output_dir={out}", "train.max_steps=1", "eval.ascii_only=true"]) == 0
    saved = json.loads((out / "final" / "model" / "config.json").read_text())["pipeline"]["generation"]
    assert saved["ascii_only"] is True
    asr = mmlora.load_pipeline(out / "final" / "model", device="cpu")
    seen = []
    real = asr.model.llm.generate
    asr.model.llm.generate = lambda **kw: seen.append(kw.get("suppress_tokens")) or real(**kw)
    asr.transcribe(audio=corpus / "u1.flac", max_new_tokens=4)
    asr.transcribe(audio=corpus / "u1.flac", max_new_tokens=4, ascii_only=False)
    assert seen[0] == asr.model.non_ascii_token_ids() and len(seen[0]) == 128 and seen[1] is None


def test_train_keeps_the_best_validation_wer(corpus, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "recipes/asr_tiny.yaml", f"data.train_manifest={corpus / 'train.jsonl'}",
               f"data.val_manifest={corpus / 'train.jsonl'}", "data.val_samples=2", "eval.max_new_tokens=3",
               f"train.output_dir={out}", "train.max_steps=4", "train.eval_every=2", "train.best_metric=val_wer"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    info = json.loads((out / "best" / "info.json").read_text())
    assert summary["best"] == info and info["metric"] == "val_wer" and info["step"] in (2, 4)
    assert Path(summary["best_model"]) == out / "best" / "model" and (out / "best" / "model" / "config.json").is_file()


def test_manifest_line_missing_a_field_is_named(tmp_path, capsys):
    m = tmp_path / "m.jsonl"
    m.write_text('{"id": "a", "audio": "a.flac", "text": "hi"}\n{"id": "b", "text": "no audio"}\n')
    from mmlora.tasks.speech import read_manifest

    with pytest.raises(ValueError, match=r"m\.jsonl:2: missing field 'audio'"):
        read_manifest(m)
    rc = main(["train", "recipes/asr_tiny.yaml", f"data.train_manifest={m}", f"train.output_dir={tmp_path / 'o'}"])
    assert rc == 2 and "m.jsonl:2" in capsys.readouterr().err


def test_matryoshka_trains_all_pairs_and_decodes_at_a_chosen_pair(corpus, tmp_path, capsys):
    out = tmp_path / "mtsk"
    assert main(["train", "recipes/avsr_matryoshka_tiny.yaml", f"data.train_manifest={corpus / 'train.jsonl'}",
                 f"train.output_dir={out}", "train.max_steps=2", "train.batch_size=2"]) == 0
    model_dir = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["model"]
    assert main(["evaluate", "--model", model_dir, "--manifest", str(corpus / "train.jsonl"), "--rates", "8,4",
                 "--max-samples", "2", "--snr", "0"]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["rates"] == {"audio": 8, "video": 4} and last["snr_db"] == 0.0 and last["n"] == 2
    assert main(["evaluate", "--model", model_dir, "--manifest", str(corpus / "train.jsonl"), "--rates", "3,4"]) == 2


def test_feature_cache_second_epoch_runs_no_encoder(corpus, tmp_path, capsys):
    out, cache = tmp_path / "run", tmp_path / "cache"
    assert main(["train", "recipes/asr_tiny.yaml", f"data.train_manifest={corpus / 'train.jsonl'}",
                 f"data.feature_cache={cache}", f"train.output_dir={out}", "train.max_steps=4", "train.batch_size=4",
                 "train.log_every=1", "train.save_every=0"]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "train/feature_cache_misses" in r]
    assert [r["train/feature_cache_misses"] for r in steps] == [4, 8, 8, 8]  # epoch 1 encodes, epoch 2 reads
    assert [r["train/feature_cache_hits"] for r in steps] == [0, 0, 4, 8]
    assert len(list(cache.rglob("*.safetensors"))) == 8
    assert main(["train", "recipes/asr_tiny.yaml", f"data.train_manifest={corpus / 'train.jsonl'}",
                 f"data.feature_cache={cache}", "data.noise_snrs=[5]", "data.noise_prob=0.5",
                 f"train.output_dir={tmp_path / 'x'}"]) == 2
    assert "noise_prob" in capsys.readouterr().err


def test_training_clips_padded_with_room_tone(corpus, tmp_path, capsys):
    """data.pad_seconds: each end of a training clip gets U(lo, hi) s of white noise 35-60 dB below the speech, the
    speech itself untouched; drawn per (seed, epoch, index); off by default and in evaluation; counted in the frame
    budget; refused for AVSR (it would shift audio against video) and with a feature cache."""
    import torch

    from mmlora.data.media import load_audio
    from mmlora.tasks.speech import SpeechDataset, read_manifest

    recs = read_manifest(corpus / "train.jsonl")
    clean = load_audio(recs[0].audio)
    ds = SpeechDataset(recs, ("audio",), seed=3, pad_seconds=[0.25, 0.75])
    wav = ds[0]["audios"][0]
    extra = len(wav) - len(clean)
    assert 2 * 0.25 * 16000 <= extra <= 2 * 0.75 * 16000
    starts = [i for i in range(extra + 1) if torch.equal(wav[i:i + len(clean)], clean)]
    assert len(starts) == 1  # the speech, whole and unchanged, somewhere inside
    lead, trail = wav[:starts[0]], wav[starts[0] + len(clean):]
    assert 0.25 * 16000 <= len(lead) <= 0.75 * 16000 and 0.25 * 16000 <= len(trail) <= 0.75 * 16000
    rms = clean.pow(2).mean().sqrt()
    for part in (lead, trail):
        level = 20 * torch.log10(part.pow(2).mean().sqrt() / rms)
        assert -62 < float(level) < -33
    assert torch.equal(wav, ds[0]["audios"][0])  # the same draw again
    ds.set_epoch(1)
    assert not torch.equal(wav, ds[0]["audios"][0])  # a new one in the next epoch
    assert torch.equal(SpeechDataset(recs, ("audio",), seed=3)[0]["audios"][0], clean)  # off by default
    never = SpeechDataset(recs, ("audio",), seed=3, pad_seconds=[0.25, 0.75], pad_prob=0.0)
    assert torch.equal(never[0]["audios"][0], clean)
    assert ds.lengths()[0] == SpeechDataset(recs, ("audio",)).lengths()[0] + 75  # + 2 x 0.75 s at 50 Hz
    with pytest.raises(ValueError, match="pad_seconds"):
        SpeechDataset(recs, ("audio", "video"), pad_seconds=[0, 1])
    with pytest.raises(ValueError, match="pad_seconds"):
        SpeechDataset(recs, ("audio",), pad_seconds=[1, 0])
    _train_two_steps("recipes/asr_tiny.yaml", corpus, tmp_path / "run", "data.pad_seconds=[0.2,0.5]")
    capsys.readouterr()
    assert main(["train", "recipes/asr_tiny.yaml", f"data.train_manifest={corpus / 'train.jsonl'}",
                 f"data.feature_cache={tmp_path / 'c'}", "data.pad_seconds=[0.2,0.5]",
                 f"train.output_dir={tmp_path / 'x'}"]) == 2
    assert "data.pad_seconds=[]" in capsys.readouterr().err


def test_feature_cache_of_the_video_alone_beside_online_audio_noise(corpus, tmp_path, capsys):
    """data.feature_cache_modalities=[video]: AVSR caches the lip features only, so online noise and warping of the
    audio stay allowed; epoch 2 reads every video from the cache; `cache-features` fills only the video; caching
    the audio with online noise, or a modality the task lacks, is refused with the field named."""
    cache = tmp_path / "cache"
    base = ["recipes/avsr_tiny.yaml", f"data.train_manifest={corpus / 'train.jsonl'}", f"data.feature_cache={cache}"]
    assert main(["cache-features", *base, "data.feature_cache_modalities=[video]", "--workers", "1"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "audio" not in report and report["video"]["written"] == 8
    out = tmp_path / "run"
    assert main(["train", *base, "data.feature_cache_modalities=[video]", "data.noise_snrs=[0]", "data.noise_prob=1",
                 "model.media.audio.vtlp=[0.9,1.1]", f"train.output_dir={out}", "train.max_steps=4",
                 "train.batch_size=4", "train.log_every=1", "train.save_every=0"]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "train/feature_cache_hits" in r]
    assert [r["train/feature_cache_hits"] for r in steps] == [4, 8, 12, 16]  # filled beforehand: no miss
    assert all(r["train/feature_cache_misses"] == 0 for r in steps)
    assert len(list(cache.rglob("*.safetensors"))) == 8  # the videos only
    capsys.readouterr()
    assert main(["train", *base, "data.feature_cache_modalities=[audio]", "data.noise_snrs=[0]", "data.noise_prob=1",
                 f"train.output_dir={tmp_path / 'x'}"]) == 2
    assert "feature_cache_modalities" in capsys.readouterr().err
    assert main(["train", *base, "data.feature_cache_modalities=[lips]", f"train.output_dir={tmp_path / 'y'}"]) == 2
    assert "lips is not a modality" in capsys.readouterr().err


def test_frame_budget_batches_from_manifest_durations(corpus, tmp_path, capsys):
    from mmlora.tasks.speech import SpeechDataset, read_manifest

    lengths = SpeechDataset(read_manifest(corpus / "train.jsonl"), ("audio",)).lengths()
    assert lengths == [50, 62, 75] * 2 + [50, 62]  # 1.0 / 1.25 / 1.5 s clips at 50 frames/s (soundfile headers)
    assert main(["train", "recipes/asr_tiny.yaml", f"data.train_manifest={corpus / 'train.jsonl'}",
                 f"train.output_dir={tmp_path / 'b'}", "train.batch_size=0", "train.batch_budget=160",
                 "train.num_epochs=1", "train.max_steps=0", "train.save_every=0"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["steps"] >= 4  # at most two clips (padded cost <= 160 frames) per batch: 8 clips -> >= 4 steps


@pytest.mark.slow
def test_matryoshka_training_under_ddp_two_cpu_processes(corpus, tmp_path):
    """`accelerate launch` (DDP over gloo, 2 CPU processes) of the real CLI: every trainable
    parameter of the multimodal model takes part in each step (no unused-parameter error) and the
    ranks agree on the reduced loss."""
    import os
    import socket
    import subprocess
    import sys

    launcher = Path(sys.executable).with_name("accelerate")
    if not launcher.exists():
        pytest.skip("accelerate launcher not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="true")
    repo = Path(__file__).resolve().parents[2]
    cmd = [str(launcher), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision",
           "no", "--dynamo_backend", "no", "--main_process_port", str(port), "-m", "mmlora.cli", "train",
           str(repo / "recipes/avsr_matryoshka_tiny.yaml"), f"data.train_manifest={corpus / 'train.jsonl'}",
           f"train.output_dir={tmp_path / 'ddp'}", "train.max_steps=3", "train.batch_size=2", "train.save_every=0"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=repo)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import re

    # both ranks print a summary; their writes can land on one line, so match the objects themselves
    finals = [json.loads(m) for m in re.findall(r'\{"final_loss"[^{}]*\}', proc.stdout)]
    assert len(finals) == 2 and finals[0] == finals[1] and finals[0]["steps"] == 3
    assert (tmp_path / "ddp" / "final" / "model" / "adapters" / "adapters.safetensors").is_file()


def test_babble_noise_at_the_asked_snr_from_a_pool_decoded_once(corpus, monkeypatch):
    import torch

    import mmlora.data.media as media
    from mmlora.tasks.speech import SpeechDataset, read_manifest

    calls = []
    real = media.load_audio
    monkeypatch.setattr(media, "load_audio", lambda p, *a: calls.append(p) or real(p, *a))
    ds = SpeechDataset(read_manifest(corpus / "train.jsonl"), ("audio",), noise_kind="babble", seed=1)
    clean = real(corpus / "u0.flac")
    mixes = [ds.noisy(clean, 0, 0.0, np.random.default_rng(i)) for i in range(3)]
    assert len(calls) == 8  # the 8 talkers decoded once for all three mixes
    for mix in mixes:
        scale = float((mix @ clean) / (clean @ clean))  # the mix may be scaled down as a whole (peak)
        snr = 10 * torch.log10((scale * clean).pow(2).mean() / (mix - scale * clean).pow(2).mean())
        assert abs(float(snr)) < 1.0  # babble is ~uncorrelated with the target: about 0 dB
        assert not torch.equal(mix, clean)
    assert torch.equal(ds.noisy(clean, 0, 0.0, np.random.default_rng(5)), ds.noisy(clean, 0, 0.0, np.random.default_rng(5)))


def test_babble_of_one_competing_talker(corpus, tmp_path, capsys):
    """data.noise_talkers / --noise-talkers: with [1, 1] the babble under a clip is one other utterance (the corpus
    clips are tones of distinct pitch: the residual's energy sits at one other clip's pitch), with the default [3, 6]
    at three or more; the default's draws are those of before the option; bad values are refused."""
    import torch

    from mmlora.data.media import load_audio
    from mmlora.tasks.speech import SpeechDataset, read_manifest

    recs = read_manifest(corpus / "train.jsonl")
    clean = load_audio(corpus / "u0.flac")
    pitches = [200 + 50 * i for i in range(1, 8)]  # the other clips' tones (u1..u7)

    def talkers_heard(ds, seed):
        mix = ds.noisy(clean, 0, 0.0, np.random.default_rng(seed))
        scale = float((mix @ clean) / (clean @ clean))
        spec = torch.fft.rfft(mix - scale * clean).abs() ** 2
        hz = torch.fft.rfftfreq(len(clean), 1 / 16000)
        energy = [float(spec[(hz - f).abs() < 8].sum()) for f in pitches]
        return sum(e > 0.05 * sum(energy) for e in energy)

    one = SpeechDataset(recs, ("audio",), seed=1, noise_talkers=[1, 1])
    many = SpeechDataset(recs, ("audio",), seed=1)
    assert [talkers_heard(one, s) for s in range(6)] == [1] * 6
    assert all(talkers_heard(many, s) >= 3 for s in range(6))
    explicit = SpeechDataset(recs, ("audio",), seed=1, noise_talkers=(3, 6))
    assert torch.equal(many.noisy(clean, 0, 0.0, np.random.default_rng(3)),
                       explicit.noisy(clean, 0, 0.0, np.random.default_rng(3)))
    with pytest.raises(ValueError, match="noise_talkers"):
        SpeechDataset(recs, ("audio",), noise_talkers=[0, 2])
    _train_two_steps("recipes/asr_tiny.yaml", corpus, tmp_path / "run", "data.noise_snrs=[0]", "data.noise_prob=1",
                     "data.noise_talkers=[1,1]")
    m = str(tmp_path / "run" / "final" / "model")
    capsys.readouterr()
    assert main(["evaluate", "--model", m, "--manifest", str(corpus / "train.jsonl"), "--snr", "0",
                 "--noise-talkers", "1", "--max-samples", "2"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["noise_talkers"] == [1, 1]
    assert main(["evaluate", "--model", m, "--manifest", str(corpus / "train.jsonl"), "--snr", "0",
                 "--noise-talkers", "2,1"]) == 2
    assert "noise_talkers" in capsys.readouterr().err
    assert main(["train", "recipes/asr_tiny.yaml", f"data.train_manifest={corpus / 'train.jsonl'}",
                 "data.noise_talkers=[0,1]", f"train.output_dir={tmp_path / 'bad'}"]) == 2


def test_cache_features_fills_the_cache_training_reads(corpus, tmp_path, capsys):
    """`mmlora cache-features` writes an entry per audio and video file of the manifest, with the
    keys training uses: the first epoch then has no cache miss."""
    cache = tmp_path / "cache"
    args = ["recipes/avsr_tiny.yaml", f"data.train_manifest={corpus / 'train.jsonl'}", f"data.feature_cache={cache}"]
    assert main(["cache-features", *args, "--workers", "2", "--batch-size", "3"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["audio"] == {"files": 8, "cached": 0, "written": 8, "failed": 0}
    assert report["video"] == {"files": 8, "cached": 0, "written": 8, "failed": 0}
    out = tmp_path / "run"
    assert main(["train", *args, f"train.output_dir={out}", "train.max_steps=2", "train.batch_size=4",
                 "train.log_every=1", "train.save_every=0"]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "train/feature_cache_misses" in r]
    assert [r["train/feature_cache_misses"] for r in steps] == [0, 0]
    assert [r["train/feature_cache_hits"] for r in steps] == [8, 16]  # audio + video per sample
    assert main(["cache-features", *args[:2]]) == 2
    assert "data.feature_cache is not set" in capsys.readouterr().err



def test_init_from_starts_from_a_saved_models_weights(corpus, tmp_path, capsys):
    """train.init_from loads the projector + LoRA weights of a saved model (not the fresh draw), and
    a model folder whose shapes differ is refused with the file named."""
    import torch

    from mmlora.model import MultimodalLM
    from mmlora.tasks.cli import build_model, load_run_config

    out = tmp_path / "run"
    assert main(["train", "recipes/asr_tiny.yaml", f"data.train_manifest={corpus / 'train.jsonl'}",
                 f"train.output_dir={out}", "train.max_steps=3", "train.lr=1e-2"]) == 0
    saved = MultimodalLM.from_pretrained(out / "final" / "model")
    want = {k: v for k, v in saved.named_parameters() if v.requires_grad}
    _, cfg = load_run_config("recipes/asr_tiny.yaml", [f"train.init_from={out / 'final' / 'model'}"])
    got = {k: v for k, v in build_model(cfg).named_parameters() if v.requires_grad}
    _, cfg0 = load_run_config("recipes/asr_tiny.yaml", [])
    fresh = {k: v for k, v in build_model(cfg0).named_parameters() if v.requires_grad}
    assert got.keys() == want.keys() == fresh.keys() and any("lora" in k.lower() or ".A" in k for k in got)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=0)
    assert any(not torch.equal(fresh[k], want[k]) for k in want)  # training moved them: the test can fail

    _, bad = load_run_config("recipes/asr_tiny.yaml", [f"train.init_from={out / 'final' / 'model'}",
                                                        "model.adapters={default: {rank: 3, alpha: 6}}"])
    with pytest.raises(ValueError, match="adapters"):
        build_model(bad)
    _, bad = load_run_config("recipes/asr_tiny.yaml", [f"train.init_from={tmp_path / 'nowhere'}"])
    with pytest.raises(FileNotFoundError, match="nowhere"):
        build_model(bad)

    # an AVSR run from the ASR model: audio projector + LoRA loaded, the video projector as a fresh AVSR build's
    _, av = load_run_config("recipes/avsr_tiny.yaml", [f"train.init_from={out / 'final' / 'model'}"])
    got = dict(build_model(av).named_parameters())
    _, av0 = load_run_config("recipes/avsr_tiny.yaml", [])
    fresh_av = dict(build_model(av0).named_parameters())
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=0)
    video = [k for k in got if k.startswith("projectors.video.")]
    assert video and all(torch.equal(got[k], fresh_av[k]) for k in video)

    # a VSR run from the ASR model: the LoRA loaded, the audio projector left out, the video projector fresh
    _, vs = load_run_config("recipes/vsr_tiny.yaml", [f"train.init_from={out / 'final' / 'model'}"])
    got = dict(build_model(vs).named_parameters())
    _, vs0 = load_run_config("recipes/vsr_tiny.yaml", [])
    fresh_vs = dict(build_model(vs0).named_parameters())
    lora = [k for k in want if not k.startswith("projectors.")]
    assert lora and all(torch.equal(got[k], want[k]) for k in lora)
    assert not any(k.startswith("projectors.audio.") for k in got)
    video = [k for k in got if k.startswith("projectors.video.")]
    assert video and all(torch.equal(got[k], fresh_vs[k]) for k in video)

    # Matryoshka AVSR from the ASR model, renamed (a YAML mapping on the command line): the LoRA into the
    # shared adapter, the rate-4 projector into the rate bank's 4; the rest as a fresh build's
    rename = ("train.init_map={'adapters.default.': 'adapters.shared.', "
              "'projectors.audio.': 'projectors.audio.projectors.4.'}")
    _, mt = load_run_config("recipes/avsr_matryoshka_tiny.yaml", [f"train.init_from={out / 'final' / 'model'}", rename])
    got = dict(build_model(mt).named_parameters())
    _, mt0 = load_run_config("recipes/avsr_matryoshka_tiny.yaml", [])
    fresh_mt = {k: v for k, v in build_model(mt0).named_parameters() if v.requires_grad}
    moved = {k.replace("adapters.default.", "adapters.shared.").replace("projectors.audio.", "projectors.audio.projectors.4."): k
             for k in want}
    for k, src in moved.items():
        torch.testing.assert_close(got[k], want[src], rtol=0, atol=0)
    rest = [k for k in fresh_mt if k not in moved]
    assert any(".scale_a4_v2." in k for k in rest) and any(".projectors.8." in k for k in rest)
    assert all(torch.equal(got[k], fresh_mt[k]) for k in rest)


def test_init_grow_rank_loads_a_lower_rank_into_a_higher_one_with_the_same_output(corpus, tmp_path):
    """``train.init_grow_rank``: a rank-r model's adapters fill the first r ranks of a rank-R run (B rescaled for
    the other alpha), so every adapter's update s·B·A is unchanged; the added ranks are the fresh build's A rows
    and zero B columns. Without the flag the rank change is refused and the message names the flag."""
    import torch

    from mmlora.model import MultimodalLM
    from mmlora.tasks.cli import build_model, load_run_config

    out = tmp_path / "r4"
    assert main(["train", "recipes/asr_tiny.yaml", f"data.train_manifest={corpus / 'train.jsonl'}",
                 f"train.output_dir={out}", "train.max_steps=3", "train.lr=1e-2",
                 "model.adapters={default: {rank: 4, alpha: 8}}"]) == 0
    small = MultimodalLM.from_pretrained(out / "final" / "model")
    grow = [f"train.init_from={out / 'final' / 'model'}", "model.adapters={default: {rank: 12, alpha: 6}}"]
    _, cfg = load_run_config("recipes/asr_tiny.yaml", grow + ["train.init_grow_rank=true"])
    big = build_model(cfg)
    _, cfg0 = load_run_config("recipes/asr_tiny.yaml", grow[1:])
    fresh = dict(build_model(cfg0).named_parameters())
    got = dict(big.named_parameters())
    from mmlora.lora import lora_layers

    pairs = 0
    for (path, s_layer), (_, b_layer) in zip(lora_layers(small.llm), lora_layers(big.llm)):
        a, b = s_layer.adapters["default"], b_layer.adapters["default"]
        assert (a.spec.rank, b.spec.rank) == (4, 12) and a.B.abs().sum() > 0  # trained: B is not zero any more
        torch.testing.assert_close(b.spec.scaling * b.B @ b.A, a.spec.scaling * a.B @ a.A, rtol=1e-5, atol=1e-6)
        name = f"llm.{path}.adapters.default"
        assert torch.equal(got[name + ".A"][4:], fresh[name + ".A"][4:]) and not got[name + ".B"][:, 4:].any()
        pairs += 1
    assert pairs > 0
    proj = [k for k in got if k.startswith("projectors.")]
    sp = dict(small.named_parameters())
    assert proj and all(torch.equal(got[k], sp[k]) for k in proj)

    with pytest.raises(ValueError, match="init_grow_rank=true"):
        build_model(load_run_config("recipes/asr_tiny.yaml", grow)[1])
    _, shrink = load_run_config("recipes/asr_tiny.yaml", [grow[0], "model.adapters={default: {rank: 2, alpha: 4}}",
                                                          "train.init_grow_rank=true"])
    with pytest.raises(ValueError, match="saved rank/alpha 4/8.0, here 2/4"):
        build_model(shrink)


def test_align_stage_then_vsr_from_it(corpus, tmp_path, capsys):
    """ASR model → an AVSR run with ``model.align`` (video tokens learn the audio tokens, no LLM pass: only
    the video projector moves and the alignment loss falls) → a VSR run started from its video projector
    and LoRA (``train.init_map`` skips the audio projector)."""
    import torch

    from mmlora.model import MultimodalLM
    from mmlora.tasks.cli import build_model, load_run_config

    man = f"data.train_manifest={corpus / 'train.jsonl'}"
    asr = tmp_path / "asr"
    assert main(["train", "recipes/asr_tiny.yaml", man, f"train.output_dir={asr}", "train.max_steps=2"]) == 0
    al = tmp_path / "align"
    assert main(["train", "recipes/avsr_tiny.yaml", man, f"train.output_dir={al}", "train.max_steps=12",
                 "train.log_every=1", "train.lr=1e-2", f"train.init_from={asr / 'final' / 'model'}",
                 "train.group_lr={projectors: 1e-2, lora: 5e-3}",  # as the GPU recipes: lora's lr is unused here
                 "model.align={source: video, target: audio, lm: false}"]) == 0
    logs = [json.loads(x) for x in (al / "metrics.jsonl").read_text().splitlines()]
    align = [x["train/align_loss"] for x in logs if "train/align_loss" in x]
    assert len(align) == 12 and align[-1] < 0.7 * align[0]
    before, after = MultimodalLM.from_pretrained(asr / "final" / "model"), MultimodalLM.from_pretrained(al / "final" / "model")
    a, b = dict(before.named_parameters()), dict(after.named_parameters())
    kept = [k for k in a if k.startswith("projectors.audio.") or ".adapters." in k]
    assert kept and all(torch.equal(a[k], b[k]) for k in kept)  # the teacher side did not move

    # a renamed load reaches the weights an align-only run keeps frozen (they are not trainable there)
    _, ren = load_run_config("recipes/avsr_tiny.yaml", [f"train.init_from={asr / 'final' / 'model'}",
                                                        "train.init_map={'projectors.audio.': 'projectors.audio.'}",
                                                        "model.align={source: video, lm: false}"])
    got = dict(build_model(ren).named_parameters())
    assert all(torch.equal(got[k], a[k]) and not got[k].requires_grad for k in kept)

    _, vsr = load_run_config("recipes/vsr_tiny.yaml", [man, f"train.init_from={al / 'final' / 'model'}",
                                                       "train.init_map={'projectors.audio.': null}"])
    got = dict(build_model(vsr).named_parameters())
    loaded = [k for k in b if k.startswith("projectors.video.") or ".adapters." in k]
    assert loaded and all(torch.equal(got[k], b[k]) for k in loaded)
    assert not any(k.startswith("projectors.audio.") for k in got)


def test_init_projectors_takes_one_modalitys_projector_from_another_model(corpus, tmp_path):
    """An AVSR run from a VSR model (its LoRA and lip projector, train.init_from) with the audio projector of an
    ASR model (train.init_projectors): every trained weight comes from the model named for it; a folder without
    that projector, or a modality the model lacks, is refused with the file or modality named."""
    import torch

    from mmlora.model import MultimodalLM
    from mmlora.tasks.cli import build_model, load_run_config

    man = f"data.train_manifest={corpus / 'train.jsonl'}"
    asr, vsr = tmp_path / "asr", tmp_path / "vsr"
    assert main(["train", "recipes/asr_tiny.yaml", man, f"train.output_dir={asr}", "train.max_steps=3",
                 "train.lr=1e-2"]) == 0
    assert main(["train", "recipes/vsr_tiny.yaml", man, f"train.output_dir={vsr}", "train.max_steps=3",
                 "train.lr=1e-2", "train.seed=5"]) == 0
    a = dict(MultimodalLM.from_pretrained(asr / "final" / "model").named_parameters())
    v = dict(MultimodalLM.from_pretrained(vsr / "final" / "model").named_parameters())
    _, cfg = load_run_config("recipes/avsr_tiny.yaml", [f"train.init_from={vsr / 'final' / 'model'}",
                                                        f"train.init_projectors={{audio: {asr / 'final' / 'model'}}}"])
    got = dict(build_model(cfg).named_parameters())
    audio = [k for k in got if k.startswith("projectors.audio.")]
    video = [k for k in got if k.startswith("projectors.video.")]
    lora = [k for k in got if ".adapters." in k]
    assert audio and video and lora
    assert all(torch.equal(got[k], a[k]) for k in audio) and all(torch.equal(got[k], v[k]) for k in video + lora)
    assert not all(torch.equal(a[k], v[k]) for k in lora)  # the two sources differ: the test can fail
    assert all(got[k].requires_grad for k in audio + video)  # loaded weights still train

    _, bad = load_run_config("recipes/avsr_tiny.yaml", [f"train.init_projectors={{video: {asr / 'final' / 'model'}}}"])
    with pytest.raises(ValueError, match=r"projectors.safetensors: holds no video projector \(it has audio\)"):
        build_model(bad)
    _, bad = load_run_config("recipes/asr_tiny.yaml", [f"train.init_projectors={{video: {vsr / 'final' / 'model'}}}"])
    with pytest.raises(ValueError, match="no video projector to load into: this model has audio"):
        build_model(bad)


def test_validation_in_noise_picks_the_best_weights_by_noisy_wer(corpus, tmp_path, capsys, monkeypatch):
    """data.val_snr: training's validation mixes noise in as `mmlora evaluate --snr` does, so best/ is chosen by
    the WER in noise; the last validation's WER is that evaluation's on the final weights."""
    from mmlora.pipelines import MediaPipeline
    from mmlora.model import MultimodalLM
    from mmlora.tasks import TASKS
    from mmlora.tasks.speech import evaluate_speech

    calls = []
    real = TASKS["asr"].evaluate

    def spy(*args, **kwargs):
        rep = real(*args, **kwargs)
        calls.append(({k: kwargs.get(k) for k in ("snr", "noise_kind", "noise_talkers")}, rep["wer"],
                      [u["hypothesis"] for u in rep["utterances"]]))
        return rep

    monkeypatch.setattr(TASKS["asr"], "evaluate", spy)
    out = tmp_path / "run"
    val = corpus / "train.jsonl"
    rc = main(["train", "recipes/asr_tiny.yaml", f"data.train_manifest={val}", f"data.val_manifest={val}",
               "data.val_samples=4", "eval.max_new_tokens=4", f"train.output_dir={out}", "train.max_steps=4",
               "train.eval_every=2", "train.best_metric=val_wer", "data.val_snr=0", "data.val_noise_talkers=[1,1]"])
    assert rc == 0
    assert [c[0] for c in calls] == [{"snr": 0.0, "noise_kind": "babble", "noise_talkers": (1, 1)}] * 2
    hist = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if "eval/val_wer" in x]
    assert [h["eval/val_wer"] for h in hist] == [c[1] for c in calls]
    model = MultimodalLM.from_pretrained(out / "final" / "model")
    pipe = MediaPipeline(model, batch_size=8)  # the generation options saved with the model (max_new_tokens 4)
    rep = evaluate_speech(pipe, val, snr=0.0, noise_talkers=(1, 1), max_samples=4)
    assert rep["wer"] == calls[-1][1] and [u["hypothesis"] for u in rep["utterances"]] == calls[-1][2]
    # the noise itself (evaluate_speech's snr) is tested with `mmlora evaluate --snr`; here: it is asked for

    for bad, msg in (("data.val_noise_kind=pink", "val_noise_kind must be babble or white"),
                     ("data.val_noise_talkers=[3,1]", "val_noise_talkers must be"),):
        assert main(["train", "recipes/asr_tiny.yaml", f"data.train_manifest={val}", f"data.val_manifest={val}",
                     "data.val_snr=0", bad, f"train.output_dir={tmp_path / 'bad'}", "train.max_steps=1"]) == 2
        assert msg in capsys.readouterr().err
    assert main(["train", "recipes/asr_tiny.yaml", f"data.train_manifest={val}", "data.val_snr=0",
                 f"train.output_dir={tmp_path / 'bad'}", "train.max_steps=1"]) == 2
    assert "data.val_snr needs data.val_manifest" in capsys.readouterr().err


def test_training_noise_of_two_kinds(corpus, tmp_path, capsys):
    """data.noise_white_prob: that fraction of the noisy training clips gets white noise instead of babble, chosen
    per (seed, epoch, index) from its own stream: each clip is exactly the babble-only or the white-only set's clip,
    0 gives the babble-only draws and 1 the white-only ones; bad values name the field."""
    import torch

    from mmlora.tasks.speech import SpeechDataset, read_manifest

    recs = read_manifest(corpus / "train.jsonl")
    noisy = dict(noise_snrs=[-5.0, 0.0, 5.0], noise_prob=1.0, seed=2, noise_talkers=[1, 2])
    babble = SpeechDataset(recs, ("audio",), **noisy)
    white = SpeechDataset(recs, ("audio",), **{**noisy, "noise_kind": "white"})
    mixed = {p: SpeechDataset(recs, ("audio",), **noisy, noise_white_prob=p) for p in (0.0, 0.5, 1.0)}
    kinds = {p: [] for p in mixed}
    for epoch in range(4):
        for ds in (babble, white, *mixed.values()):
            ds.set_epoch(epoch)
        for i in range(len(recs)):
            b, w = babble[i]["audios"][0], white[i]["audios"][0]
            assert not torch.equal(b, w)
            for p, ds in mixed.items():
                m = ds[i]["audios"][0]
                assert torch.equal(m, b) or torch.equal(m, w), (p, epoch, i)
                kinds[p].append("white" if torch.equal(m, w) else "babble")
    n = 4 * len(recs)
    assert kinds[0.0] == ["babble"] * n and kinds[1.0] == ["white"] * n
    assert 0.3 < kinds[0.5].count("white") / n < 0.7, kinds[0.5]
    for bad, msg in (({"noise_white_prob": 1.5}, "noise_white_prob must be in"),
                     ({"noise_white_prob": 0.5, "noise_kind": "white"}, "noise_white_prob mixes white noise")):
        with pytest.raises(ValueError, match=msg):
            SpeechDataset(recs, ("audio",), **{**noisy, **bad})
    assert main(["train", "recipes/asr_tiny.yaml", f"data.train_manifest={corpus / 'train.jsonl'}",
                 "data.noise_white_prob=-1", f"train.output_dir={tmp_path / 'bad'}"]) == 2
    assert "data.noise_white_prob must be in [0, 1]" in capsys.readouterr().err


def test_online_speed_perturbation_is_seeded_per_epoch_and_keeps_the_noise(corpus):
    import torch

    from mmlora.data.media import load_audio
    from mmlora.tasks.speech import SpeechDataset, read_manifest

    recs = read_manifest(corpus / "train.jsonl")
    n = load_audio(corpus / "u0.flac").numel()
    ds = SpeechDataset(recs, ("audio",), seed=3, speed_range=[0.8, 1.2])
    lens = []
    for epoch in range(4):
        ds.set_epoch(epoch)
        a, b = ds[0]["audios"][0], ds[0]["audios"][0]
        assert torch.equal(a, b)  # the same draw for (seed, epoch, index)
        lens.append(a.numel())
    factors = [n / m for m in lens]
    assert all(0.79 < f < 1.21 for f in factors) and len(set(lens)) > 1, factors
    # a speed-perturbed tone keeps its waveform shape, played faster: its frequency scales by the factor
    ds.set_epoch(0)
    wav = ds[0]["audios"][0].numpy()
    f0 = np.argmax(np.abs(np.fft.rfft(wav))) * 16000 / wav.size
    assert abs(f0 - 200 * factors[0]) < 3, (f0, factors[0])
    # off by probability 0; the noise draws do not depend on the speed option
    assert torch.equal(SpeechDataset(recs, ("audio",), seed=3, speed_range=[0.8, 1.2], speed_prob=0.0)[0]["audios"][0],
                       load_audio(corpus / "u0.flac"))
    noisy = dict(noise_snrs=[0.0], noise_prob=1.0, noise_kind="white", seed=3)
    plain = SpeechDataset(recs, ("audio",), **noisy)[1]["audios"][0]
    fast = SpeechDataset(recs, ("audio",), speed_range=[1.0, 1.0], **noisy)[1]["audios"][0]
    assert torch.equal(plain, fast)
    with pytest.raises(ValueError, match="speed_range"):
        SpeechDataset(recs, ("audio",), speed_range=[1.2, 0.8])


def test_feature_cache_refuses_online_speed_and_vtlp(corpus, tmp_path, capsys):
    base = ["train", "recipes/asr_tiny.yaml", f"data.train_manifest={corpus / 'train.jsonl'}",
            f"data.feature_cache={tmp_path / 'cache'}", f"train.output_dir={tmp_path / 'x'}"]
    assert main([*base, "data.speed_range=[0.9,1.1]"]) == 2
    assert "speed_range" in capsys.readouterr().err
    assert main([*base, "model.media.audio.vtlp=[0.9,1.1]"]) == 2
    assert "vtlp" in capsys.readouterr().err


def _train_two_steps(recipe: str, corpus: Path, out: Path, *overrides: str) -> dict:
    """`mmlora train RECIPE` on the corpus for 2 steps with the overrides; the saved model's media config."""
    assert main(["train", recipe, f"data.train_manifest={corpus / 'train.jsonl'}", *overrides, f"train.output_dir={out}",
                 "train.max_steps=2", "train.save_every=0"]) == 0
    return json.loads((out / "final" / "model" / "config.json").read_text())["model"]["media"]


def test_training_with_speed_and_vtlp_runs(corpus, tmp_path):
    media = _train_two_steps("recipes/asr_tiny.yaml", corpus, tmp_path / "run", "data.speed_range=[0.9,1.1]",
                             "model.media.audio.vtlp=[0.9,1.1]")
    assert media["audio"]["vtlp"] == [0.9, 1.1]  # recorded; inference never warps (eval mode)


def test_avsr_training_with_modality_dropout_runs_and_records_it(corpus, tmp_path):
    media = _train_two_steps("recipes/avsr_tiny.yaml", corpus, tmp_path / "run", "model.media.audio.dropout=0.5",
                             "model.media.video.dropout=0.25", "model.media.video.swap=0.5")
    assert media["audio"]["dropout"] == 0.5 and media["video"]["dropout"] == 0.25 and media["video"]["swap"] == 0.5


def test_evaluate_with_a_zeroed_modality_reads_the_other_alone(corpus, tmp_path, capsys):
    """`mmlora evaluate --zero-modality audio`: an AVSR model read as VSR. With the audio tokens zeroed the
    hypotheses cannot depend on the audio (noise mixed in changes nothing); the tokens are zero in the model,
    the video's are not, and the model's setting is restored afterwards."""
    from mmlora.pipelines import load_pipeline
    from mmlora.tasks.speech import evaluate_speech

    _train_two_steps("recipes/avsr_tiny.yaml", corpus, tmp_path / "run", "model.media.audio.dropout=0.5")
    model_dir, m = str(tmp_path / "run" / "final" / "model"), str(corpus / "train.jsonl")
    hyps = {}
    for snr in (None, -5):
        out = tmp_path / f"z{snr}.json"
        assert main(["evaluate", "--model", model_dir, "--manifest", m, "--zero-modality", "audio", "--out", str(out),
                     *(["--snr", str(snr)] if snr is not None else [])]) == 0
        rep = json.loads(out.read_text())
        assert rep["zeroed"] == ["audio"] and rep["n"] == 8
        hyps[snr] = [u["hypothesis"] for u in rep["utterances"]]
    assert hyps[None] == hyps[-5]
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["zeroed"] == ["audio"]

    pipe = load_pipeline(model_dir, device="cpu")
    feats = pipe.model.encode_media({"audio": [str(corpus / "u0.flac")], "video": [str(corpus / "u0.mp4")]})
    pipe.model.zeroed_modalities = frozenset({"audio"})
    emb = pipe.model.project(feats, pipe.model.default_rates())
    assert not emb["audio"][0].any() and emb["video"][0].any()
    pipe.model.zeroed_modalities = frozenset()
    assert pipe.model.project(feats, pipe.model.default_rates())["audio"][0].any()
    evaluate_speech(pipe, m, zero=("audio",), max_samples=1)
    assert pipe.model.zeroed_modalities == frozenset()  # restored
    with pytest.raises(ValueError, match="leaves the model no input"):
        evaluate_speech(pipe, m, zero=("audio", "video"))
    assert main(["evaluate", "--model", model_dir, "--manifest", m, "--zero-modality", "audio",
                 "--zero-modality", "video"]) == 2
    asr = _train_two_steps("recipes/asr_tiny.yaml", corpus, tmp_path / "asr")
    assert set(asr) == {"audio"}
    assert main(["evaluate", "--model", str(tmp_path / "asr" / "final" / "model"), "--manifest", m,
                 "--zero-modality", "video"]) == 2
    assert "cannot zero video: the model reads audio" in capsys.readouterr().err


def test_concatenated_training_samples_join_clips_and_texts_of_one_voice(corpus, tmp_path, capsys):
    import torch

    from mmlora.data.media import load_audio
    from mmlora.tasks.speech import SpeechDataset, read_manifest

    from dataclasses import replace

    recs = [replace(r, text=f"{r.text} {r.id}") for r in read_manifest(corpus / "train.jsonl")]  # 4 words, unique
    by_text = {r.text: r for r in recs}
    assert len(by_text) == len(recs)
    ds = SpeechDataset(recs, ("audio",), seed=2, concat_prob=1.0, concat_max=3)
    joined = 0
    for idx in range(len(recs)):
        s = ds[idx]
        wav, text = s["audios"][0], s["messages"][-1]["content"]
        assert torch.equal(wav, ds[idx]["audios"][0])  # the same draw for (seed, epoch, index)
        # the answer is 1-3 whole transcripts (4 words each), the first one the item's own
        words = text.split()
        parts = [" ".join(words[i:i + 4]) for i in range(0, len(words), 4)]
        assert parts[0] == recs[idx].text and 1 <= len(parts) <= 3
        assert len({by_text[p].voice for p in parts}) == 1  # one voice
        lens = [load_audio(by_text[p].audio).numel() for p in parts]
        gaps = wav.numel() - sum(lens)
        assert (len(parts) - 1) * 0.15 * 16000 - 1 <= gaps <= (len(parts) - 1) * 0.6 * 16000 + 1
        # the audio is the clips in order, with silence between them
        assert torch.equal(wav[: lens[0]], load_audio(recs[idx].audio))
        if len(parts) > 1:
            joined += 1
            tail = load_audio(by_text[parts[-1]].audio)
            assert torch.equal(wav[-tail.numel():], tail)
            assert wav[lens[0]: lens[0] + int(0.15 * 16000)].abs().max() == 0
    assert joined >= 4
    # a length limit keeps single clips; probability 0 changes nothing
    short = SpeechDataset(recs, ("audio",), seed=2, concat_prob=1.0, concat_max_seconds=1.3)
    assert all(short[i]["messages"][-1]["content"] == recs[i].text for i in range(len(recs)))
    off = SpeechDataset(recs, ("audio",), seed=2)
    assert off[3]["messages"][-1]["content"] == recs[3].text
    with pytest.raises(ValueError, match="audio clips only"):
        SpeechDataset(recs, ("audio", "video"), concat_prob=0.5)
    with pytest.raises(ValueError, match="concat_max"):
        SpeechDataset(recs, ("audio",), concat_prob=0.5, concat_max=1)
    assert main(["train", "recipes/asr_tiny.yaml", f"data.train_manifest={corpus / 'train.jsonl'}",
                 f"data.feature_cache={tmp_path / 'c'}", "data.concat_prob=0.5",
                 f"train.output_dir={tmp_path / 'x'}"]) == 2
    assert "concat_prob" in capsys.readouterr().err
    assert main(["train", "recipes/asr_tiny.yaml", f"data.train_manifest={corpus / 'train.jsonl'}",
                 "data.concat_prob=0.5", f"train.output_dir={tmp_path / 'run'}", "train.max_steps=2",
                 "train.save_every=0"]) == 0


def test_answer_loss_is_token_weighted_and_falls_on_trained_clips(corpus, tmp_path):
    """scripts/answer_loss.py: the same loss in batches of 3 as in one batch (token weighting), and lower
    for a model trained on the clips than for its fresh start."""
    from conftest import load_script
    from mmlora.pipelines import load_pipeline

    mod = load_script("answer_loss")
    man = str(corpus / "train.jsonl")
    runs = {}
    for steps in (1, 30):
        out = tmp_path / f"run{steps}"
        assert main(["train", "recipes/asr_tiny.yaml", f"data.train_manifest={man}", f"train.output_dir={out}",
                     f"train.max_steps={steps}", "train.save_every=0", "train.lr=3e-3", "train.warmup_steps=1"]) == 0
        runs[steps] = load_pipeline(out / "final" / "model")
    whole = mod.answer_loss(runs[1], man, batch_size=8)
    parts = mod.answer_loss(runs[1], man, batch_size=3)
    assert whole["clips"] == 8 and whole["tokens"] == parts["tokens"] > 8
    assert abs(whole["loss"] - parts["loss"]) < 1e-4, (whole, parts)
    assert mod.answer_loss(runs[30], man)["loss"] < whole["loss"] - 0.1  # 5.51 -> 5.24 here
    assert mod.main(["--model", str(tmp_path / "run1" / "final" / "model"), "--max-samples", "2", man]) == 0


def test_online_augmentation_resumes_exactly(corpus, tmp_path):
    """Speed, vocal tract length and joined utterances are drawn from (seed, epoch, index) and torch's
    restored generator: steps 4-6 resumed from checkpoint-3 have bitwise the losses of the first run."""
    import shutil

    out = tmp_path / "run"
    args = ["train", "recipes/asr_tiny.yaml", f"data.train_manifest={corpus / 'train.jsonl'}", f"train.output_dir={out}",
            "train.max_steps=6", "train.save_every=3", "train.log_every=1", "data.speed_range=[0.85,1.15]",
            "model.media.audio.vtlp=[0.85,1.15]", "data.concat_prob=0.5", "train.keep_last=3"]
    assert main(args) == 0
    first = {r["step"]: r["train/loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
             if "train/loss" in r}
    shutil.rmtree(out / "checkpoint-6")
    shutil.rmtree(out / "final")
    (out / "metrics.jsonl").unlink()
    assert main([*args, "train.resume=auto"]) == 0
    again = {r["step"]: r["train/loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
             if "train/loss" in r}
    assert sorted(again) == [4, 5, 6] and all(again[s] == first[s] for s in again), (first, again)
    assert len(set(first.values())) == 6


def test_average_models_is_the_weighted_mean_and_loads(corpus, tmp_path, capsys):
    """`mmlora average-models OUT A B --weights 1,3`: every weight file of the new folder is the float64 weighted
    mean of A's and B's (weights normalized), in their dtype; weights 1,0 give A back exactly; the folder
    evaluates; mismatched models and an existing OUT are refused with the reason."""
    import torch
    from safetensors.torch import load_file

    _train_two_steps("recipes/asr_tiny.yaml", corpus, tmp_path / "a")
    _train_two_steps("recipes/asr_tiny.yaml", corpus, tmp_path / "b", "train.seed=1", "train.lr=3e-3")
    a, b = tmp_path / "a" / "final" / "model", tmp_path / "b" / "final" / "model"
    files = sorted(p.relative_to(a) for p in a.rglob("*.safetensors"))
    assert len(files) >= 2  # projectors and adapters
    capsys.readouterr()
    assert main(["average-models", str(tmp_path / "avg"), str(a), str(b), "--weights", "1,3"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["weights"] == [0.25, 0.75]
    from safetensors import safe_open

    changed = 0
    for rel in files:
        with safe_open(str(a / rel), "pt") as fa, safe_open(str(tmp_path / "avg" / rel), "pt") as fm:
            assert fm.metadata() == fa.metadata()  # e.g. the adapters' format tag
        ta, tb, tm = (load_file(str(d / rel)) for d in (a, b, tmp_path / "avg"))
        for k in ta:
            want = ((ta[k].double() + 3 * tb[k].double()) / 4).to(ta[k].dtype)
            assert torch.equal(tm[k], want), (rel, k)
            changed += int(not torch.equal(ta[k], tb[k]))
    assert changed > 0  # the two models differ, so the test compares something
    assert main(["average-models", str(tmp_path / "first"), str(a), str(b), "--weights", "1,0"]) == 0
    for rel in files:
        ta, tf = load_file(str(a / rel)), load_file(str(tmp_path / "first" / rel))
        assert all(torch.equal(ta[k], tf[k]) for k in ta)
    assert main(["evaluate", "--model", str(tmp_path / "avg"), "--manifest", str(corpus / "train.jsonl"),
                 "--max-samples", "2"]) == 0
    capsys.readouterr()
    assert main(["average-models", str(tmp_path / "avg"), str(a), str(b)]) == 2
    assert "exists" in capsys.readouterr().err
    _train_two_steps("recipes/avsr_tiny.yaml", corpus, tmp_path / "av")
    assert main(["average-models", str(tmp_path / "x"), str(a), str(tmp_path / "av" / "final" / "model")]) == 2
    assert "other names" in capsys.readouterr().err  # the AVSR model has a video projector
    assert not (tmp_path / "x").exists() and not (tmp_path / ".tmp-x").exists()
    assert main(["average-models", str(tmp_path / "y"), str(a), str(b), "--weights", "1"]) == 2
    assert "1 weight(s) for 2" in capsys.readouterr().err


def test_evaluate_scores_several_manifests_with_one_model_load(corpus, tmp_path, capsys, monkeypatch):
    """--manifest repeated (with as many --out): the model loads once, each manifest gets the report and summary
    line a call of its own gives (the noise of --snr drawn per utterance as alone), in order."""
    out = tmp_path / "run"
    assert main(["train", "recipes/asr_tiny.yaml", f"data.train_manifest={corpus / 'train.jsonl'}",
                 f"train.output_dir={out}", "train.max_steps=2", "train.save_every=0"]) == 0
    model_dir = str(out / "final" / "model")
    lines = (corpus / "train.jsonl").read_text().splitlines()
    m1, m2 = corpus / "first3.jsonl", corpus / "next5.jsonl"  # beside the clips: their paths are relative
    m1.write_text("\n".join(lines[:3]) + "\n")
    m2.write_text("\n".join(lines[3:8]) + "\n")
    for i, m in enumerate((m1, m2)):
        assert main(["evaluate", "--model", model_dir, "--manifest", str(m), "--snr", "5",
                     "--out", str(tmp_path / f"alone{i}.json")]) == 0
    capsys.readouterr()
    import mmlora.pipelines as pipelines

    loads = []
    real = pipelines.load_pipeline
    monkeypatch.setattr(pipelines, "load_pipeline", lambda *a, **k: loads.append(a) or real(*a, **k))
    assert main(["evaluate", "--model", model_dir, "--snr", "5", "--manifest", str(m1), "--out",
                 str(tmp_path / "both0.json"), "--manifest", str(m2), "--out", str(tmp_path / "both1.json")]) == 0
    assert len(loads) == 1
    summaries = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()[-2:]]
    assert [s["manifest"] for s in summaries] == [str(m1), str(m2)] and [s["n"] for s in summaries] == [3, 5]
    for i in range(2):
        alone, both = (json.loads((tmp_path / f"{k}{i}.json").read_text()) for k in ("alone", "both"))
        alone.pop("tokens_per_second", None)
        both.pop("tokens_per_second", None)
        assert both == alone
    assert main(["evaluate", "--model", model_dir, "--manifest", str(m1), "--manifest", str(m2),
                 "--out", str(tmp_path / "x.json")]) == 2
    assert "2 --manifest but 1 --out" in capsys.readouterr().err
    # noise given once per --manifest: each pair scored in its own condition, as a call of its own scores it
    conds = [("none", "babble", "3,6"), ("5", "babble", "1,1"), ("-5", "white", "3,6")]
    for i, (snr, kind, talk) in enumerate(conds):
        assert main(["evaluate", "--model", model_dir, "--manifest", str(m1), "--snr", snr, "--noise", kind,
                     "--noise-talkers", talk, "--out", str(tmp_path / f"c_alone{i}.json")]) == 0
    argv = ["evaluate", "--model", model_dir]
    for i, (snr, kind, talk) in enumerate(conds):
        argv += ["--manifest", str(m1), "--out", str(tmp_path / f"c_one{i}.json"), "--snr", snr, "--noise", kind,
                 "--noise-talkers", talk]
    capsys.readouterr()
    assert main(argv) == 0
    summaries = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()[-3:]]
    assert [s["snr_db"] for s in summaries] == [None, 5.0, -5.0] and summaries[1]["noise_talkers"] == [1, 1]
    reports = []
    for i in range(3):
        alone, one = (json.loads((tmp_path / f"{k}{i}.json").read_text()) for k in ("c_alone", "c_one"))
        alone.pop("tokens_per_second", None)
        one.pop("tokens_per_second", None)
        assert one == alone
        reports.append(one)
    # each report names its own condition (the tiny model's hypotheses are empty: the reports' equality with the
    # single calls is the check that each pair's audio was mixed as asked)
    assert [(r["snr_db"], r["noise"]) for r in reports] == [(None, None), (5.0, "babble"), (-5.0, "white")]
    assert main(["evaluate", "--model", model_dir, "--manifest", str(m1), "--manifest", str(m2),
                 "--manifest", str(m1), "--snr", "0", "--snr", "5"]) == 2
    assert "2 --snr for 3 --manifest" in capsys.readouterr().err
    assert main(["evaluate", "--model", model_dir, "--manifest", str(m1), "--snr", "loud"]) == 2
    assert "--snr takes a number of dB or 'none', got 'loud'" in capsys.readouterr().err


def test_the_cpu_loads_the_llm_in_float32_unless_told(corpus, tmp_path, capsys):
    """A model saved with a bfloat16 LLM (the release, trained on the GPU) loads in float32 on the CPU (bfloat16
    matmuls without the CPU's support decoded 2.7x slower, docs/PERFORMANCE.md); `dtype=` / `--dtype` choose
    another, and the evaluate report records the LLM's dtype."""
    import torch

    from mmlora.pipelines import load_pipeline

    _train_two_steps("recipes/asr_tiny.yaml", corpus, tmp_path / "run")
    model_dir = tmp_path / "run" / "final" / "model"
    cfg_path = model_dir / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["model"]["llm"]["dtype"] = "bfloat16"
    cfg_path.write_text(json.dumps(cfg))
    assert load_pipeline(model_dir, device="cpu").model.llm.dtype == torch.float32
    assert load_pipeline(model_dir, device="cpu", dtype="bfloat16").model.llm.dtype == torch.bfloat16
    m = str(corpus / "train.jsonl")
    for flag, want in (([], "float32"), (["--dtype", "bfloat16"], "bfloat16")):
        out = tmp_path / f"r{want}.json"
        assert main(["evaluate", "--model", str(model_dir), "--manifest", m, "--device", "cpu", "--max-samples", "2",
                     "--out", str(out), *flag]) == 0
        assert json.loads(out.read_text())["decoding"]["llm_dtype"] == want
    with pytest.raises(SystemExit):  # argparse: not one of the choices
        main(["transcribe", "--model", str(model_dir), "--dtype", "float64", str(corpus / "u1.flac")])
