"""LoRA inside the frozen audio encoder (``model.media.audio.encoder_lora``): PEFT's numerics, gradients that reach
it and nothing else of the encoder, a fresh adapter that changes nothing, save / load / init_from, and the clear
errors (feature cache, unknown keys, an encoder without linear layers)."""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import re

import numpy as np
import pytest
import torch

from mmlora.cli import main

LORA = "model.media.audio.encoder_lora={rank: 2, alpha: 4}"


def _model(*overrides: str):
    from mmlora.tasks.cli import build_model, load_run_config

    _, cfg = load_run_config("recipes/asr_tiny.yaml", list(overrides))
    return build_model(cfg)


def _waves(n=3, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(8000 + 1600 * i).astype(np.float32) * 0.1 for i in range(n)]


def _randomize_b(enc, seed=1):
    """Non-zero B (a fresh adapter's B is 0, which would make every comparison trivial)."""
    from mmlora.lora import iter_adapters

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, _, ad in iter_adapters(enc):
            ad.B.copy_(torch.randn(ad.B.shape, generator=g) * 0.1)


def test_encoder_lora_matches_peft_and_a_fresh_one_changes_nothing():
    from peft import LoraConfig, get_peft_model

    from mmlora.encoders.whisper import WhisperAudioEncoder
    from mmlora.lora import iter_adapters

    plain = _model()
    model = _model(LORA)
    enc, enc0 = model.encoders["audio"], plain.encoders["audio"]
    waves = _waves()
    # fresh adapters (B = 0): the encoder's output is exactly what it was without them
    torch.testing.assert_close(enc.encode(waves).x, enc0.encode(waves).x, rtol=0, atol=0)

    _randomize_b(enc)
    targets = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]
    peft_model = get_peft_model(copy.deepcopy(enc0.model), LoraConfig(r=2, lora_alpha=4, target_modules=targets,
                                                                       lora_dropout=0.0))
    mods = dict(peft_model.base_model.model.named_modules())
    n = 0
    for path, name, ad in iter_adapters(enc):
        layer = mods[path.removeprefix("model.")]
        with torch.no_grad():
            layer.lora_A["default"].weight.copy_(ad.A)
            layer.lora_B["default"].weight.copy_(ad.B)
        n += 1
    assert n == 6 * 2  # six linear layers in each of random:tiny's two encoder layers
    ref = WhisperAudioEncoder(enc0.cfg, model=peft_model.base_model.model, feature_extractor=enc0.feature_extractor)
    got, want = enc.encode(waves), ref.encode(waves)
    torch.testing.assert_close(got.x, want.x, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got.x, enc0.encode(waves).x, atol=1e-3)  # the adapters act: the test can fail


def test_gradients_reach_the_encoder_lora_and_no_frozen_weight(corpus):
    model = _model(LORA)
    model.train()
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    enc_names = {n for n in names if n.startswith("encoders.audio.")}
    assert enc_names and all(".adapters.encoder." in n for n in enc_names)
    groups = {g["name"]: g["params"] for g in model.param_groups()}
    assert {id(p) for p in groups["encoder"]} == {id(p) for p in model.encoder_adapter_parameters("audio")}
    from mmlora.data.collate import collate_samples
    from mmlora.tasks.speech import SpeechDataset, read_manifest

    ds = SpeechDataset(read_manifest(corpus / "train.jsonl"), ("audio",))
    batch = collate_samples([ds[i] for i in range(3)], model.prompts)
    model(batch)["loss"].backward()
    grads = {n: p.grad for n, p in model.named_parameters() if n in enc_names}
    assert all(g is not None for g in grads.values())
    assert any(g.abs().sum() > 0 for n, g in grads.items() if n.endswith(".B"))  # B gets a gradient at once
    frozen = [n for n, p in model.named_parameters() if n.startswith("encoders.") and not p.requires_grad]
    assert frozen and all(dict(model.named_parameters())[n].grad is None for n in frozen)
    # outside training (no_grad / eval) the encoder builds no graph
    with torch.no_grad():
        assert not model.encoders["audio"].encode(_waves(1)).x.requires_grad


