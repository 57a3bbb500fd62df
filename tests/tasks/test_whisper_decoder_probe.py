"""scripts/whisper_decoder_probe.py: training Whisper's own decoder on our clips (a CPU probe, session 48)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import load_script

ROOT = Path(__file__).resolve().parents[2]
CLIPS = ROOT / "tests" / "data" / "speech" / "test.jsonl"


def test_batch_loss_is_the_mean_negative_log_likelihood_of_each_transcript_scored_alone():
    # the reference scorer and tiny decoder of the judge's tests ("encoders" on the path is the package)
    ref = load_script("judge_tests", "tests/encoders/test_whisper_judge.py")
    tok = ref.tokenizer()
    dec = ref.tiny_decoder(tok.get_vocab_size())
    start, eot = [1, 7], 2
    texts = ["the cat sat", "a", "the cat sat on the mat today"]
    targets = [tok.encode(" " + t, add_special_tokens=False).ids for t in texts]
    g = torch.Generator().manual_seed(0)
    frames = [torch.randn(30, 32, generator=g) for _ in texts]
    got = load_script("whisper_decoder_probe").batch_loss(dec, start, eot, frames, targets)
    # each transcript's tokens and <|endoftext|> after the start tokens, full vocabulary, one by one
    want = -sum(ref.alone(dec, tok, start, eot, f, t) for f, t in zip(frames, texts)) / sum(len(t) + 1 for t in targets)
    assert float(got.detach()) == pytest.approx(want, rel=1e-4)
    got.backward()  # the loss trains the decoder
    assert dec.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0


def test_batch_loss_adds_the_kl_from_whisper_s_own_decoder_on_every_target_position():
    ref = load_script("judge_tests", "tests/encoders/test_whisper_judge.py")
    tok = ref.tokenizer()
    dec, own = ref.tiny_decoder(tok.get_vocab_size()), ref.tiny_decoder(tok.get_vocab_size())
    with torch.no_grad():
        for p in dec.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    start, eot = [1, 7], 2
    targets = [tok.encode(" " + t, add_special_tokens=False).ids for t in ("the cat sat", "a", "on the mat")]
    g = torch.Generator().manual_seed(1)
    frames = [torch.randn(30, 32, generator=g) for _ in targets]
    loss = load_script("whisper_decoder_probe").batch_loss
    ce = float(loss(dec, start, eot, frames, targets).detach())
    assert float(loss(dec, start, eot, frames, targets, own, 0.0)) == ce  # no weight: the cross-entropy alone
    assert float(loss(dec, start, eot, frames, targets, dec, 2.0)) == pytest.approx(ce, abs=1e-6)  # KL to itself: 0
    # the reference: each transcript alone, KL(own || dec) at each position that predicts a target token
    kls = []
    with torch.no_grad():
        for f, t in zip(frames, targets):
            seq = torch.tensor([start + t])
            lp = [torch.log_softmax(d(input_ids=seq, encoder_hidden_states=f[None]).last_hidden_state[0]
                                    @ d.embed_tokens.weight.T, -1) for d in (dec, own)]
            for i in range(len(start) - 1, seq.shape[1]):  # the positions that predict t's tokens and <|endoftext|>
                kls.append(float(torch.nn.functional.kl_div(lp[0][i], lp[1][i], log_target=True, reduction="sum")))
    got = loss(dec, start, eot, frames, targets, own, 0.5)
    assert float(got) == pytest.approx(ce + 0.5 * sum(kls) / len(kls), rel=1e-4)
    got.backward()
    assert all(p.grad is None for p in own.parameters())  # the teacher is not trained
    # --kl-view base: the teacher reads other frames (the clips through the encoder before training)
    base = [torch.randn(30, 32, generator=g) for _ in targets]
    kls = []
    with torch.no_grad():
        for f, b, t in zip(frames, base, targets):
            seq = torch.tensor([start + t])
            lp = [torch.log_softmax(d(input_ids=seq, encoder_hidden_states=x[None]).last_hidden_state[0]
                                    @ d.embed_tokens.weight.T, -1) for d, x in ((dec, f), (own, b))]
            for i in range(len(start) - 1, seq.shape[1]):
                kls.append(float(torch.nn.functional.kl_div(lp[0][i], lp[1][i], log_target=True, reduction="sum")))
    got = loss(dec, start, eot, frames, targets, own, 0.5, base)
    assert float(got) == pytest.approx(ce + 0.5 * sum(kls) / len(kls), rel=1e-4)
    assert float(loss(dec, start, eot, frames, targets, dec, 2.0, base)) > ce + 1e-3  # itself on other frames: > 0


def test_read_clips_resolves_audio_and_samples_reproducibly():
    script = load_script("whisper_decoder_probe")
    rows = [json.loads(x) for x in CLIPS.read_text().splitlines()]
    every = script.read_clips(str(CLIPS))
    assert [(t, i) for _, t, i in every] == [(r["text"], r["id"]) for r in rows]
    assert all(p.is_file() for p, _, _ in every)
    some = script.read_clips(str(CLIPS), limit=3, seed=4)
    assert len(some) == 3 and some == script.read_clips(str(CLIPS), limit=3, seed=4) and set(some) <= set(every)


def test_saved_weights_are_every_trained_one_and_load_into_the_judge(tmp_path):
    from safetensors.torch import load_file

    from mmlora.encoders.whisper_judge import WhisperJudge

    ref = load_script("judge_tests", "tests/encoders/test_whisper_judge.py")
    tok = ref.tokenizer()
    dec = ref.tiny_decoder(tok.get_vocab_size())
    load_script("whisper_decoder_probe").save_trained(dec.state_dict(), str(tmp_path / "w" / "dec.safetensors"))
    saved = load_file(str(tmp_path / "w" / "dec.safetensors"))
    assert set(saved) == set(dec.state_dict()) - {"embed_tokens.weight"}
    assert not list((tmp_path / "w").glob("*.tmp"))
    other = ref.tiny_decoder(tok.get_vocab_size())
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.5)
    WhisperJudge(other, tok, [1, 7], 2).load_decoder(saved)
    for k, v in dec.state_dict().items():
        if k != "embed_tokens.weight":
            assert torch.equal(other.state_dict()[k], v), k


def test_training_clips_are_changed_as_often_as_asked_and_validation_clips_never():
    script = load_script("whisper_decoder_probe")
    calls = []

    class Judge:  # records what generate's judge would read: each wave's length and warp, one call a batch
        def frames_many(self, waves, encoder=None, warps=None, grad=False):
            assert not grad  # the model's encoder: no graph
            calls.append([(w.shape[0], None if warps is None else warps[i]) for i, w in enumerate(waves)])
            return waves

    clip = script.read_clips(str(CLIPS))[0][0]
    frames, train_frames = script.clip_readers(Judge(), None, augment=0.0)
    plain = frames([clip])[0]
    assert calls[-1] == [(plain.shape[0], None)]
    assert torch.equal(train_frames([clip])[0], plain) and calls[-1] == [(plain.shape[0], None)]
    calls.clear()
    frames, train_frames = script.clip_readers(Judge(), None, augment=0.5, seed=3)
    got = train_frames([clip] * 40)
    assert len(calls) == 1 and len(calls[0]) == 40  # one batch
    changed = [n != plain.shape[0] for n, _ in calls[0]]  # a changed clip has other lengths (speed, room tone)
    assert 8 <= sum(changed) <= 32  # about half, drawn per clip
    for c, (n, w) in zip(changed, calls[0]):
        assert (0.9 <= w <= 1.1) if c else w == 1.0  # and a warp; an unchanged clip beside it: factor 1
    assert frames([clip, clip])[1].shape == plain.shape and calls[-1][1] == (plain.shape[0], None)  # validation
    again = script.clip_readers(Judge(), None, augment=0.5, seed=3)[1]
    halves = again([clip] * 25) + again([clip] * 15)  # the same seed: the same changes, however the batches fall
    for y, z in zip(got, halves):
        torch.testing.assert_close(z, y)


def test_a_teacher_encoder_reads_the_same_changed_clips_and_warps_without_a_graph():
    """--kl-view base: train_frames gives the teacher's frames of the very clips the trained encoder read (the same
    changes, the same warps), through the teacher's encoder and never with a graph."""
    script = load_script("whisper_decoder_probe")
    calls = []

    class Judge:
        def frames_many(self, waves, encoder=None, warps=None, grad=False):
            calls.append((encoder, [w.clone() for w in waves], warps, grad))
            return [w * (2.0 if encoder == "teacher" else 1.0) for w in waves]

    clip = script.read_clips(str(CLIPS))[0][0]
    _, train_frames = script.clip_readers(Judge(), "trained", augment=0.5, seed=3, grad=True,
                                          teacher_encoder="teacher")
    got, teacher = train_frames([clip] * 12)
    (e1, w1, k1, g1), (e2, w2, k2, g2) = calls
    assert (e1, g1, e2, g2) == ("trained", True, "teacher", False)
    assert k1 is not None and k2 == k1 and any(k != 1.0 for k in k1)  # some clips changed, their warps passed
    assert all(torch.equal(a, b) for a, b in zip(w1, w2))  # the same changed clips
    assert all(torch.equal(t, 2 * f) for t, f in zip(teacher, got))


