"""MultimodalLM: splicing, labels, routing per token / per sample / per scale, generate, save/load."""
from __future__ import annotations

import pytest
import torch

from conftest import randomize_adapters
from mmlora.data.collate import collate_samples
from mmlora.encoders.base import Encoder, Features, pad_sequence
from mmlora.llm import LLMConfig, load_llm
from mmlora.lora import LoRASpec, lora_layers
from mmlora.model import TOKEN_TYPES, ModelConfig, MultimodalLM, scale_adapter_name


class FakeEncoder(Encoder):
    """A frozen linear map of [n, 8] inputs (stands in for Whisper / EfficientNet in tests)."""

    kind = "fake"

    def __init__(self, dim=12, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.proj = torch.nn.Linear(8, dim)
        with torch.no_grad():
            self.proj.weight.copy_(torch.randn(dim, 8, generator=g))
        self.output_dim, self.rate_hz = dim, 50.0

    def preprocess_config(self):
        return {}

    def _encode(self, batch, output_hidden_states):
        x, mask = pad_sequence([self.proj(torch.as_tensor(b, dtype=torch.float32)) for b in batch])
        return Features(x * mask[..., None], mask, self.rate_hz)


def build(router="single", adapters=None, rates=(2,), media=("audio", "video"), seed=0):
    cfg = ModelConfig(
        llm=LLMConfig("random:tiny", seed=seed),
        media={m: {"projector": {"compressor": "stack", "rates": list(rates), "hidden_dim": 32}} for m in media},
        adapters=adapters if adapters is not None else {"default": LoRASpec(4, 8)},
        target_modules=["q_proj", "v_proj", "o_proj"],
        router={"kind": router} if isinstance(router, str) else router,
    )
    encs = {m: FakeEncoder(seed=i) for i, m in enumerate(media)}
    return MultimodalLM.build(cfg, encoders=encs)


def sample(text="hi there", answer="ok", audio=None, video=None, image=None, id=0):
    slots = "".join(f"<{m}>" for m, v in (("audio", audio), ("video", video), ("image", image)) if v is not None)
    s = {"id": id, "messages": [{"role": "user", "content": slots + text}, {"role": "assistant", "content": answer}]}
    for m, v in (("audios", audio), ("videos", video), ("images", image)):
        if v is not None:
            s[m] = [v]
    return s


def frames(n, seed):
    return torch.randn(n, 8, generator=torch.Generator().manual_seed(seed))


def test_text_only_with_zero_adapters_gives_the_llm_logits_exactly():
    model = build(router="single").eval()
    batch = collate_samples([sample("what is two plus two?", "four")], model.prompts)
    out = model(batch, return_logits=True)
    ids = torch.cat([s.ids for s in batch["segments"][0]])[None]
    ref_llm, _ = load_llm(LLMConfig("random:tiny", seed=0))
    assert torch.equal(out["logits"], ref_llm(ids).logits.float())
    answer = model.tokenizer("four<|im_end|>\n", add_special_tokens=False).input_ids
    assert int(out["num_tokens"]) == len(answer)  # labels on the answer (and end of turn) only


def test_media_spliced_with_markers_and_labels_only_on_answer():
    model = build().eval()
    batch = collate_samples([sample(audio=frames(9, 1), video=frames(4, 2)), sample("no media")], model.prompts)
    feats = model.encode_media(batch["media"])
    x, attn, labels, types, _ = model.assemble(batch["segments"], model.project(feats, {"audio": 2, "video": 2}))
    assert int((types[0] == TOKEN_TYPES["audio"]).sum()) == 4  # 9 frames, stack 2, remainder dropped
    assert int((types[0] == TOKEN_TYPES["video"]).sum()) == 2
    assert int((types[1] > 0).sum()) == 0
    assert (labels[types != TOKEN_TYPES["text"]] == -100).all()
    assert int(attn[1].sum()) < attn.shape[1] and int(attn[1, -1]) == 0  # right padding
    text = model.tokenizer.decode(torch.cat([s.ids for s in batch["segments"][0] if hasattr(s, "ids")]))
    assert "<audio></audio><video></video>" in text  # markers around the (removed) features
    with pytest.raises(ValueError, match="slot"):
        collate_samples([{"messages": sample(audio=frames(3, 0))["messages"]}], model.prompts)


def _delta_rows(model, run):
    """Per-token LoRA delta of the first q_proj, captured by a hook."""
    layer = lora_layers(model.llm)[0][1]
    seen = {}

    def hook(mod, inp, out):
        seen["delta"] = (out - mod.base_layer(inp[0])).detach()
        seen["x"] = inp[0].detach()

    h = layer.register_forward_hook(hook)
    try:
        run()
    finally:
        h.remove()
    return layer, seen["x"], seen["delta"]


def test_token_type_routing_sends_exactly_media_tokens_to_the_visual_lora():
    model = build(router={"kind": "token_type", "token_map": {"text": "language", "video": "visual",
                                                              "audio": "language"}},
                  adapters={"visual": LoRASpec(4, 8), "language": LoRASpec(8, 8)}).eval()
    randomize_adapters(model.llm)
    batch = collate_samples([sample(audio=frames(6, 1), video=frames(6, 2))], model.prompts)
    feats = model.encode_media(batch["media"])
    _, _, _, types, _ = model.assemble(batch["segments"], model.project(feats, {"audio": 2, "video": 2}))
    layer, x, delta = _delta_rows(model, lambda: model(batch))
    expect_vis = x @ layer.delta_weight("visual").t()
    expect_lang = x @ layer.delta_weight("language").t()
    is_vid = (types == TOKEN_TYPES["video"])[0]
    assert is_vid.sum() == 3
    assert torch.allclose(delta[0, is_vid], expect_vis[0, is_vid], atol=1e-5)
    assert torch.allclose(delta[0, ~is_vid], expect_lang[0, ~is_vid], atol=1e-5)


def test_mixed_batch_routes_each_sample_to_its_mode_adapter():
    model = build(router={"kind": "sample_mode", "mode_map": {"text": None, "audio": "speech", "vision": "vision"}},
                  adapters={"speech": LoRASpec(4, 8), "vision": LoRASpec(4, 8)}, media=("audio", "image")).eval()
    randomize_adapters(model.llm)
    batch = collate_samples([sample(audio=frames(6, 1)), sample(image=frames(4, 2)), sample("text only"),
                             sample(audio=frames(4, 3), image=frames(4, 4))], model.prompts)
    layer, x, delta = _delta_rows(model, lambda: model(batch))
    expect = {"speech": x @ layer.delta_weight("speech").t(), "vision": x @ layer.delta_weight("vision").t()}
    for b, name in enumerate(["speech", "vision", None, "vision"]):
        want = expect[name][b] if name else torch.zeros_like(delta[b])
        assert torch.allclose(delta[b], want, atol=1e-5), (b, name)


def test_matryoshka_loss_is_the_mean_over_rate_pairs_and_routes_scale_adapters():
    rates = (2, 3)
    pairs = [{"audio": a, "video": v} for a in rates for v in rates]
    adapters = {"shared": LoRASpec(4, 8), **{scale_adapter_name(p): LoRASpec(2, 4) for p in pairs}}
    model = build(router={"kind": "scale", "bank": "mss"}, adapters=adapters, rates=rates).eval()
    randomize_adapters(model.llm)
    batch = collate_samples([sample(audio=frames(12, 1), video=frames(7, 2))], model.prompts)
    total = model(batch)["loss"]
    each = [model({**batch, "rates": p})["loss"] for p in pairs]
    assert torch.allclose(total, torch.stack(each).mean(), atol=1e-6)
    assert len({round(float(e.detach()), 6) for e in each}) == 4  # rates change the result
    plan = model.routing_plan(torch.zeros(1, 3, dtype=torch.long), {"audio": 3, "video": 2})
    assert plan.shared == ("shared", "scale_a3_v2")


@pytest.mark.parametrize("bank", ["mss", "ss", "ms"])
def test_rate_pairs_in_one_pass_equal_one_pass_per_pair(bank):
    """Training with every rate pair runs one LLM pass over P·B rows (each row routed to its pair's
    adapters): loss and every gradient equal the mean of the P single-pair passes, for a batch of
    clips and answers of different lengths."""
    rates = (2, 3)
    pairs = [{"audio": a, "video": v} for a in rates for v in rates]
    adapters = {"shared": LoRASpec(4, 8), **{scale_adapter_name(p): LoRASpec(2, 4) for p in pairs}}
    model = build(router={"kind": "scale", "bank": bank}, adapters=adapters, rates=rates).train()
    randomize_adapters(model.llm)
    batch = collate_samples([sample(audio=frames(12, 1), video=frames(7, 2), answer="ok then"),
                             sample(audio=frames(5, 3), video=frames(9, 4), answer="no", id=1),
                             sample(audio=frames(17, 5), video=frames(4, 6), answer="a much longer answer", id=2)],
                            model.prompts)
    params = [p for p in model.parameters() if p.requires_grad]

    def run(fn):
        model.zero_grad(set_to_none=True)
        loss = fn()
        loss.backward()
        return loss.detach(), [None if p.grad is None else p.grad.clone() for p in params]

    calls = []
    real = model._pairs_in_one_pass
    model._pairs_in_one_pass = lambda *a, **k: calls.append(1) or real(*a, **k)
    one, g_one = run(lambda: model(batch)["loss"])
    assert calls == [1]
    each, g_each = run(lambda: torch.stack([model({**batch, "rates": p})["loss"] for p in pairs]).mean())
    assert calls == [1]  # single-pair calls take the plain path
    torch.testing.assert_close(one, each, rtol=1e-5, atol=1e-6)
    for a, b in zip(g_one, g_each):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_absent_modality_parameters_stay_in_the_graph():
    model = build(router={"kind": "sample_mode"}, adapters={"speech": LoRASpec(2, 4), "vision": LoRASpec(2, 4)},
                  media=("audio", "image")).train()
    batch = collate_samples([sample(audio=frames(6, 1))], model.prompts)
    model(batch)["loss"].backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, name
    assert all(p.grad.abs().sum() == 0 for p in model.projectors["image"].parameters())


def test_generate_batched_equals_one_by_one_and_routes_decode_steps():
    model = build(router={"kind": "sample_mode", "mode_map": {"text": None, "audio": "speech"}},
                  adapters={"speech": LoRASpec(4, 8)}, media=("audio",)).eval()
    randomize_adapters(model.llm, std=0.5)
    samples = [sample(audio=frames(10, 1)), sample("a longer text only prompt here")]
    batch = collate_samples(samples, model.prompts)
    together = model.generate(batch, max_new_tokens=6, min_new_tokens=6)
    alone = [model.generate(collate_samples([s], model.prompts), max_new_tokens=6, min_new_tokens=6)[0]
             for s in samples]
    assert together == alone
    beams = model.generate(batch, max_new_tokens=4, num_beams=3)
    assert len(beams) == 2


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA"))])
@pytest.mark.parametrize("router", [{"kind": "token_type", "token_map": {"text": "language", "audio": "speech"}},
                                    {"kind": "sample_mode", "mode_map": {"text": "language", "audio": "speech"}}])
def test_beam_search_prefills_each_prompt_once_with_the_same_beams_and_scores(router, device):
    """Beam search's prompt goes through the LLM once a sample (then its cache is repeated for the beams), not once
    a beam: the same answers and beam scores as transformers' own expansion (share_prefill=False), with left
    padding and routing by token or by sample (float32: in bfloat16 the prompt's last token rounds differently)."""
    model = build(router=router, adapters={"speech": LoRASpec(4, 8), "language": LoRASpec(4, 8)},
                  media=("audio",)).eval()
    model.to(device)
    randomize_adapters(model.llm, std=0.5)
    samples = [sample(audio=frames(10, 1)), sample("a longer text only prompt here"), sample(audio=frames(4, 3))]
    batch = collate_samples(samples, model.prompts)
    batch["media"] = {m: [e.to(device) for e in items] for m, items in batch["media"].items()}  # as real encoders take
    seen, scores = [], {}
    def record(_module, _args, kw):  # rows and tokens of each forward (the prompt's embeddings, then token ids)
        x = kw.get("inputs_embeds")
        seen.append(tuple((x if x is not None else kw["input_ids"]).shape[:2]))

    hook = model.llm.register_forward_pre_hook(record, with_kwargs=True)
    plain_generate = model.llm.generate

    def generate(**kw):  # the search's own scores beside its sequences
        out = plain_generate(**kw, return_dict_in_generate=True, output_scores=True)
        scores[len(scores)] = out.sequences_scores
        return out.sequences

    model.llm.generate = generate
    try:
        shared = model.generate(batch, max_new_tokens=6, num_beams=3)
        first = list(seen)
        seen.clear()
        plain = model.generate(batch, max_new_tokens=6, num_beams=3, share_prefill=False)
    finally:
        hook.remove()
        del model.llm.generate
    length = first[0][1] + 1  # the prompt, left-padded
    assert first[0] == (3, length - 1) and first[1] == (9, 1)  # the prompt once a sample; its last token a beam
    assert seen[0] == (9, length)  # transformers alone: the whole prompt once a beam
    assert all(n == 1 for _, n in first[1:]) and len(first) == len(seen) + 1
    assert shared == plain
    torch.testing.assert_close(scores[0], scores[1], rtol=0, atol=1e-5 if device == "cpu" else 1e-4)


def test_generate_stops_each_sample_at_a_stop_string():
    """stop_strings end a sample's answer where its text first contains one (the rest of the batch
    goes on): each answer is the free answer cut just after that point."""
    model = build(media=("audio",)).eval()
    randomize_adapters(model.llm, std=0.5)
    samples = [sample(audio=frames(20, 1)), sample(audio=frames(8, 2))]
    batch = collate_samples(samples, model.prompts)
    free = model.generate(batch, max_new_tokens=12)
    # a printable character of the first answer after its start (the random tiny model writes raw bytes)
    stop = next(c for c in free[0][2:] if c.isascii() and c.isprintable() and not c.isspace())
    cut = model.generate(batch, max_new_tokens=12, stop_strings=[stop])
    assert cut[0] != free[0] and free[0].startswith(cut[0]) and stop in cut[0]
    assert cut[0].endswith(stop)  # byte tokens: the answer ends with the token that completed the stop string
    assert cut[1] == free[1] or (stop in cut[1] and free[1].startswith(cut[1]))
    assert model.generate(batch, max_new_tokens=12, stop_strings=[]) == free


def test_generate_ascii_only_suppresses_exactly_the_non_ascii_tokens():
    """ascii_only: the suppressed ids are the tokens whose own text is not ASCII (the byte tokenizer's 128
    high bytes), answers hold ASCII only, and up to the first non-ASCII character of the free answer the
    two answers agree (greedy: only the suppressed choices change)."""
    model = build(media=("audio",)).eval()
    randomize_adapters(model.llm, std=0.5)
    tok = model.tokenizer
    ref = [i for i in range(len(tok)) if i not in tok.all_special_ids and not tok.decode([i]).isascii()]
    assert model.non_ascii_token_ids() == ref and len(ref) == 128
    samples = [sample(audio=frames(20, s)) for s in range(1, 7)]
    batch = collate_samples(samples, model.prompts)
    free = model.generate(batch, max_new_tokens=24, min_new_tokens=24)
    assert any(not t.isascii() for t in free)  # the random model writes high bytes when it may
    ascii = model.generate(batch, max_new_tokens=24, min_new_tokens=24, ascii_only=True)
    assert all(t.isascii() for t in ascii)
    for f, a in zip(free, ascii):
        k = next((j for j, c in enumerate(f) if not c.isascii()), len(f))
        assert a[:k].rstrip() == f[:k].rstrip()


def test_save_and_load_round_trip(tmp_path):
    model = build(adapters={"default": LoRASpec(4, 8)}).eval()
    randomize_adapters(model.llm)
    with torch.no_grad():
        for p in model.projectors.parameters():
            p.add_(0.01)
    batch = collate_samples([sample(audio=frames(8, 1), video=frames(4, 2))], model.prompts)
    ref = model(batch)["loss"]
    out = model.save_pretrained(tmp_path / "m")
    files = sorted(p.name for p in out.iterdir())
    assert files == ["adapters", "config.json", "projectors.safetensors"]
    encs = dict(model.encoders)
    loaded = MultimodalLM.from_pretrained(out, encoders=encs).eval()
    assert torch.equal(loaded(batch)["loss"], ref)
    n_train = sum(p.numel() for p in loaded.trainable_parameters())
    assert n_train == sum(p.numel() for p in model.trainable_parameters()) > 0


def test_fsdp_checkpoint_saves_the_gathered_weights_not_the_shards(tmp_path):
    """Under FSDP a module's own parameters are shards: the checkpoint's model folder must be
    written from the gathered state dict (names with FSDP's wrapper parts). GPU run 9 found
    save_pretrained refusing that dict; the fake accelerator here takes the same code path."""
    from accelerate.utils import DistributedType

    from mmlora.train.checkpoint import _write_trainable, read_trainable
    from mmlora.train.loop import TrainConfig, _write_weights

    model = build(adapters={"default": LoRASpec(4, 8)})
    own = {k: v.clone() for k, v in model.state_dict().items()}
    gathered = {k.replace("layers.", "layers._fsdp_wrapped_module."): v + 1.0 for k, v in own.items()}

    class FakeFSDPAccelerator:
        distributed_type, is_main_process = DistributedType.FSDP, True

        def unwrap_model(self, m):
            return m

        def get_state_dict(self, m):
            return gathered

        def wait_for_everyone(self):
            pass

    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any(".adapters." in n for n in trainable) and any(n.startswith("projectors.") for n in trainable)
    (tmp_path / "ckpt").mkdir()
    _write_trainable(FakeFSDPAccelerator(), model, tmp_path / "ckpt", save_pretrained=True)  # checkpoint-N
    _write_weights(FakeFSDPAccelerator(), model, model, TrainConfig(), tmp_path / "final", {"step": 1})  # final/, best/
    for folder in (tmp_path / "ckpt", tmp_path / "final"):
        saved = read_trainable(folder)
        assert sorted(saved) == sorted(trainable)
        fresh = build(adapters={"default": LoRASpec(4, 8)}, seed=1)
        fresh.load_trainable(folder / "model")
        for n, p in fresh.named_parameters():
            if p.requires_grad:  # both files hold the gathered values: the module's own plus one
                assert torch.equal(saved[n], own[n] + 1.0) and torch.equal(p.detach(), own[n] + 1.0), (folder, n)
    assert all(torch.equal(v, own[k]) for k, v in model.state_dict().items())  # the module is untouched
    short = {k: v for k, v in own.items() if not k.endswith("adapters.default.B")}
    with pytest.raises(KeyError, match=r"adapters\.default\.B"):
        model.save_pretrained(tmp_path / "short", state_dict=short)
    with pytest.raises(KeyError, match="projectors"):
        model.save_pretrained(tmp_path / "short", state_dict={k: v for k, v in own.items() if "projectors" not in k})


def test_renamed_partial_load_puts_an_asr_model_into_a_matryoshka_model(tmp_path):
    asr = build(adapters={"default": LoRASpec(4, 8)}, media=("audio",), rates=(2,), seed=1)
    randomize_adapters(asr.llm)
    asr.save_pretrained(tmp_path / "asr")
    saved = {n: p.detach().clone() for n, p in asr.named_parameters() if p.requires_grad}

    def mtsk(shared=LoRASpec(4, 8)):
        pairs = [{"audio": a, "video": v} for a in (2, 3) for v in (2, 3)]
        adapters = {"shared": shared, **{scale_adapter_name(q): LoRASpec(2, 4) for q in pairs}}
        return build(router={"kind": "scale", "bank": "mss"}, adapters=adapters, rates=(2, 3), seed=2)

    model = mtsk()
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    rename = {"adapters.default.": "adapters.shared.", "projectors.audio.": "projectors.audio.projectors.2."}
    fresh = model.load_trainable_renamed(tmp_path / "asr", rename)
    now = dict(model.named_parameters())
    loaded = {n.replace("adapters.default.", "adapters.shared.").replace("projectors.audio.", "projectors.audio.projectors.2.")
              for n in saved}
    assert sorted(fresh) == sorted(set(before) - loaded) and fresh  # rate 3, video, scale adapters
    assert any(".scale_a2_v2." in n for n in fresh) and any("projectors.video." in n for n in fresh)
    for n in saved:
        k = n.replace("adapters.default.", "adapters.shared.").replace("projectors.audio.", "projectors.audio.projectors.2.")
        assert torch.equal(now[k], saved[n]) and not torch.equal(before[k], saved[n]), k
    for n in fresh:
        assert torch.equal(now[n], before[n]), n
    with pytest.raises(ValueError, match=r"rank/alpha 4/8, here 8/16"):
        mtsk(shared=LoRASpec(8, 16)).load_trainable_renamed(tmp_path / "asr", rename)
    with pytest.raises(ValueError, match=r"projectors\.audio\.projectors\.3\..*saved \("):  # stack 2 into stack 3
        mtsk().load_trainable_renamed(tmp_path / "asr", {**rename, "projectors.audio.": "projectors.audio.projectors.3."})
    with pytest.raises(ValueError, match="no such trainable weight"):
        mtsk().load_trainable_renamed(tmp_path / "asr", {"adapters.default.": "adapters.nope."})
    # a key mapped to None: those saved weights stay unloaded (the SS bank has no place for a rank-4 "default")
    ss = mtsk()
    ss_before = {n: p.detach().clone() for n, p in ss.named_parameters() if p.requires_grad}
    with pytest.raises(ValueError, match="no such trainable weight"):  # without the skip the adapter has no place
        mtsk().load_trainable_renamed(tmp_path / "asr", {"projectors.audio.": "projectors.audio.projectors.2.",
                                                         "adapters.default.": "adapters.nope."})
    fresh = ss.load_trainable_renamed(tmp_path / "asr", {"adapters.default.": None,
                                                         "projectors.audio.": "projectors.audio.projectors.2."})
    ss_now = dict(ss.named_parameters())
    proj = {n for n in saved if n.startswith("projectors.audio.")}
    assert proj and len(proj) < len(saved)
    for n in proj:
        assert torch.equal(ss_now[n.replace("projectors.audio.", "projectors.audio.projectors.2.")], saved[n]), n
    assert sorted(fresh) == sorted(set(ss_before) - {n.replace("projectors.audio.", "projectors.audio.projectors.2.") for n in proj})
    for n in fresh:
        assert torch.equal(ss_now[n], ss_before[n]), n


class LayeredFakeEncoder(FakeEncoder):
    """FakeEncoder that also reports two per-layer hidden states (for QLadder)."""

    def _encode(self, batch, output_hidden_states):
        f = super()._encode(batch, output_hidden_states)
        if output_hidden_states:
            f.hidden_states = (f.x * 0.5, f.x)
            f.hidden_mask = f.mask
        return f


def test_arcana_qladder_and_mm_lora_token_routing_end_to_end():
    cfg = ModelConfig(
        llm=LLMConfig("random:tiny"),
        media={"image": {"projector": {"compressor": "none", "rates": [1], "hidden_dim": None, "activation": "gelu",
                                       "qladder": {"num_layers": 2, "num_queries": 3, "num_heads": 2}},
                         "hidden_states": True}},
        adapters={"visual": LoRASpec(4, 8), "language": LoRASpec(8, 16)},
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        router={"kind": "token_type", "token_map": {"text": "language", "image": "visual"}},
    )
    model = MultimodalLM.build(cfg, encoders={"image": LayeredFakeEncoder()}).train()
    batch = collate_samples([sample(image=frames(5, 1)), sample(image=frames(2, 2))], model.prompts)
    feats = model.encode_media(batch["media"])
    _, _, _, types, _ = model.assemble(batch["segments"], model.project(feats, {"image": 1}))
    assert (types == TOKEN_TYPES["image"]).sum(1).tolist() == [5 + 3, 2 + 3]  # patches + appended queries
    model(batch)["loss"].backward()
    qladder = model.projectors["image"].qladder
    assert all(p.grad is not None for p in qladder.parameters())  # the ladder trains through the LLM loss


def _align_model(lm, rates=(2,), weight=1.0):
    cfg = ModelConfig(
        llm=LLMConfig("random:tiny", seed=0),
        media={m: {"projector": {"compressor": "stack", "rates": list(rates), "hidden_dim": 32}}
               for m in ("audio", "video")},
        adapters={"default": LoRASpec(4, 8)}, target_modules=["q_proj", "v_proj"],
        align={"source": "video", "target": "audio", "weight": weight, "lm": lm},
    )
    return MultimodalLM.build(cfg, encoders={"audio": FakeEncoder(seed=0), "video": FakeEncoder(seed=1)})


def _align_batch(model):
    # two clips; video one token shorter than audio in the first (the loss compares the common length)
    items = [sample(audio=frames(8, 1), video=frames(6, 2), id=0), sample(audio=frames(4, 3), video=frames(4, 4), id=1)]
    return collate_samples(items, model.prompts)


def _reference_align(model, batch):
    """The alignment loss by hand: projected video vs projected audio, common length, Σ err² / Σ target²."""
    from mmlora.projectors import project_features

    with torch.no_grad():
        feats = model.encode_media(batch["media"])
        err = den = 0.0
        a_emb, a_mask = project_features(model.projectors["audio"], feats["audio"], rate=2)
        v_emb, v_mask = project_features(model.projectors["video"], feats["video"], rate=2)
        for i in range(a_emb.shape[0]):
            a, v = a_emb[i, a_mask[i]], v_emb[i, v_mask[i]]
            k = min(len(a), len(v))
            err += (v[:k] - a[:k]).pow(2).sum()
            den += a[:k].pow(2).sum()
    return err / den, sum(min(int(a_mask[i].sum()), int(v_mask[i].sum())) for i in range(a_emb.shape[0]))


def test_align_only_trains_the_source_projector_against_the_detached_target():
    model = _align_model(lm=False).train()
    randomize_adapters(model.llm, seed=3)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("projectors.video.") for n in trainable)
    batch = _align_batch(model)
    out = model(batch)
    ref, n = _reference_align(model, batch)
    assert torch.allclose(out["loss"], ref, rtol=1e-5) and int(out["num_tokens"]) == n == 3 + 2
    assert 0.0 < float(out["loss"].detach()) and torch.equal(out["metrics"]["align_loss"], out["loss"].detach())
    out["loss"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.projectors["video"].parameters())
    assert all(p.grad is None for p in model.projectors["audio"].parameters())
    # a few steps of Adam on the source projector bring the loss down; the target projector is untouched
    before = {k: v.clone() for k, v in model.projectors["audio"].state_dict().items()}
    opt = torch.optim.Adam(model.trainable_parameters(), lr=1e-2)
    first = float(out["loss"])
    for _ in range(30):
        opt.zero_grad()
        loss = model(batch)["loss"]
        loss.backward()
        opt.step()
    assert float(model(batch)["loss"]) < 0.5 * first
    assert all(torch.equal(v, before[k]) for k, v in model.projectors["audio"].state_dict().items())