def test_train_saves_loads_and_init_from_keeps_a_missing_encoder_lora_fresh(corpus, tmp_path, capsys):
    from safetensors.torch import load_file

    from mmlora.model import MultimodalLM

    out = tmp_path / "run"
    assert main(["train", "recipes/asr_tiny.yaml", f"data.train_manifest={corpus / 'train.jsonl'}", LORA,
                 f"train.output_dir={out}", "train.max_steps=3", "train.lr=1e-2", "train.save_every=0",
                 "train.group_lr={encoder: 5e-2}"]) == 0
    folder = out / "final" / "model"
    saved = load_file(str(folder / "encoder_adapters" / "audio" / "adapters.safetensors"))
    assert saved and any(k.endswith(".B") and v.abs().sum() > 0 for k, v in saved.items())  # trained away from 0
    loaded = MultimodalLM.from_pretrained(folder)
    got = {k.split("encoders.audio.", 1)[1]: v for k, v in loaded.named_parameters() if k.startswith("encoders.audio")
           and ".adapters." in k}
    assert len(got) == len(saved)
    for k, v in got.items():  # saved key: layer path . adapter . A|B
        torch.testing.assert_close(v, saved[k.replace(".adapters.", ".")], rtol=0, atol=0)
    assert main(["evaluate", "--model", str(folder), "--manifest", str(corpus / "train.jsonl"), "--max-samples", "2"]) == 0
    capsys.readouterr()

    # train.init_map renames the LLM's weights; the encoder LoRA loads by name all the same
    renamed = _model(LORA, f"train.init_from={folder}", "train.init_map={'adapters.default.': 'adapters.default.'}")
    for k, v in got.items():
        torch.testing.assert_close(dict(renamed.named_parameters())[f"encoders.audio.{k}"], v, rtol=0, atol=0)

    # a model trained without encoder LoRA starts one with it: its encoder adapters stay fresh (B = 0)
    plain = tmp_path / "plain"
    assert main(["train", "recipes/asr_tiny.yaml", f"data.train_manifest={corpus / 'train.jsonl'}",
                 f"train.output_dir={plain}", "train.max_steps=2", "train.save_every=0"]) == 0
    model = _model(LORA, f"train.init_from={plain / 'final' / 'model'}")
    bs = [p for n, p in model.named_parameters() if n.startswith("encoders.") and n.endswith(".B")]
    assert bs and all(torch.equal(b, torch.zeros_like(b)) for b in bs)
    ref = MultimodalLM.from_pretrained(plain / "final" / "model")
    for n, p in ref.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(dict(model.named_parameters())[n], p, rtol=0, atol=0)
    # ... but a saved folder that lacks them for a config that has them is refused, and the reverse too
    with pytest.raises(ValueError, match="no encoder_adapters/audio/"):
        MultimodalLM.from_pretrained(plain / "final" / "model", media={"audio": {
            **json.loads((plain / "final" / "model" / "config.json").read_text())["model"]["media"]["audio"],
            "encoder_lora": {"rank": 2, "alpha": 4}}})
    from mmlora.tasks.cli import build_model, load_run_config

    # a recipe without encoder LoRA that starts from it takes the folder's (mmlora train; logged), so the encoder
    # reads as the saved model's did; the model API without that step refuses
    for extra in ([], ["train.init_map={'adapters.default.': 'adapters.default.'}"]):  # also with renaming
        adopted = _model(f"train.init_from={folder}", *extra)
        assert adopted.cfg.media["audio"].encoder_lora == {"rank": 2, "alpha": 4}
        for k, v in got.items():
            torch.testing.assert_close(dict(adopted.named_parameters())[f"encoders.audio.{k}"], v, rtol=0, atol=0)
    with pytest.raises(ValueError, match="encoder LoRA for audio"):
        _model().load_trainable(folder, new_modalities=True)

    # an AVSR run taking only its audio projector (train.init_projectors) takes the encoder LoRA that projector was
    # trained on, weights and spec; without the spec the model API refuses the projector alone
    _, cfg = load_run_config("recipes/avsr_tiny.yaml", [f"train.init_projectors={{audio: {folder}}}"])
    avsr = build_model(cfg)
    assert avsr.cfg.media["audio"].encoder_lora == {"rank": 2, "alpha": 4} and not avsr.cfg.media["video"].encoder_lora
    for k, v in got.items():
        torch.testing.assert_close(dict(avsr.named_parameters())[f"encoders.audio.{k}"], v, rtol=0, atol=0)
    torch.testing.assert_close(avsr.projectors["audio"].state_dict(), loaded.projectors["audio"].state_dict())
    _, plain_cfg = load_run_config("recipes/avsr_tiny.yaml", [])
    with pytest.raises(ValueError, match="trained with LoRA inside its encoder"):
        build_model(plain_cfg).load_projector("audio", folder)

    # a lip reader starting from it has no audio at all: the LLM's LoRA loads, the audio encoder LoRA is left out
    # as the audio projector is (train_grid.sh's GV from the release)
    _, cfg = load_run_config("recipes/vsr_tiny.yaml", [f"train.init_from={folder}"])
    vsr, ref = build_model(cfg), dict(loaded.named_parameters())
    assert "audio" not in vsr.encoders
    lora = {n: p for n, p in vsr.named_parameters() if n.startswith("llm.") and ".adapters." in n}
    assert lora and all(torch.equal(p, ref[n]) for n, p in lora.items())


