"""The multi-LoRA core against references: the plain model, PEFT, per-token loops."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from conftest import randomize_adapters, tiny_llm
from mmlora.lora import (LoRASpec, MultiLoRALinear, adapter_parameters, attach, export_peft, iter_adapters,
                         load_adapters, lora_layers, merge, reset, save_adapters, unmerge)
from mmlora.routing import RoutingPlan, routing

FAMILY_TARGETS = {
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "phi3": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
}


def ids(b=2, n=7, seed=0):
    return torch.randint(3, 128, (b, n), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("family", list(FAMILY_TARGETS))
def test_zero_init_adapters_give_base_logits_exactly(family):
    model = tiny_llm(family)
    x = ids()
    ref = model(x).logits
    attach(model, {"vision": LoRASpec(4, 8), "speech": LoRASpec(6, 12, use_rslora=True)}, FAMILY_TARGETS[family])
    tok = torch.randint(-1, 2, x.shape)
    for plan in (RoutingPlan.single("vision"), RoutingPlan.by_token(tok, ["vision", "speech"]),
                 RoutingPlan.by_sample(["speech", None]), RoutingPlan.none()):
        with routing(model, plan):
            assert torch.equal(model(x).logits, ref)
    assert torch.equal(model(x).logits, ref)  # no plan installed: base model


@pytest.mark.parametrize("family", list(FAMILY_TARGETS))
def test_trainable_parameters_are_exactly_the_adapters(family):
    model = tiny_llm(family)
    layers = attach(model, {"a": LoRASpec(4, 8), "b": LoRASpec(2, 2)}, FAMILY_TARGETS[family])
    expected = sum((4 + 2) * (m.in_features + m.out_features) for m in layers)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert sum(p.numel() for p in trainable) == expected
    assert {id(p) for p in trainable} == {id(p) for p in adapter_parameters(model)}
    assert sum(p.numel() for p in adapter_parameters(model, "b")) == sum(2 * (m.in_features + m.out_features) for m in layers)
    randomize_adapters(model)
    with routing(model, RoutingPlan.by_sample(["a", "b"])):
        model(ids()).logits.square().mean().backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name


def _peft_model(family, use_rslora, rank_pattern=None, alpha_pattern=None):
    from peft import LoraConfig, get_peft_model

    base = tiny_llm(family)
    cfg = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=FAMILY_TARGETS[family],
                     use_rslora=use_rslora, rank_pattern=rank_pattern or {}, alpha_pattern=alpha_pattern or {})
    return get_peft_model(base, cfg)


@pytest.mark.parametrize("family", ["llama", "phi3"])
@pytest.mark.parametrize("use_rslora", [False, True])
def test_single_adapter_matches_peft(family, use_rslora):
    peft_model = _peft_model(family, use_rslora, rank_pattern={"o_proj": 4}, alpha_pattern={"o_proj": 3})
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    ours = tiny_llm(family)
    spec = LoRASpec(8, 16, use_rslora=use_rslora)
    attach(ours, {"default": spec}, FAMILY_TARGETS[family],
           overrides={"o_proj": {"default": LoRASpec(4, 3, use_rslora=use_rslora)}})
    peft_weights = {n: p for n, p in peft_model.named_parameters() if "lora_" in n}
    with torch.no_grad():
        for path, name, ad in iter_adapters(ours):
            ad.A.copy_(peft_weights[f"base_model.model.{path}.lora_A.default.weight"])
            ad.B.copy_(peft_weights[f"base_model.model.{path}.lora_B.default.weight"])
    x = ids()
    ref = peft_model(x).logits
    with routing(ours, RoutingPlan.single("default")):
        out = ours(x).logits
    assert (out - ref).abs().max() < 1e-5
    assert (ref - tiny_llm(family)(x).logits).abs().max() > 1e-3  # the adapter matters


# ---------------------------------------------------------------------------- routing
def _layer_reference(layer: MultiLoRALinear, x: torch.Tensor, weights_per_token: list[dict[str, float]]):
    """Per-token loop: y_t = W x_t + b + sum_k w_tk s_k B_k A_k x_t, one token at a time."""
    rows = []
    for t in range(x.shape[0]):
        y = layer.base_layer(x[t:t + 1])
        for name, w in weights_per_token[t].items():
            ad = layer.adapters[name]
            y = y + w * ad.spec.scaling * (x[t:t + 1] @ ad.A.t() @ ad.B.t())
        rows.append(y)
    return torch.cat(rows)


def _layer(seed=0):
    torch.manual_seed(seed)
    base = nn.Linear(24, 20)
    model = nn.Sequential()
    model.add_module("proj", base)
    attach(model, {"vis": LoRASpec(4, 8), "lang": LoRASpec(8, 4), "shared": LoRASpec(2, 2, use_rslora=True)}, ["proj"])
    randomize_adapters(model, seed=seed + 1, std=0.3)
    return model


def _check_routed(model, plan, x, per_token):
    layer = model.proj
    with routing(model, plan):
        out = model(x)
    ref = _layer_reference(layer, x.reshape(-1, x.shape[-1]), per_token).reshape(out.shape)
    assert torch.allclose(out, ref, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(out)
    params = adapter_parameters(model)
    grads = torch.autograd.grad((out * g).sum(), params + [x], allow_unused=True)
    grads_ref = torch.autograd.grad((ref * g).sum(), params + [x], allow_unused=True)
    for p, a, b in zip(params + [x], grads, grads_ref):
        a = torch.zeros_like(p) if a is None else a
        b = torch.zeros_like(p) if b is None else b
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


def test_by_token_routing_equals_per_token_loop():
    model = _layer()
    x = torch.randn(3, 5, 24, requires_grad=True)
    tok = torch.tensor([[0, 0, 1, -1, 1], [1, 1, 1, 1, 1], [-1, -1, -1, -1, -1]])
    names = ["vis", "lang"]
    per_token = [{names[int(k)]: 1.0} if k >= 0 else {} for k in tok.flatten()]
    _check_routed(model, RoutingPlan.by_token(tok, names), x, per_token)


def test_by_sample_routing_equals_per_token_loop():
    model = _layer()
    x = torch.randn(3, 4, 24, requires_grad=True)
    sample = ["lang", None, "vis"]
    per_token = [({sample[b]: 1.0} if sample[b] else {}) for b in range(3) for _ in range(4)]
    _check_routed(model, RoutingPlan.by_sample(sample, seq_len=4), x, per_token)


def test_shared_plus_specific_routing_equals_per_token_loop():
    model = _layer()
    x = torch.randn(2, 3, 24, requires_grad=True)
    per_token = [{"shared": 1.0, "vis": 1.0}] * 6
    _check_routed(model, RoutingPlan.shared_specific("shared", "vis"), x, per_token)
    per_sample = ["lang", None]
    per_token = [{"shared": 1.0, **({per_sample[b]: 1.0} if per_sample[b] else {})} for b in range(2) for _ in range(3)]
    _check_routed(model, RoutingPlan.shared_specific("shared", per_sample), x, per_token)


def test_soft_routing_equals_per_token_loop():
    model = _layer()
    x = torch.randn(2, 3, 24, requires_grad=True)
    w = torch.rand(2, 3, 2)
    per_token = [{"vis": float(w[b, t, 0]), "lang": float(w[b, t, 1])} for b in range(2) for t in range(3)]
    _check_routed(model, RoutingPlan.soft(w, ["vis", "lang"]), x, per_token)


def test_different_dropout_groups_route_correctly_in_eval():
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("proj", nn.Linear(8, 8))
    attach(model, {"a": LoRASpec(2, 2, dropout=0.3), "b": LoRASpec(2, 2)}, ["proj"])
    randomize_adapters(model)
    x = torch.randn(1, 4, 8, requires_grad=True)
    model.eval()
    _check_routed(model, RoutingPlan.by_token(torch.tensor([[0, 1, 1, 0]]), ["a", "b"]), x,
                  [{"a": 1.0}, {"b": 1.0}, {"b": 1.0}, {"a": 1.0}])
    model.train()  # dropout on: outputs differ between calls only on the "a" tokens
    plan = RoutingPlan.by_token(torch.tensor([[0, 1, 1, 0]]), ["a", "b"])
    with routing(model, plan):
        y1, y2 = model(x), model(x)
    assert torch.equal(y1[0, 1:3], y2[0, 1:3]) and not torch.equal(y1[0, 0], y2[0, 0])


def test_unknown_adapter_in_plan_is_a_clear_error():
    model = _layer()
    with routing(model, RoutingPlan.single("nope")), pytest.raises(KeyError, match="nope"):
        model(torch.randn(1, 2, 24))


# ---------------------------------------------------------------------------- merge / reset
def test_merge_unmerge_reset():
    model = tiny_llm("llama")
    attach(model, {"a": LoRASpec(4, 8), "b": LoRASpec(4, 8)}, FAMILY_TARGETS["llama"])
    randomize_adapters(model)
    x = ids()
    base_w = {p: m.base_layer.weight.detach().clone() for p, m in lora_layers(model)}
    with routing(model, RoutingPlan.single("a")):
        routed = model(x).logits
    merge(model, "a")
    with routing(model, RoutingPlan.single("a")):  # merged adapters are not added twice
        assert torch.allclose(model(x).logits, routed, atol=1e-5)
    assert torch.allclose(model(x).logits, routed, atol=1e-5)  # base now carries "a"
    merge(model, "b")
    unmerge(model, "a")
    unmerge(model, "b")
    for p, m in lora_layers(model):
        assert torch.equal(m.base_layer.weight, base_w[p])  # exact restore
    before = {(p, n): (ad.A.detach().clone(), ad.B.detach().clone()) for p, n, ad in iter_adapters(model)}
    reset(model, "a")
    for p, n, ad in iter_adapters(model):
        A0, B0 = before[(p, n)]
        if n == "a":
            assert not torch.equal(ad.A, A0) and torch.count_nonzero(ad.B) == 0
        else:
            assert torch.equal(ad.A, A0) and torch.equal(ad.B, B0)


def test_merge_then_reset_bakes_the_update_in_for_mrdpo():
    model = tiny_llm("llama")
    attach(model, {"policy": LoRASpec(4, 8)}, FAMILY_TARGETS["llama"])
    randomize_adapters(model)
    x = ids()
    with routing(model, RoutingPlan.single("policy")):
        round1 = model(x).logits
    merge(model, "policy")
    reset(model, "policy")  # fresh adapter on top of the merged policy
    with routing(model, RoutingPlan.single("policy")):
        assert torch.allclose(model(x).logits, round1, atol=1e-5)
    assert torch.allclose(model(x).logits, round1, atol=1e-5)  # reference = adapter disabled


# ---------------------------------------------------------------------------- save / load / export
def test_save_load_round_trip_and_refusals(tmp_path):
    model = tiny_llm("qwen2")
    attach(model, {"a": LoRASpec(4, 8), "b": LoRASpec(2, 4, dropout=0.1)}, FAMILY_TARGETS["qwen2"])
    randomize_adapters(model)
    out = save_adapters(model, tmp_path / "ad")
    assert sorted(f.name for f in out.iterdir()) == ["adapters.json", "adapters.safetensors"]
    x = ids()
    plan = RoutingPlan.by_sample(["a", "b"])
    with routing(model, plan):
        ref = model(x).logits
    fresh = tiny_llm("qwen2")  # no adapters: attached from the saved specs
    load_adapters(fresh, out)
    with routing(fresh, plan):
        assert torch.equal(fresh(x).logits, ref)
    assert sum(p.numel() for p in fresh.parameters() if p.requires_grad) == sum(
        p.numel() for p in adapter_parameters(model))

    wrong_names = tiny_llm("qwen2")
    attach(wrong_names, {"a": LoRASpec(4, 8)}, FAMILY_TARGETS["qwen2"])
    with pytest.raises(ValueError, match="not in the model .*\\.b\\.A"):
        load_adapters(wrong_names, out)
    wrong_shape = tiny_llm("qwen2")
    attach(wrong_shape, {"a": LoRASpec(8, 8), "b": LoRASpec(2, 4)}, FAMILY_TARGETS["qwen2"])
    with pytest.raises(ValueError, match="shape mismatch"):
        load_adapters(wrong_shape, out)
    (out / "adapters.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="adapters.safetensors"):
        load_adapters(tiny_llm("qwen2"), out)


def test_loading_into_adapters_with_other_settings_uses_the_saved_ones_and_says_so(tmp_path, caplog):
    """A model whose adapters were built with another alpha / dropout than the saved ones (an edited config.json, a
    recipe's `train.init_from`) runs with the saved settings, which belong to the saved weights, and a warning names
    them; matching settings load silently."""
    model = tiny_llm("qwen2")
    attach(model, {"a": LoRASpec(4, 8)}, FAMILY_TARGETS["qwen2"])
    randomize_adapters(model)
    out = save_adapters(model, tmp_path / "ad")
    x = ids()
    with routing(model, RoutingPlan.single("a")):
        ref = model(x).logits
    same = tiny_llm("qwen2")
    attach(same, {"a": LoRASpec(4, 8)}, FAMILY_TARGETS["qwen2"])
    with caplog.at_level("WARNING", logger="mmlora.lora"):
        load_adapters(same, out)
    assert not caplog.records
    other = tiny_llm("qwen2")
    attach(other, {"a": LoRASpec(4, 4, dropout=0.1)}, FAMILY_TARGETS["qwen2"])
    with caplog.at_level("WARNING", logger="mmlora.lora"):
        load_adapters(other, out)
    n = len(lora_layers(other))
    assert len(caplog.records) == 1
    msg = caplog.records[0].getMessage()
    assert f"adapters.json: the saved adapter settings replace the model's own in {2 * n} place(s)" in msg
    assert "a: alpha 4 -> 8" in msg and "a: dropout 0.1 -> 0.0" in msg
    assert all(layer.adapters["a"].spec == LoRASpec(4, 8) for _, layer in lora_layers(other))
    with routing(other, RoutingPlan.single("a")):
        assert torch.equal(other(x).logits, ref)


def test_save_is_atomic_on_failure(tmp_path, monkeypatch):
    model = tiny_llm("llama")
    attach(model, {"a": LoRASpec(2, 2)}, ["q_proj"])
    save_adapters(model, tmp_path / "ad")
    good = (tmp_path / "ad" / "adapters.safetensors").read_bytes()
    import safetensors.torch as st

    def boom(*a, **k):
        raise OSError("No space left on device")

    monkeypatch.setattr(st, "save_file", boom)
    with pytest.raises(OSError):
        save_adapters(model, tmp_path / "ad")
    assert (tmp_path / "ad" / "adapters.safetensors").read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ad"]


@pytest.mark.parametrize("family", ["llama", "phi3"])
def test_export_peft_round_trip(tmp_path, family):
    from peft import PeftModel

    model = tiny_llm(family)
    attach(model, {"a": LoRASpec(8, 16, use_rslora=True), "b": LoRASpec(4, 4)}, FAMILY_TARGETS[family],
           overrides={"down_proj": {"a": LoRASpec(2, 5, use_rslora=True)}})
    randomize_adapters(model)
    x = ids()
    with routing(model, RoutingPlan.single("a")):
        ours = model(x).logits
    out = export_peft(model, "a", tmp_path / "peft_a")
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["r"] == 8 and cfg["use_rslora"] is True
    peft_model = PeftModel.from_pretrained(tiny_llm(family), out)
    assert (peft_model(x).logits - ours).abs().max() < 1e-5


def test_export_peft_only_some_layers(tmp_path):
    from peft import PeftModel

    model = tiny_llm("llama")
    attach(model, {"a": LoRASpec(4, 8)}, [r"model\.layers\.1\.self_attn\.q_proj"])
    randomize_adapters(model)
    x = ids()
    with routing(model, RoutingPlan.single("a")):
        ours = model(x).logits
    peft_model = PeftModel.from_pretrained(tiny_llm("llama"), export_peft(model, "a", tmp_path / "p"))
    assert (peft_model(x).logits - ours).abs().max() < 1e-5


# ---------------------------------------------------------------------------- generation
def _greedy_full_recompute(model, prompt, plan_fn, steps):
    """Greedy decoding without a KV cache: the whole sequence recomputed each step."""
    seq = prompt
    for _ in range(steps):
        with routing(model, plan_fn(seq.shape[1])):
            logits = model(seq, use_cache=False).logits
        seq = torch.cat([seq, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return seq


def test_generate_with_kv_cache_routes_decode_steps():
    model = tiny_llm("llama", layers=2)
    attach(model, {"vis": LoRASpec(4, 8), "lang": LoRASpec(4, 8)}, FAMILY_TARGETS["llama"])
    randomize_adapters(model, std=0.3)
    prompt = ids(2, 6)
    tok = torch.tensor([[0, 0, 0, 1, 1, 1], [1, 0, 0, 0, 0, 1]])  # prompt token types

    def plan_fn(n):  # the same plan, extended with "lang" for generated tokens
        full = torch.cat([tok, torch.ones(2, n - 6, dtype=torch.long)], dim=1)
        return RoutingPlan.by_token(full, ["vis", "lang"])

    ref = _greedy_full_recompute(model, prompt, plan_fn, steps=6)
    with routing(model, RoutingPlan.by_token(tok, ["vis", "lang"], fill=1)):
        out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=6, do_sample=False,
                             min_new_tokens=6, pad_token_id=0)
    assert torch.equal(out, ref)
    # the adapters matter for this check to mean anything
    base_out = tiny_llm("llama", layers=2).generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=6,
                                                    do_sample=False, min_new_tokens=6, pad_token_id=0)
    assert not torch.equal(out, base_out)


def test_generate_beam_search_with_and_without_cache_agree():
    model = tiny_llm("llama", layers=2)
    attach(model, {"a": LoRASpec(4, 8), "b": LoRASpec(4, 8)}, FAMILY_TARGETS["llama"])
    randomize_adapters(model, std=0.3)
    prompt = ids(2, 5)
    kw = dict(attention_mask=torch.ones_like(prompt), max_new_tokens=5, min_new_tokens=5, num_beams=3,
              do_sample=False, pad_token_id=0)
    with routing(model, RoutingPlan.by_sample(["a", "b"])):
        cached = model.generate(prompt, **kw)
        recomputed = model.generate(prompt, use_cache=False, **kw)
    assert torch.equal(cached, recomputed)


def test_attach_generic_decoder_and_all_linear():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = nn.Linear(8, 16)
            self.out = nn.Linear(16, 8)

        def forward(self, x):
            return self.out(torch.relu(self.inp(x)))

    model = nn.Sequential(Block(), Block())
    layers = attach(model, {"a": LoRASpec(2, 4)}, "all-linear")
    assert len(layers) == 4 and all(isinstance(m, MultiLoRALinear) for m in layers)
    with pytest.raises(ValueError, match="no nn.Linear"):
        attach(nn.Sequential(nn.Linear(2, 2)), {"a": LoRASpec(1, 1)}, ["missing"])
    with pytest.raises(ValueError, match="rank"):
        LoRASpec(0, 1)


def test_a_mix_of_two_adapter_folders_changes_each_weight_by_its_share_of_both(tmp_path):
    """mix_adapter_folders: one adapter per layer whose s·BA is (1 − t) of the first folder's plus t of the second's
    (other ranks and scalings), applied from the folder's own description; scripts/mix_encoder_lora.py writes it."""
    import copy

    from conftest import load_script
    from mmlora.lora import (apply_adapter_folder, detach, lora_layers, mix_adapter_folders, read_adapter_folder,
                             save_adapters)

    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4))
    folders = {}
    for name, spec in (("a", LoRASpec(rank=2, alpha=4)), ("b", LoRASpec(rank=3, alpha=2, use_rslora=True))):
        m = copy.deepcopy(base)
        attach(m, {"encoder": spec}, ["0", "2"])
        for p in adapter_parameters(m):
            p.data.normal_(0, 0.5)
        save_adapters(m, tmp_path / name)
        folders[name] = {n: layer.delta_weight("encoder") for n, layer in lora_layers(m)}
    a, b = read_adapter_folder(tmp_path / "a"), read_adapter_folder(tmp_path / "b")
    for t in (0.0, 0.3, 1.0):
        config, tensors = mix_adapter_folders(a, b, t)
        m = apply_adapter_folder(detach(copy.deepcopy(base)), config, tensors, "mixed")
        got = {n: layer.delta_weight("encoder") for n, layer in lora_layers(m)}
        assert set(got) == {"0", "2"} and all(layer.adapters["encoder"].spec.rank == 5 for _, layer in lora_layers(m))
        for n in got:
            torch.testing.assert_close(got[n], (1 - t) * folders["a"][n] + t * folders["b"][n])
    with pytest.raises(ValueError, match="share"):
        mix_adapter_folders(a, b, 1.5)
    with pytest.raises(ValueError, match="other layers"):
        mix_adapter_folders(a, ({**b[0], "layers": {"0": b[0]["layers"]["0"]}}, b[1]), 0.5)
    script = load_script("mix_encoder_lora")
    assert script.main([str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "m"), "--share", "0.3"]) == 0
    saved = read_adapter_folder(tmp_path / "m")
    for k, v in mix_adapter_folders(a, b, 0.3)[1].items():
        torch.testing.assert_close(saved[1][k], v)
    with pytest.raises(SystemExit):
        script.main([str(tmp_path / "a"), str(tmp_path / "nothing"), str(tmp_path / "x")])