def test_align_with_lm_adds_weight_times_alignment_to_the_cross_entropy():
    torch.manual_seed(0)
    model = _align_model(lm=True, weight=0.5).eval()  # eval: no SpecAugment / dropout, deterministic
    batch = _align_batch(model)
    ce = model(batch)["loss"]  # eval mode: no alignment term
    model.train()  # the adapters have no dropout and the fake encoders no SpecAugment: the same CE
    out = model(batch)
    ref, _ = _reference_align(model, batch)
    assert torch.allclose(out["loss"], ce + 0.5 * ref, rtol=1e-5)
    assert all(p.requires_grad for p in model.projectors["audio"].parameters())  # with the LM everything trains


def test_align_config_errors_name_the_field():
    with pytest.raises(ValueError, match="model.align.source: 'image'"):
        ModelConfig(llm=LLMConfig("random:tiny"), media={"audio": {}, "video": {}}, align={"source": "image"})
    with pytest.raises(ValueError, match="the audio projector has rates \\[4, 16\\]"):
        ModelConfig(llm=LLMConfig("random:tiny"), media={"audio": {"projector": {"rates": [4, 16]}}, "video": {}},
                    align={"source": "video"})
    with pytest.raises(ValueError, match="tokens/s"):
        model = _align_model(lm=False).train()
        model.align_loss(model.encode_media(_align_batch(model)["media"]), {"audio": 2, "video": 4})