def test_encoder_lora_errors_name_the_field(corpus, tmp_path, capsys):
    base = ["train", "recipes/asr_tiny.yaml", f"data.train_manifest={corpus / 'train.jsonl'}", LORA,
            f"train.output_dir={tmp_path / 'x'}"]
    assert main([*base, f"data.feature_cache={tmp_path / 'cache'}"]) == 2
    assert "encoder_lora" in capsys.readouterr().err and not (tmp_path / "cache").exists()
    assert main(["cache-features", "recipes/asr_tiny.yaml", LORA, f"data.feature_cache={tmp_path / 'cache'}"]) == 2
    assert "encoder_lora" in capsys.readouterr().err
    with pytest.raises(ValueError, match="encoder_lora: unknown key.*dropout"):
        _model("model.media.audio.encoder_lora={rank: 2, alpha: 4, dropout: 0.1}")
    with pytest.raises(ValueError, match="encoder_lora needs rank and alpha"):
        _model("model.media.audio.encoder_lora={rank: 2}")
    with pytest.raises(ValueError, match=r"model\.media\.audio\.encoder_lora: no nn.Linear"):
        _model("model.media.audio.encoder_lora={rank: 2, alpha: 4, targets: [nope]}")
    from mmlora.tasks.cli import build_model, load_run_config

    _, cfg = load_run_config("recipes/vsr_tiny.yaml", ["model.media.video.encoder_lora={rank: 2, alpha: 4, "
                                                       "targets: [_depthwise_conv]}"])  # k×k convs take none
    with pytest.raises(ValueError, match=r"model\.media\.video\.encoder_lora: no nn.Linear.*EfficientNet"):
        build_model(cfg)


VLORA = "model.media.video.encoder_lora={rank: 2, alpha: 4}"


def _vsr(*overrides: str):
    from mmlora.tasks.cli import build_model, load_run_config

    _, cfg = load_run_config("recipes/vsr_tiny.yaml", list(overrides))
    return build_model(cfg)