def test_the_cross_attention_part_trains_only_what_reads_the_frames():
    script = load_script("whisper_decoder_probe")
    ref = load_script("judge_tests", "tests/encoders/test_whisper_judge.py")
    dec = ref.tiny_decoder(ref.tokenizer().get_vocab_size())
    every = script.decoder_params(dec, "all")
    names = {n for n, p in dec.named_parameters() if p.requires_grad}
    assert names == {n for n, _ in dec.named_parameters()} - {"embed_tokens.weight"} and len(every) == len(names)
    cross = script.decoder_params(dec, "cross")
    names = {n for n, p in dec.named_parameters() if p.requires_grad}
    assert names and all(".encoder_attn." in n or ".encoder_attn_layer_norm." in n for n in names)
    assert {n.split(".", 2)[2].split(".")[0] for n in names} == {"encoder_attn", "encoder_attn_layer_norm"}
    assert len(cross) == len(names) and not dec.layers[0].self_attn.q_proj.weight.requires_grad
    assert script.decoder_params(dec, "none") == [] and not any(p.requires_grad for p in dec.parameters())
    with pytest.raises(ValueError, match="--train-part"):
        script.decoder_params(dec, "mlp")


def _tiny_encoder(lora: bool = True):
    from mmlora.encoders import build_encoder
    from mmlora.encoders.registry import config_from_dict
    from mmlora.lora import LoRASpec
    from mmlora.model import attach_encoder_lora

    enc = build_encoder(config_from_dict({"kind": "whisper", "path": "random:tiny", "mask_padding": True}))
    if lora:
        attach_encoder_lora(enc, LoRASpec(rank=2, alpha=4), None)
    return enc