def _assemble_reference(model, segments, media_emb, left_pad):
    """Row-by-row splice (the layout written out directly): embeddings, attention, labels, types."""
    embed = model.llm.get_input_embeddings()
    rows = []
    for segs in segments:
        parts, lab, typ = [], [], []
        for s in segs:
            if hasattr(s, "ids"):
                parts.append(embed(s.ids))
                lab += s.ids.tolist() if s.is_answer else [-100] * s.ids.numel()
                typ += [TOKEN_TYPES["text"]] * s.ids.numel()
            else:
                e = media_emb[s.modality][s.index]
                parts.append(e.to(parts[0].dtype if parts else e.dtype))
                lab += [-100] * e.shape[0]
                typ += [TOKEN_TYPES[s.modality]] * e.shape[0]
        rows.append((torch.cat(parts), lab, typ))
    L = max(r[0].shape[0] for r in rows)
    B, d = len(rows), rows[0][0].shape[1]
    x, attn = torch.zeros(B, L, d), torch.zeros(B, L, dtype=torch.long)
    labels, types = torch.full((B, L), -100), torch.full((B, L), TOKEN_TYPES["pad"])
    for i, (r, lab, typ) in enumerate(rows):
        sl = slice(L - r.shape[0], L) if left_pad else slice(0, r.shape[0])
        x[i, sl], attn[i, sl], labels[i, sl], types[i, sl] = r, 1, torch.tensor(lab), torch.tensor(typ)
    return x, attn, labels, types