def test_efficientnet_lora_on_its_1x1_convs_matches_peft_and_a_fresh_one_changes_nothing():
    """The lip encoder (EfficientNet-Lite0) takes LoRA on its 1×1 convs (expansion, projection, head), turned into
    linear layers with the same weights: against PEFT's LoRA on the untouched network's Conv2d layers."""
    from peft import LoraConfig, get_peft_model

    from mmlora.encoders.efficientnet import EfficientNetEncoder
    from mmlora.lora import iter_adapters

    def rel(a, b):  # the random network's features are tiny (about 1e-8): compare relative to their size
        return ((a - b).abs().max() / b.abs().max()).item()

    plain, model = _vsr(), _vsr(VLORA)
    enc, enc0 = model.encoders["video"], plain.encoders["video"]
    frames = torch.rand(5, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        # fresh adapters (B = 0): the plain network reads as the folded program did (BatchNorm folded in float64)
        base = enc0.encode_frames(frames)
        assert base.abs().max() > 0 and rel(enc.encode_frames(frames), base) < 1e-4
    _randomize_b(enc)
    ad = {path.removeprefix("model."): a for path, _, a in iter_adapters(enc)}
    assert len(ad) == 16 * 2 - 1 + 1  # 16 blocks: expansion (all but the first) and projection; the head
    peft_model = get_peft_model(copy.deepcopy(enc0.model), LoraConfig(
        r=2, lora_alpha=4, target_modules=["_expand_conv", "_project_conv", "_conv_head"], lora_dropout=0.0))
    mods = dict(peft_model.base_model.model.named_modules())
    with torch.no_grad():
        for path, a in ad.items():
            mods[path].lora_A["default"].weight.copy_(a.A[:, :, None, None])
            mods[path].lora_B["default"].weight.copy_(a.B[:, :, None, None])
        ref = EfficientNetEncoder(enc0.cfg, model=peft_model.base_model.model)
        ref.linearized = True  # the PEFT network runs as it is (not folded): its adapters train, with a graph
        got = enc.encode_frames(frames)  # no graph: the folded program with the adapters merged into their convs
    with torch.enable_grad():  # a graph: the plain network with the adapters, as training runs it
        assert enc.needs_graph() and ref.needs_graph()
        plain_lora, want = enc.encode_frames(frames).detach(), ref.encode_frames(frames).detach()
    assert rel(plain_lora, want) < 1e-4 and rel(got, want) < 1e-4
    assert rel(got, plain_lora) < 1e-5  # merged and folded in float64, then fp32: the same function
    assert rel(got, base) > 1e-2  # the adapters act: the comparison can fail


def test_efficientnet_lora_folded_program_follows_the_adapters_and_frozen_adapters_run_folded():
    """Inference with LoRA inside the lip encoder runs the folded program with the adapters merged: rebuilt after an
    optimizer step changes them in place, and used also with grad enabled where no adapter trains. Where they train,
    the live program (adapters folded in at every batch) runs, built once: an optimizer step does not rebuild it;
    with ``folded_training`` off the plain network runs."""
    from mmlora.encoders.efficientnet import FoldedLite0

    enc = _vsr(VLORA).encoders["video"]
    _randomize_b(enc)
    frames = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    calls = []
    real_call = FoldedLite0.__call__

    def spy(self, x):
        calls.append(self)
        return real_call(self, x)

    FoldedLite0.__call__ = spy
    try:
        with torch.no_grad():
            a = enc.encode_frames(frames)
            assert len(calls) == 1 and not calls[0].live
            params = [p for p in enc.parameters() if p.requires_grad]
            for p in params:  # an optimizer step on the adapters (in place)
                p.mul_(1.5)
            b = enc.encode_frames(frames)
        assert calls[1] is not calls[0]  # rebuilt: the merged weights follow the adapters
        with torch.enable_grad():
            live = enc.encode_frames(frames)  # the adapters train: the live program, with their graph
            assert len(calls) == 3 and calls[2].live and live.requires_grad
            enc.cfg.folded_training = False
            want = enc.encode_frames(frames).detach()  # the plain network with the changed adapters
            assert len(calls) == 3
            enc.cfg.folded_training = True
            for p in params:
                p.data.mul_(0.5)  # an optimizer step: the live program stays
            again = enc.encode_frames(frames)
            assert len(calls) == 4 and enc._live[1] is not None and calls[3].live
            live_program = enc._live[1]
            enc.encode_frames(frames)
            assert enc._live[1] is live_program  # not rebuilt for the same frozen weights
            for p in params:
                p.data.mul_(2.0)
                p.requires_grad_(False)
            frozen = enc.encode_frames(frames)  # nothing trains: the folded program, built once for these weights
            assert len(calls) == 6 and calls[5] is calls[1] and not frozen.requires_grad
    finally:
        FoldedLite0.__call__ = real_call
    rel = lambda x, y: ((x - y).abs().max() / y.abs().max()).item()  # noqa: E731
    assert rel(b, want) < 1e-5 and rel(frozen, want) < 1e-5 and rel(live.detach(), want) < 1e-5
    assert rel(a, want) > 1e-3 and rel(again.detach(), want) > 1e-3  # the adapters' changes show: it can fail


def _bn_randomized_lora_encoder(seed=3, dtype=torch.float64):
    """The tiny VSR model's lip encoder with LoRA, non-zero B and BatchNorms whose statistics and affine weights are
    not the identity (a fresh network's are), so that folding them is tested, in ``dtype``."""
    enc = _vsr(VLORA).encoders["video"]
    _randomize_b(enc)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in enc.model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return enc.to(dtype)


def _features_and_adapter_grads(enc, frames, folded: bool):
    enc.cfg.folded_training = folded
    params = [p for p in enc.parameters() if p.requires_grad]
    for p in params:
        p.grad = None
    with torch.enable_grad():
        f = enc.encode_frames(frames)
        probe = torch.randn(f.shape, generator=torch.Generator().manual_seed(5), dtype=f.dtype)
        (f * probe).sum().backward()
    return f.detach(), [p.grad.clone() for p in params]


def test_efficientnet_lora_trains_through_the_folded_program_as_through_the_plain_network():
    """Training LoRA inside the lip encoder runs the folded program with ``(W + s·B A)`` folded into each conv at
    every batch: in float64 its features and every adapter's gradient equal the plain network's (conv, BatchNorm,
    LoRA linear), the reference for what LoRA computes (PEFT's, above)."""
    enc = _bn_randomized_lora_encoder()
    frames = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.enable_grad():
        assert enc.needs_graph() and enc.folds_in_training() and enc.program().live
    f_live, g_live = _features_and_adapter_grads(enc, frames, folded=True)
    f_plain, g_plain = _features_and_adapter_grads(enc, frames, folded=False)
    assert f_plain.dtype == torch.float64 and len(g_plain) == 2 * 32
    torch.testing.assert_close(f_live, f_plain, rtol=1e-9, atol=1e-9 * f_plain.abs().max().item())
    for gl, gp in zip(g_live, g_plain):
        assert gp.abs().max() > 0
        torch.testing.assert_close(gl, gp, rtol=1e-7, atol=1e-9 * gp.abs().max().item())


def test_efficientnet_lora_trains_through_the_plain_network_where_folding_cannot():
    """Adapter dropout in training mode (the folded weight cannot drop each pixel's input) or a trained weight that is
    not an adapter's (here a BatchNorm's) sends training through the plain network; gradients still reach them."""
    enc = _bn_randomized_lora_encoder(dtype=torch.float32)
    frames = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    bn = enc.model._bn0.weight
    with torch.enable_grad():
        assert enc.folds_in_training()
        bn.requires_grad_(True)
        assert not enc.folds_in_training() and enc.program() is None
        enc.encode_frames(frames).sum().backward()
        assert bn.grad is not None and bn.grad.abs().sum() > 0
        bn.requires_grad_(False)
        from mmlora.lora import iter_adapters

        ad = next(a for _, _, a in iter_adapters(enc))
        ad.spec = dataclasses.replace(ad.spec, dropout=0.1)
        layer = next(m for m in enc.modules() if ad in getattr(m, "adapters", {}).values())
        enc.train()  # an encoder stays in eval mode (frozen BatchNorm): its adapters' dropout never acts
        assert not layer.training and enc.folds_in_training()
        layer.train()  # unless a layer is put in training mode by hand
        assert not enc.folds_in_training() and enc.program() is None
        enc.encode_frames(frames).sum().backward()
        assert ad.A.grad is not None


def test_efficientnet_lora_trains_saves_and_loads(corpus, tmp_path, capsys):
    from mmlora.data.collate import collate_samples
    from mmlora.model import MultimodalLM
    from mmlora.tasks.speech import SpeechDataset, read_manifest

    model = _vsr(VLORA)
    model.train()
    enc_names = {n for n, p in model.named_parameters() if p.requires_grad and n.startswith("encoders.video.")}
    assert enc_names and all(".adapters.encoder." in n for n in enc_names)
    ds = SpeechDataset(read_manifest(corpus / "train.jsonl"), ("video",))
    model(collate_samples([ds[i] for i in range(2)], model.prompts))["loss"].backward()
    params = dict(model.named_parameters())
    assert any(params[n].grad is not None and params[n].grad.abs().sum() > 0 for n in enc_names if n.endswith(".B"))
    assert all(p.grad is None for n, p in params.items() if n.startswith("encoders.") and n not in enc_names)

    out = tmp_path / "vsr"
    assert main(["train", "recipes/vsr_tiny.yaml", f"data.train_manifest={corpus / 'train.jsonl'}", VLORA,
                 f"train.output_dir={out}", "train.max_steps=2", "train.save_every=0",
                 "train.group_lr={encoder: 5e-2}"]) == 0
    folder = out / "final" / "model"
    assert (folder / "encoder_adapters" / "video" / "adapters.safetensors").is_file()
    saved = {n: p for n, p in MultimodalLM.from_pretrained(folder).named_parameters() if ".adapters.encoder." in n}
    assert saved and any(p.abs().sum() > 0 for n, p in saved.items() if n.endswith(".B"))  # trained away from 0
    again = _vsr(f"train.init_from={folder}")  # the recipe without encoder_lora takes the folder's
    for n, p in saved.items():
        torch.testing.assert_close(dict(again.named_parameters())[n], p, rtol=0, atol=0)
    assert main(["evaluate", "--model", str(folder), "--manifest", str(corpus / "train.jsonl"), "--max-samples", "2"]) == 0
    # continued with the encoder's LoRA frozen (train.freeze_groups): it saves unchanged, the LLM's LoRA trains
    held = tmp_path / "held"
    assert main(["train", "recipes/vsr_tiny.yaml", f"data.train_manifest={corpus / 'train.jsonl'}",
                 f"train.init_from={folder}", f"train.output_dir={held}", "train.max_steps=2", "train.save_every=0",
                 "train.freeze_groups=[encoder]", "train.group_lr={encoder: 5e-2}"]) == 0
    after = dict(MultimodalLM.from_pretrained(held / "final" / "model").named_parameters())
    for n, p in saved.items():
        torch.testing.assert_close(after[n], p, rtol=0, atol=0)
    before = dict(MultimodalLM.from_pretrained(folder).named_parameters())
    assert any(not torch.equal(after[n], before[n]) for n in after if n.startswith("llm.") and n.endswith(".B"))
    capsys.readouterr()


def _features_and_encoder_grads(m, device, batch, encode, autocast=False):
    """One training forward and backward of model ``m`` on ``device``: ``encode(m)``'s features and the loss of
    ``batch`` (under bf16 autocast if asked), then the gradients of the encoders' trainable weights (CPU, fp32)."""
    m.zero_grad(set_to_none=True)
    with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
        x = encode(m)
        loss = m(batch)["loss"]
    loss.backward()
    grads = {n: p.grad.float().cpu() for n, p in m.named_parameters() if n.startswith("encoders.") and p.requires_grad}
    return x.float().detach().cpu(), grads


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_encoder_lora_forward_and_gradients_match_the_cpu(corpus):
    """On CUDA the encoder's adapters run through the kernel backend the LLM's use; its features and the adapters'
    gradients must equal the CPU reference (fp32), and under bf16 autocast (training) stay close to it."""
    from mmlora.data.collate import collate_samples
    from mmlora.tasks.speech import SpeechDataset, read_manifest

    model = _model(LORA)
    _randomize_b(model.encoders["audio"])
    model.train()
    ds = SpeechDataset(read_manifest(corpus / "train.jsonl"), ("audio",))
    batch = collate_samples([ds[i] for i in range(4)], model.prompts)
    waves = _waves(4)

    def run(m, device, autocast=False):
        return _features_and_encoder_grads(m, device, batch, lambda m: m.encoders["audio"].encode(waves).x, autocast)

    torch.manual_seed(0)
    x_cpu, g_cpu = run(model, "cpu")
    gpu = copy.deepcopy(model).to("cuda")
    torch.manual_seed(0)
    x_gpu, g_gpu = run(gpu, "cuda")
    torch.testing.assert_close(x_gpu, x_cpu, rtol=1e-3, atol=1e-3)
    assert g_cpu and g_gpu.keys() == g_cpu.keys()
    for n in g_cpu:
        torch.testing.assert_close(g_gpu[n], g_cpu[n], rtol=2e-2, atol=2e-3)
    torch.manual_seed(0)
    x_bf, g_bf = run(gpu, "cuda", autocast=True)
    assert (x_bf - x_cpu).abs().max() < 0.1 * x_cpu.abs().max()
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for n, g in g_bf.items() if n.endswith(".B"))