def test_the_encoder_trains_only_its_lora_and_one_without_is_refused():
    script = load_script("whisper_decoder_probe")
    enc = _tiny_encoder()
    for p in enc.parameters():
        p.requires_grad_(True)
    got = script.encoder_params(enc)
    names = {n for n, p in enc.named_parameters() if p.requires_grad}
    assert names and all(".adapters." in n for n in names) and len(got) == len(names)
    assert len(names) == 2 * sum(1 for n, _ in enc.named_parameters() if n.endswith(".A"))
    with pytest.raises(ValueError, match="no LoRA"):
        script.encoder_params(_tiny_encoder(lora=False))


def test_pack_script_writes_what_a_judge_unpacks(tmp_path, monkeypatch, capsys):
    from safetensors.torch import load_file, save_file

    from mmlora.encoders.whisper_judge import WhisperJudge, unpack_decoder_state

    ref = load_script("judge_tests", "tests/encoders/test_whisper_judge.py")
    tok = ref.tokenizer()
    own = ref.tiny_decoder(tok.get_vocab_size(), d_model=64)  # rows of 64 inputs: one group each
    trained = ref.tiny_decoder(tok.get_vocab_size(), d_model=64)
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    state = {k: v.contiguous() for k, v in trained.state_dict().items() if k != "embed_tokens.weight"}
    save_file(state, str(tmp_path / "trained.safetensors"))
    monkeypatch.setattr(WhisperJudge, "load", classmethod(lambda cls, name: WhisperJudge(own, tok, [1, 7], 2)))
    script = load_script("pack_whisper_decoder")
    assert script.main([str(tmp_path / "trained.safetensors"), str(tmp_path / "m" / "dec.safetensors")]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["bits"] == 4 and report["bytes"]["dst"] < report["bytes"]["src"] / 3
    assert 0 < report["worst_error_of_a_weights_largest"] < 0.05
    packed = load_file(str(tmp_path / "m" / "dec.safetensors"))
    assert any(k.endswith(".qdelta") for k in packed) and not list((tmp_path / "m").glob("*.tmp"))
    back = unpack_decoder_state(packed, own.state_dict())
    assert set(back) == set(state)
    # --mix: the share of the change kept; 0 gives Whisper's own weights back exactly, 0.5 halfway
    for mix in (0.0, 0.5):
        assert script.main([str(tmp_path / "trained.safetensors"), str(tmp_path / f"mix{mix}.safetensors"),
                            "--mix", str(mix)]) == 0
        got = unpack_decoder_state(load_file(str(tmp_path / f"mix{mix}.safetensors")), own.state_dict())
        for k, v in state.items():
            want = own.state_dict()[k] + mix * (v - own.state_dict()[k])
            if mix == 0:
                assert torch.equal(got[k], own.state_dict()[k]), k
            else:
                torch.testing.assert_close(got[k], want, atol=0.05 * v.abs().max().item(), rtol=0, msg=k)
    with pytest.raises(SystemExit):
        script.main([str(tmp_path / "trained.safetensors"), str(tmp_path / "x.safetensors"), "--mix", "1.5"])
    with pytest.raises(SystemExit, match="nothing.safetensors: not a readable safetensors file"):
        script.main([str(tmp_path / "nothing.safetensors"), str(tmp_path / "x.safetensors")])


def test_read_greedy_scores_each_clips_proposal_and_an_unended_one_as_empty():
    script = load_script("whisper_decoder_probe")
    clips = [(Path("a.flac"), "the cat sat", "a"), (Path("b.flac"), "on the mat", "b")]

    class Judge:
        decoder = torch.nn.Linear(1, 1).train()

        def propose_many(self, frames, max_tokens):
            assert max_tokens == 7 and not self.decoder.training  # read in eval mode
            return [{"fa": "the cat sat", "fb": None}[f] for f in frames]
    r, hyps = script.read_greedy(Judge(), clips, ["fa", "fb"], 7)
    assert hyps == ["the cat sat", ""]
    assert (r.ref_words, sum(u.errors for u in r.utterances)) == (6, 3)  # the second clip: 3 deletions


def test_main_chooses_on_every_validation_manifest_and_stops_at_max_seconds(tmp_path, monkeypatch, capsys):
    import mmlora
    from mmlora.encoders.whisper_judge import WhisperJudge

    ref = load_script("judge_tests", "tests/encoders/test_whisper_judge.py")
    tok = ref.tokenizer()
    judge = WhisperJudge(ref.tiny_decoder(tok.get_vocab_size()), tok, [1, 7], 2, padded=torch.nn.Identity())
    seen = []  # the trained decoder the model folder carries when the judge is asked for (the release has one)
    encs = []  # the encoder the judge reads: the model's, or with --init model the folder's judge encoder
    monkeypatch.setattr(judge, "frames_many", lambda waves, encoder=None, warps=None, grad=False:
                        encs.append(encoder) or [torch.randn(30, 32) for _ in waves])
    model = type("M", (), {"whisper_judge": lambda self: seen.append(self.whisper_decoder_state) or judge,
                           "encoders": {"audio": "model's"}, "judge_encoder": lambda self: "judge's",
                           "whisper_decoder_state": {"w": 1}})()
    monkeypatch.setattr(mmlora, "load_pipeline", lambda path, device="cpu": type("P", (), {"model": model})())
    rows = CLIPS.read_text().splitlines()
    (tmp_path / "a.jsonl").write_text("\n".join(rows[:2]) + "\n")  # the clips' audio beside them: link the folder
    (tmp_path / "b.jsonl").write_text("\n".join(rows[2:5]) + "\n")
    short = [json.dumps({**json.loads(r), "text": " ".join(json.loads(r)["text"].split()[:3])}) for r in rows]
    (tmp_path / "t.jsonl").write_text("\n".join(short) + "\n")  # within the tiny decoder's 64 positions
    for f in CLIPS.parent.iterdir():
        if not (tmp_path / f.name).exists():
            (tmp_path / f.name).symlink_to(f)
    script = load_script("whisper_decoder_probe")
    args = ["--train", str(tmp_path / "t.jsonl"), "--val", f"{tmp_path / 'a.jsonl'},{tmp_path / 'b.jsonl'}", "--test",
            str(tmp_path / "a.jsonl"), "--epochs", "2", "--batch-size", "4", "--max-tokens", "4",
            "--out", str(tmp_path / "r.json")]
    assert script.main(args + ["--max-seconds", "0"]) == 0
    out = json.loads((tmp_path / "r.json").read_text())
    hist = out["history"]
    words = [sum(len(json.loads(r)["text"].split()) for r in part) for part in (rows[:2], rows[2:5])]
    assert hist[-1]["step"] == 1 and out["summary"]["steps_run"] == 1 and out["summary"]["steps"] == 6
    assert hist[0]["val_errors"] == words  # untrained, 4 tokens: no transcript ends, every word is deleted
    for h in hist:  # both manifests' errors, and the WER chosen on is theirs together
        assert len(h["val_errors"]) == 2 and h["val_wer"] == pytest.approx(sum(h["val_errors"]) / sum(words), abs=1e-4)
    for bad in ("0", "-2"):  # no step to stop after: refused, not run to the end silently
        with pytest.raises(SystemExit):
            script.main(args + ["--stop-step", bad])
        assert "--stop-step: a step of training" in capsys.readouterr().err
    assert script.main(args + ["--stop-step", "3"]) == 0  # the same stop by steps: after step 3 of 6
    assert json.loads((tmp_path / "r.json").read_text())["history"][-1]["step"] == 3
    assert script.main(args + ["--kl", "0.5"]) == 0  # without the guard: every planned step
    summary = json.loads((tmp_path / "r.json").read_text())["summary"]
    assert summary["steps_run"] == 6 and summary["kl"] == 0.5 and summary["train_part"] == "all"
    trained = []  # the weights given to the optimizer (decoder_params is tested above)
    real = script.decoder_params
    monkeypatch.setattr(script, "decoder_params", lambda d, part: trained.append(part) or real(d, part))
    assert script.main(args + ["--train-part", "cross"]) == 0
    assert trained == ["cross"] and json.loads((tmp_path / "r.json").read_text())["summary"]["train_part"] == "cross"
    assert seen[-1] is None and json.loads((tmp_path / "r.json").read_text())["summary"]["init"] == "own"  # default
    model.whisper_decoder_state = {"w": 1}
    assert set(encs) == {"model's"}
    encs.clear()
    assert script.main(args + ["--init", "model", "--stop-step", "1"]) == 0  # from the folder's trained decoder
    assert seen[-1] == {"w": 1} and json.loads((tmp_path / "r.json").read_text())["summary"]["init"] == "model"
    assert set(encs) == {"judge's"}


def test_main_trains_a_copy_of_the_encoders_lora_and_keeps_the_chosen_steps(tmp_path, monkeypatch):
    """--encoder-lr: the judge reads a copy of the model's encoder whose LoRA trains (the model's stays), validation
    reads it afresh, the chosen step's LoRA is what the test reads and --save-encoder writes; the untrained read is
    the model's own encoder's."""
    import copy

    import mmlora
    from mmlora.encoders import build_encoder
    from mmlora.encoders.registry import config_from_dict
    from mmlora.encoders.whisper_judge import WhisperJudge
    from mmlora.data.media import load_audio
    from mmlora.lora import load_adapters
    from mmlora.metrics.wer import compute_wer

    ref = load_script("judge_tests", "tests/encoders/test_whisper_judge.py")
    tok = ref.tokenizer()
    torch.manual_seed(0)
    padded = build_encoder(config_from_dict({"kind": "whisper", "path": "random:tiny", "full_context": True}))
    judge = WhisperJudge(ref.tiny_decoder(tok.get_vocab_size()), tok, [1, 7], 2, padded=padded)
    own = _tiny_encoder()
    before = {n: p.clone() for n, p in own.state_dict().items()}
    model = type("M", (), {"whisper_judge": lambda self: judge, "encoders": {"audio": own},
                           "whisper_decoder_state": None})()
    monkeypatch.setattr(mmlora, "load_pipeline", lambda path, device="cpu": type("P", (), {"model": model})())
    rows = CLIPS.read_text().splitlines()
    short = [json.dumps({**json.loads(r), "text": " ".join(json.loads(r)["text"].split()[:3])}) for r in rows]
    (tmp_path / "v.jsonl").write_text("\n".join(short[:3]) + "\n")
    (tmp_path / "t.jsonl").write_text("\n".join(short) + "\n")
    for f in CLIPS.parent.iterdir():
        if not (tmp_path / f.name).exists():
            (tmp_path / f.name).symlink_to(f)
    script = load_script("whisper_decoder_probe")
    reads, real = [], script.read_greedy

    def read(judge, clips, frames, max_tokens):  # every validation after step 0 perfect: the first one is chosen
        reads.append([f.detach().clone() for f in frames])
        if len(reads) in (2, 3):
            return compute_wer([t for _, t, _ in clips], [t for _, t, _ in clips], [i for _, _, i in clips]), []
        return real(judge, clips, frames, max_tokens)
    monkeypatch.setattr(script, "read_greedy", read)
    v = str(tmp_path / "v.jsonl")
    assert script.main(["--train", str(tmp_path / "t.jsonl"), "--val", v, "--test", v, "--epochs", "2",
                        "--batch-size", "4", "--max-tokens", "4", "--eval-every", "2", "--stop-step", "4",
                        "--encoder-lr", "1e-2", "--train-part", "none", "--out", str(tmp_path / "r.json"),
                        "--save-encoder", str(tmp_path / "enc")]) == 0
    summary = json.loads((tmp_path / "r.json").read_text())["summary"]
    assert (summary["best_step"], summary["encoder_lr"], summary["train_part"]) == (2, 0.01, "none")
    assert len(reads) == 5  # steps 0, 2, 4; the test with the chosen step's, then with the model's own encoder
    for k, v0 in before.items():  # the model's own encoder is untouched
        assert torch.equal(own.state_dict()[k], v0), k
    diff = lambda x, y: max(float((a - b).abs().max()) for a, b in zip(x, y))  # noqa: E731
    assert diff(reads[1], reads[0]) > 1e-3 and diff(reads[2], reads[1]) > 1e-3  # validation read the training LoRA
    assert diff(reads[3], reads[1]) < 1e-4  # the test read step 2's, not the last step's
    assert diff(reads[4], reads[0]) < 1e-4  # untrained: the model's own encoder
    saved = load_adapters(copy.deepcopy(own), tmp_path / "enc")  # the same base weights, the saved LoRA
    with torch.no_grad():
        again = judge.frames_many([load_audio(p) for p, _, _ in script.read_clips(v)], saved)
    assert diff(again, reads[3]) < 1e-4  # the saved LoRA is the chosen step's
    # --kl-view base: the teacher reads the model's encoder beside the training copy (the KL itself: test above)
    assert script.main(["--train", str(tmp_path / "t.jsonl"), "--val", v, "--test", v, "--batch-size", "4",
                        "--max-tokens", "4", "--eval-every", "2", "--stop-step", "2", "--encoder-lr", "1e-2",
                        "--kl", "0.5", "--kl-view", "base", "--out", str(tmp_path / "kl.json")]) == 0
    assert json.loads((tmp_path / "kl.json").read_text())["summary"]["kl_view"] == "base"
    for bad in (["--train-part", "none"], ["--save-encoder", str(tmp_path / "x")], ["--encoder-lr", "-1"],
                ["--kl-view", "base", "--kl", "1"], ["--kl-view", "base", "--encoder-lr", "1e-2"]):
        with pytest.raises(SystemExit):
            script.main(["--train", v, "--val", v, "--test", v] + bad)


def test_anchor_targets_are_whispers_own_greedy_transcript_of_the_teachers_frames(monkeypatch):
    """--anchor: the clips through both encoders (the trained one with a graph, the model's without), and as targets
    the token ids of the own decoder's greedy transcript of the model's frames, an unended one's tokens so far."""
    import copy

    from mmlora.encoders.whisper_judge import WhisperJudge

    ref = load_script("judge_tests", "tests/encoders/test_whisper_judge.py")
    tok = ref.tokenizer()
    g = torch.Generator().manual_seed(5)
    views = {enc: [torch.randn(30, 32, generator=g) for _ in range(4)] for enc in ("model's", "trained")}
    calls = []
    judge = WhisperJudge(ref.tiny_decoder(tok.get_vocab_size()), tok, [1, 7], 23, padded=torch.nn.Identity())
    monkeypatch.setattr(judge, "frames_many", lambda waves, encoder=None, warps=None, grad=False:
                        calls.append((len(waves), encoder, grad, torch.is_grad_enabled())) or views[encoder])
    own = copy.copy(judge)
    own.decoder = ref.tiny_decoder(tok.get_vocab_size())
    with torch.no_grad():
        for p in own.decoder.parameters():  # another decoder than the trained judge's
            p.add_(torch.randn(p.shape, generator=g) * 0.2)
    paths = [p for p, _, _ in load_script("whisper_decoder_probe").read_clips(str(CLIPS))][:4]
    fs, ts, targets = load_script("whisper_decoder_probe").anchor_batch(judge, own, "model's", "trained", paths, 6,
                                                                        grad=True)
    assert fs is views["trained"] and ts is views["model's"]
    # the model's frames without a graph, the trained encoder's with one; each clip loaded once for both
    assert calls == [(4, "model's", False, False), (4, "trained", True, True)]
    want = [ref.greedy_by_definition(own.decoder, tok, [1, 7], 23, f, 6, partial=True) for f in views["model's"]]
    assert targets == [judge.token_ids(w) for w in want]
    mine = [ref.greedy_by_definition(judge.decoder, tok, [1, 7], 23, f, 6, partial=True) for f in views["model's"]]
    assert mine != want  # the own decoder's transcripts, not the trained judge's
    calls.clear()  # the judge reading the model's encoder itself: one read, its frames the teacher's
    fs, ts, again = load_script("whisper_decoder_probe").anchor_batch(judge, own, "model's", "model's", paths, 6)
    assert fs is ts is views["model's"] and again == targets and calls == [(4, "model's", False, False)]
    # targets known from an earlier draw are kept as they are; only the others are decoded, from their own frames
    proposed = []
    real_propose = own.propose_many
    monkeypatch.setattr(own, "propose_many", lambda frames, *a, **k: proposed.append(len(frames))
                        or real_propose(frames, *a, **k))
    known = [[5, 5], None, [6], None]
    _, _, mixed = load_script("whisper_decoder_probe").anchor_batch(judge, own, "model's", "model's", paths, 6,
                                                                    known=known)
    assert mixed == [[5, 5], targets[1], [6], targets[3]] and proposed == [2] and known[1] is None
    _, _, cached = load_script("whisper_decoder_probe").anchor_batch(judge, own, "model's", "model's", paths, 6,
                                                                     known=targets)
    assert cached == targets and proposed == [2]  # all known: Whisper's own decoder is not run


def test_main_adds_the_anchor_term_and_can_keep_the_last_step(tmp_path, monkeypatch, capsys):
    import mmlora
    from mmlora.encoders.whisper_judge import WhisperJudge

    ref = load_script("judge_tests", "tests/encoders/test_whisper_judge.py")
    tok = ref.tokenizer()
    judge = WhisperJudge(ref.tiny_decoder(tok.get_vocab_size()), tok, [1, 7], 2, padded=torch.nn.Identity())

    def frames_many(waves, encoder=None, warps=None, grad=False):  # each clip's own frames, whichever encoder
        return [torch.randn(30, 32, generator=torch.Generator().manual_seed(len(w))) for w in waves]
    monkeypatch.setattr(judge, "frames_many", frames_many)
    model = type("M", (), {"whisper_judge": lambda self: judge, "encoders": {"audio": "model's"},
                           "whisper_decoder_state": None})()
    monkeypatch.setattr(mmlora, "load_pipeline", lambda path, device="cpu": type("P", (), {"model": model})())
    rows = CLIPS.read_text().splitlines()
    short = [json.dumps({**json.loads(r), "text": " ".join(json.loads(r)["text"].split()[:3])}) for r in rows]
    (tmp_path / "t.jsonl").write_text("\n".join(short) + "\n")
    (tmp_path / "h.jsonl").write_text("\n".join(json.dumps({**json.loads(r), "text": ""}) for r in rows) + "\n")
    for f in CLIPS.parent.iterdir():
        if not (tmp_path / f.name).exists():
            (tmp_path / f.name).symlink_to(f)
    script = load_script("whisper_decoder_probe")
    untrained = {k: v.clone() for k, v in judge.decoder.state_dict().items()}
    anchors, losses, real_anchor, real_loss = [], [], script.anchor_batch, script.batch_loss

    known_at, decoded = [], {}

    def anchor_batch(judge, own, teacher_encoder, encoder, paths, max_tokens, grad=False, known=None):
        anchors.append((len(paths), teacher_encoder, own.decoder is not judge.decoder, max_tokens))
        for k, v in own.decoder.state_dict().items():  # the teacher: Whisper's own decoder as it was, never trained
            assert torch.equal(v, untrained[k]), k
        out = real_anchor(judge, own, teacher_encoder, encoder, paths, max_tokens, grad, known)
        known_at.append([k is not None for k in known])
        for p, k, t in zip(paths, known, out[2]):  # a clip known from an earlier draw: the targets decoded then
            assert k is None or decoded[p] == t == k
            decoded.setdefault(p, t)
        return out

    def batch_loss(*args, **kw):
        out = real_loss(*args, **kw)
        losses.append((kw.get("ce", 1.0), args[6] if len(args) > 6 else kw.get("kl", 0.0), float(out.detach())))
        return out
    monkeypatch.setattr(script, "anchor_batch", anchor_batch)
    monkeypatch.setattr(script, "batch_loss", batch_loss)
    t = str(tmp_path / "t.jsonl")
    args = ["--train", t, "--val", t, "--test", t, "--batch-size", "4", "--max-tokens", "4", "--eval-every", "100",
            "--lr", "1e-2", "--epochs", "2", "--out", str(tmp_path / "r.json")]
    assert script.main(args + ["--anchor", str(tmp_path / "h.jsonl"), "--anchor-kl", "0.5", "--anchor-batch", "3",
                               "--choose", "last"]) == 0
    summary = json.loads((tmp_path / "r.json").read_text())["summary"]
    steps = summary["steps"]
    assert anchors == [(3, "model's", True, 4)] * steps  # every step: 3 anchor clips through the model's encoder
    # each clip decoded by Whisper's own decoder once, at its first draw; its later draws reuse those targets
    assert sum(not k for step in known_at for k in step) == len(decoded) and any(any(step) for step in known_at)
    # each step's loss: the transcripts' (cross-entropy) and the anchor's (its KL alone, weight 1 inside)
    assert [(ce, kl) for ce, kl, _ in losses] == [(1.0, 0.0), (0.0, 1.0)] * steps
    assert losses[1][2] == pytest.approx(0.0, abs=1e-5)  # step 1: the trained decoder is still the teacher
    assert max(v for ce, _, v in losses if ce == 0.0) > 1e-4  # later it has moved away from it, and is held
    assert (summary["anchor_kl"], summary["anchor_batch"], summary["choose"]) == (0.5, 3, "last")
    assert summary["best_step"] == steps  # --choose last: the last step whatever validation says
    for bad in (["--anchor-kl", "0"], ["--anchor-batch", "0"]):
        with pytest.raises(SystemExit):
            script.main(args + ["--anchor", str(tmp_path / "h.jsonl")] + bad)
        assert "--anchor: a positive" in capsys.readouterr().err