@pytest.mark.parametrize("left_pad", [False, True])
def test_assemble_and_loss_match_a_row_by_row_reference(left_pad):
    model = build().eval()
    batch = collate_samples([sample("a longer question about it", "yes indeed", audio=frames(9, 1), video=frames(4, 2)),
                             sample("no media", "no"), sample("x", "the longest answer of all three", audio=frames(15, 3)),
                             sample("only video", "v", video=frames(8, 4))], model.prompts)
    feats = model.encode_media(batch["media"])
    emb = model.project(feats, {"audio": 2, "video": 2})
    got = model.assemble(batch["segments"], emb, left_pad=left_pad)
    ref = _assemble_reference(model, batch["segments"], emb, left_pad)
    for g, r, name in zip(got[:4], ref, ("x", "attn", "labels", "types")):
        assert g.shape == r.shape, name
        assert torch.equal(g, r.to(g.dtype)), name
    want = torch.nonzero(ref[2][:, 1:] != -100).t()  # row-major answer positions
    assert torch.equal(got.answer_pos, want)
    if not left_pad:  # the training loss: mean cross-entropy of the answer tokens from the full logits
        with torch.no_grad():
            out = model(batch, return_logits=True)
        logits, labels = out["logits"][:, :-1], ref[2][:, 1:]
        ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
        torch.testing.assert_close(out["loss"], ce, rtol=1e-5, atol=1e-6)
        assert int(out["num_tokens"]) == int((labels != -100).sum())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_assemble_does_not_wait_for_the_gpu_and_matches_the_cpu():
    """On CUDA the batch layout reaches the device in pinned, asynchronous copies: assemble() must not
    synchronise the host with the GPU (each sync drains the launch queue of a host-bound step), and its
    result must equal the CPU model's."""
    model = build().eval()
    batch = collate_samples([sample("a question", "an answer", audio=frames(9, 1), video=frames(4, 2)),
                             sample("no media", "no")], model.prompts)
    feats = model.encode_media(batch["media"])
    emb = model.project(feats, {"audio": 2, "video": 2})
    ref = model.assemble(batch["segments"], emb)
    model.to("cuda")
    emb_gpu = {m: [e.to("cuda") for e in items] for m, items in emb.items()}
    model.assemble(batch["segments"], emb_gpu)  # first call: allocations, embedding weights on the device
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        got = model.assemble(batch["segments"], emb_gpu)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for g, r in zip(got, ref):
        assert torch.equal(g.cpu(), r)