@contextlib.contextmanager
def _no_tf32():
    """fp32 convolutions and matmuls on CUDA in full fp32 (cuDNN's default for convs is TF32)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_efficientnet_lora_forward_and_gradients_match_the_cpu(corpus):
    """The lip encoder's adapters on CUDA (the live folded program, channels-last, as in training; and the plain
    network) against the CPU (fp32): features and the adapters' gradients; under bf16 autocast finite gradients of
    every B. Relative to the random network's tiny features."""
    from mmlora.data.collate import collate_samples
    from mmlora.tasks.speech import SpeechDataset, read_manifest

    model = _vsr(VLORA)
    _randomize_b(model.encoders["video"])
    model.train()
    ds = SpeechDataset(read_manifest(corpus / "train.jsonl"), ("video",))
    batch = collate_samples([ds[i] for i in range(4)], model.prompts)
    frames = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))

    def run(m, device, autocast=False):
        return _features_and_encoder_grads(m, device, batch, lambda m: m.encoders["video"].encode_frames(frames),
                                           autocast)

    torch.manual_seed(0)
    x_cpu, g_cpu = run(model, "cpu")
    gpu = copy.deepcopy(model).to("cuda")
    torch.manual_seed(0)
    with _no_tf32():  # cuDNN runs fp32 convs in TF32 by default (10-bit mantissa): not an fp32 comparison
        x_gpu, g_gpu = run(gpu, "cuda")
    assert (x_gpu - x_cpu).abs().max() < 1e-3 * x_cpu.abs().max()
    assert g_cpu and g_gpu.keys() == g_cpu.keys()
    for n in g_cpu:
        err = ((g_gpu[n] - g_cpu[n]).abs().max() / g_cpu[n].abs().max()).item()
        assert err <= 2e-2, f"{n}: gradient off by {err:.3g} of its largest value"
    gpu.encoders["video"].cfg.folded_training = False  # the plain network on CUDA: the same
    with _no_tf32():
        x_plain, g_plain = run(gpu, "cuda")
    gpu.encoders["video"].cfg.folded_training = True
    assert (x_plain - x_cpu).abs().max() < 1e-3 * x_cpu.abs().max()
    for n in g_cpu:
        err = ((g_plain[n] - g_cpu[n]).abs().max() / g_cpu[n].abs().max()).item()
        assert err <= 2e-2, f"{n} (plain network): gradient off by {err:.3g} of its largest value"
    x_bf, g_bf = run(gpu, "cuda", autocast=True)
    assert (x_bf - x_cpu).abs().max() < 0.1 * x_cpu.abs().max()
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for n, g in g_bf.items() if n.endswith(".B"))
    with torch.no_grad(), _no_tf32():  # inference: the folded program with the adapters merged (channels-last)
        enc = gpu.encoders["video"]
        assert not enc.needs_graph()
        x_fold = enc.encode_frames(frames).float().cpu()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            x_fold_bf = enc.encode_frames(frames).float().cpu()
    assert (x_fold - x_cpu).abs().max() < 1e-3 * x_cpu.abs().max()
    assert (x_fold_bf - x_cpu).abs().max() < 0.1 * x_cpu.abs().max()