def test_pipeline_answers_drop_unfinished_multibyte_pieces():
    """A byte-level tokenizer decodes a piece of a multi-byte character as U+FFFD; the random tiny model
    writes such pieces. What generate() returns keeps them; the pipeline's answers (transcribe, and
    evaluation through join_pieces) drop them and the double spaces they leave, and change nothing else."""
    from mmlora.pipelines import MediaPipeline, join_pieces, tidy_text

    model = build(media=("audio",)).eval()
    randomize_adapters(model.llm, std=0.5)
    inputs = [frames(20, s) for s in range(1, 7)]
    batch = collate_samples([sample(audio=x) for x in inputs], model.prompts)
    gen = {"max_new_tokens": 24, "min_new_tokens": 24}
    raw = model.generate(batch, **gen)
    assert any("\ufffd" in t for t in raw)
    pipe = MediaPipeline(model, instruction="hi there", batch_size=8, generation=gen)
    out = pipe.transcribe(audio=inputs)
    assert out == [tidy_text(t) for t in raw] and not any("\ufffd" in t for t in out)
    assert [t.replace(" ", "") for t in out] == [t.replace("\ufffd", "").replace(" ", "").strip() for t in raw]
    assert tidy_text("He was not an\ufffd an\ufffd disposed young man.") == "He was not an an disposed young man."
    assert tidy_text("a  b") == "a  b"  # no U+FFFD: untouched
    assert join_pieces(["x\ufffd y", "", "\ufffd"], [0, 0, 1], 2) == ["x y", ""]


def _eval_and_training_projections(model, feats):
    """``model.project`` of the features in eval mode (twice: equal, no draws) and in training mode with seed 0
    (twice: equal, the draws repeat); returns (eval, training) projections, the model left in training mode."""
    rates = model.default_rates()
    model.eval()
    ref = model.project(feats, rates)
    assert all(torch.equal(a, b) for m in ref for a, b in zip(ref[m], model.project(feats, rates)[m]))
    model.train()
    torch.manual_seed(0)
    got = model.project(feats, rates)
    torch.manual_seed(0)
    again = model.project(feats, rates)
    assert all(torch.equal(a, b) for m in got for a, b in zip(got[m], again[m]))
    return ref, got


def test_modality_dropout_zeroes_whole_items_in_training_only_and_never_every_modality():
    """media.<m>.dropout: in training an item's projected tokens of m are zeroed with that probability (lengths
    unchanged); a sample never loses all its modalities (the lower-dropout one stays); in eval nothing changes;
    the draws come from torch's global generator (a seeded run repeats them)."""
    model = build()
    for m, p in (("audio", 0.5), ("video", 0.5)):
        model.cfg.media[m].dropout = p
    n = 200
    feats = model.encode_media({"audio": [frames(8, i) for i in range(n)], "video": [frames(4, n + i) for i in range(n)]})
    ref, got = _eval_and_training_projections(model, feats)
    zero = {m: [bool((t == 0).all()) for t in got[m]] for m in got}
    for m in got:
        assert [t.shape for t in got[m]] == [t.shape for t in ref[m]]
        assert all(z or torch.equal(t, r) for z, t, r in zip(zero[m], got[m], ref[m]))  # kept items are untouched
    # video: 0.5; audio: 0.5 less the quarter of samples where both were drawn (audio is kept on the tie)
    assert 0.4 < sum(zero["video"]) / n < 0.6 and 0.17 < sum(zero["audio"]) / n < 0.33, (sum(zero["video"]), sum(zero["audio"]))
    assert not any(a and v for a, v in zip(zero["audio"], zero["video"]))
    model.cfg.media["audio"].dropout, model.cfg.media["video"].dropout = 1.0, 1.0
    both = model.project(feats, model.default_rates())
    assert all((t == 0).all() for t in both["video"]) and not any((t == 0).all() for t in both["audio"])  # tie: audio kept
    model.cfg.media["audio"].dropout = 0.0
    model.cfg.media["video"].dropout = 0.3
    batch = collate_samples([sample(audio=frames(8, 1), video=frames(4, 2))], model.prompts)
    model.eval()
    assert torch.equal(model(batch)["loss"], model(batch)["loss"])  # eval: no draws
    with pytest.raises(ValueError, match="media.dropout"):
        from mmlora.model import MediaConfig

        MediaConfig(dropout=1.5)