def test_features_from_encode_media_pass_through_with_their_graph(corpus):
    """A benchmark (scripts/bench_asr_train.py) times the encoder apart: encode_media's Features handed back to the
    model keep the graph into the encoder LoRA; cached per-item features are refused."""
    from mmlora.data.collate import collate_samples
    from mmlora.tasks.speech import SpeechDataset, read_manifest

    model = _model(LORA)
    model.train()
    ds = SpeechDataset(read_manifest(corpus / "train.jsonl"), ("audio",))
    batch = collate_samples([ds[i] for i in range(2)], model.prompts)
    feats = model.encode_media(batch["media"])
    model({**batch, "media": feats})["loss"].backward()
    assert all(p.grad is not None for p in model.encoder_adapter_parameters())
    cached = [{"x": torch.zeros(5, feats["audio"].x.shape[-1])}]
    with pytest.raises(ValueError, match="encoder_lora .*cannot be cached"):
        model.encode_media({"audio": cached})


def test_check_lip_encoder_paths_script_compares_the_two_training_paths(corpus, tmp_path, capsys):
    """scripts/check_lip_encoder_paths.py on a saved lip reader with LoRA inside its encoder: both fp32 paths against
    float64, printed; a model whose lip encoder has no LoRA is named."""
    from conftest import load_script

    check = load_script("check_lip_encoder_paths")
    model = _vsr(VLORA)
    _randomize_b(model.encoders["video"])
    model.save_pretrained(tmp_path / "m")
    assert check.main([str(tmp_path / "m"), str(corpus / "train.jsonl"), "--frames", "8"]) == 0
    out = capsys.readouterr().out
    assert "64 adapter weights, 8 frames" in out
    diffs = [float(x) for x in re.findall(r"features ([0-9.e+-]+);", out)]
    assert len(diffs) == 3 and max(diffs) < 1e-4
    _vsr().save_pretrained(tmp_path / "plain")
    with pytest.raises(SystemExit, match="no LoRA that trains"):
        check.main([str(tmp_path / "plain"), str(corpus / "train.jsonl")])