def test_mismatch_training_passes_drawn_items_round_in_training_only(monkeypatch):
    """media.<m>.swap: in training a sample's projected tokens of m are replaced with that probability by another
    sample's; the drawn samples pass theirs round (none keeps its own, every drawn item lands once), one drawn
    alone takes the next sample's; the other modality and the undrawn samples are untouched; seeded draws repeat;
    eval, a batch of one and a config with one modality never swap (the last is refused)."""
    from mmlora.model import MediaConfig

    model = build()
    model.cfg.media["video"].swap = 0.5
    n = 200
    feats = model.encode_media({"audio": [frames(8, i) for i in range(n)], "video": [frames(4 + i % 3, n + i) for i in range(n)]})
    ref, got = _eval_and_training_projections(model, feats)
    assert all(torch.equal(a, b) for a, b in zip(got["audio"], ref["audio"]))
    src = [next(j for j in range(n) if ref["video"][j].shape == t.shape and torch.equal(ref["video"][j], t))
           for t in got["video"]]  # whose lips each sample got
    drawn = [i for i in range(n) if src[i] != i]
    assert 0.4 < len(drawn) / n < 0.6, len(drawn)
    assert sorted(src[i] for i in drawn) == drawn  # a permutation of the drawn samples: each lands exactly once
    assert [src[i] for i in drawn] == drawn[1:] + drawn[:1]  # passed round in order
    # every sample drawn: item i takes item i + 1; a batch of one keeps its own
    model.cfg.media["video"].swap = 1.0
    emb = {"audio": ref["audio"][:3], "video": ref["video"][:3]}
    out = model.swap_items(emb)
    assert [torch.equal(a, b) for a, b in zip(out["video"], [emb["video"][1], emb["video"][2], emb["video"][0]])] == [True] * 3
    one = {"audio": ref["audio"][:1], "video": ref["video"][:1]}
    assert model.swap_items(one)["video"][0] is one["video"][0]
    # one drawn alone takes the next sample's
    monkeypatch.setattr(torch, "rand", lambda k, *a, **kw: torch.tensor([0.9, 0.1, 0.9])[:k])
    model.cfg.media["video"].swap = 0.5
    out = model.swap_items(emb)
    assert out["video"][0] is emb["video"][0] and out["video"][1] is emb["video"][2] and out["video"][2] is emb["video"][2]
    monkeypatch.undo()
    with pytest.raises(ValueError, match="media.swap"):
        MediaConfig(swap=-0.1)
    with pytest.raises(ValueError, match="model.media.audio.swap: .*second modality"):
        ModelConfig(llm=LLMConfig("random:tiny"), media={"audio": {"swap": 0.5}})


def test_attention_backends_leave_out_cudnn_on_cuda_only_and_wrap_forward_and_generate(monkeypatch):
    """``model.llm.cudnn_attention`` False (default): on CUDA, SDPA may use flash / memory-efficient / math but not
    cuDNN (which plans every new sequence length) while the model runs; on CPU, or with the flag set, nothing
    changes. forward and generate both run inside the context."""
    import contextlib

    import mmlora.model as mm
    from mmlora.llm import attention_backends

    cuda = torch.backends.cuda
    before = (cuda.cudnn_sdp_enabled(), cuda.flash_sdp_enabled(), cuda.mem_efficient_sdp_enabled())
    assert before[0], "this test expects torch's default: cuDNN SDPA allowed"
    with attention_backends(LLMConfig(), "cuda"):
        assert (cuda.cudnn_sdp_enabled(), cuda.flash_sdp_enabled(), cuda.mem_efficient_sdp_enabled(),
                cuda.math_sdp_enabled()) == (False, True, True, True)
    assert (cuda.cudnn_sdp_enabled(), cuda.flash_sdp_enabled(), cuda.mem_efficient_sdp_enabled()) == before
    for cfg, dev in ((LLMConfig(), "cpu"), (LLMConfig(cudnn_attention=True), "cuda")):
        with attention_backends(cfg, dev):
            assert cuda.cudnn_sdp_enabled()
    model = build().eval()
    calls = []

    def record(cfg, device):
        calls.append((cfg.cudnn_attention, torch.device(device).type))
        return contextlib.nullcontext()

    monkeypatch.setattr(mm, "attention_backends", record)
    batch = collate_samples([sample("hi", "ok", audio=frames(6, 1))], model.prompts)
    model(batch)
    model.generate(batch, max_new_tokens=2)
    assert calls == [(False, "cpu"), (False, "cpu")]


def test_an_answers_llm_score_is_the_beam_searchs_score_of_it():
    """generate(whisper_proposal=True) scores Whisper's transcript with the LLM as the search scores a beam
    (MultimodalLM._answer_logp, from the prompt's cache): each beam's ids through it give transformers' own beam
    score (the sum of its steps' log-softmax, compute_transition_scores), with left padding and routing by token."""
    model = build(router={"kind": "token_type", "token_map": {"text": "language", "audio": "speech"}},
                  adapters={"speech": LoRASpec(4, 8), "language": LoRASpec(4, 8)}, media=("audio",)).eval()
    randomize_adapters(model.llm, std=0.5)
    batch = collate_samples([sample(audio=frames(10, 1)), sample(audio=frames(4, 3))], model.prompts)
    K, eos, got = 3, model.tokenizer.eos_token_id, {}
    plain_generate = model.llm.generate

    def generate(**kw):  # the search, then (its routing still installed) each beam's ids scored again
        out = plain_generate(**kw, return_dict_in_generate=True, output_scores=True)
        x, attn = kw["inputs_embeds"], kw["attention_mask"]
        steps = model.llm.compute_transition_scores(out.sequences, out.scores, out.beam_indices, normalize_logits=False)
        got["search"] = steps.masked_fill(~torch.isfinite(steps), 0.0).sum(-1).view(len(x), K)
        ids = [row[:row.tolist().index(eos) + 1].tolist() if eos in row.tolist() else row.tolist()
               for row in out.sequences]
        got["ids"] = ids
        got["again"] = torch.stack([model._answer_logp(x, attn, model._prompt_cache(x, attn),
                                                       [ids[b * K + k] for b in range(len(x))]) for k in range(K)], 1)
        return out.sequences

    model.llm.generate = generate
    try:
        model.generate(batch, max_new_tokens=6, num_beams=K, num_return_sequences=K)
    finally:
        del model.llm.generate
    torch.testing.assert_close(got["again"], got["search"].cpu(), rtol=0, atol=1e-4)


def test_beam_token_logp_is_transformers_transition_scores_exactly():
    """generate's own gathering of each beam's step scores against transformers' compute_transition_scores: the same
    values to the bit, on a real search and on beams that ended early (their later steps 0)."""
    from mmlora.model import beam_token_logp

    model = build(media=("audio",)).eval()
    randomize_adapters(model.llm, std=0.5)
    batch = collate_samples([sample(audio=frames(10, 1)), sample(audio=frames(4, 3))], model.prompts)
    seen, plain_generate = {}, model.llm.generate

    def generate(**kw):
        out = plain_generate(**kw, return_dict_in_generate=True, output_scores=True)
        seen["want"] = model.llm.compute_transition_scores(out.sequences, out.scores, out.beam_indices,
                                                           normalize_logits=False)
        seen["got"] = beam_token_logp(out.sequences, out.scores, out.beam_indices)
        return out.sequences

    model.llm.generate = generate
    try:
        model.generate(batch, max_new_tokens=8, num_beams=3, num_return_sequences=3)
    finally:
        del model.llm.generate
    assert seen["got"].shape == seen["want"].shape and torch.equal(seen["got"], seen["want"])
    # beams that ended early (beam index -1 after their end) and scores of -inf, as transformers returns them
    g = torch.Generator().manual_seed(0)
    V, steps, n = model.llm.config.vocab_size, 5, 6
    scores = tuple(torch.randn(n, V, generator=g).masked_fill(torch.rand(n, V, generator=g) < 0.1, float("-inf"))
                   for _ in range(steps))
    beams = torch.randint(0, n, (n, steps), generator=g)
    for row, end in enumerate([5, 2, 0, 5, 3, 4]):
        beams[row, end:] = -1
    seqs = torch.cat([torch.full((n, 3), 7), torch.randint(0, V, (n, steps), generator=g)], 1)
    want = model.llm.compute_transition_scores(seqs, scores, beams, normalize_logits=False)
    assert torch.equal(beam_token_logp(seqs, scores, beams), want) and (want[2] == 0).all()
    beams[:, 4] = -1  # no beam took a fifth step: both cut to four
    assert torch.equal(beam_token_logp(seqs, scores, beams),
                       model.llm.compute_transition_scores(seqs, scores, beams, normalize_logits=False))
