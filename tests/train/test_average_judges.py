"""``mmlora average-models`` on model folders with a trained Whisper judge (session 65): the packed decoder averaged
as the weights it stands for (not as its packed integers), the judge's encoder LoRA as the exact mean of the weight
changes; the helpers against direct computations."""
from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from mmlora.encoders.whisper_judge import (WhisperJudge, mean_decoder_states, pack_decoder_delta, packing_of,
                                           unpack_decoder_state)
from mmlora.lora import (LoRASpec, adapter_parameters, apply_adapter_folder, attach, detach, lora_layers,
                         mean_adapter_folders, read_adapter_folder, save_adapters)
from mmlora.model import WHISPER_DECODER, WHISPER_ENCODER
from mmlora.train.checkpoint import average_model_dirs, mean_tensors


def _own() -> dict:
    g = torch.Generator().manual_seed(0)
    return {"layers.0.fc1.weight": torch.randn(8, 128, generator=g), "layers.0.fc1.bias": torch.randn(8, generator=g)}


def _trained(own: dict, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {k: v + 0.1 * torch.randn(v.shape, generator=g) for k, v in own.items()}


@pytest.mark.parametrize("bits,group", [(4, 64), (8, 32)])
def test_packed_decoders_are_averaged_as_weights_and_packed_again_alike(bits, group):
    own = _own()
    packed = [pack_decoder_delta(_trained(own, s), own, bits=bits, group=group) for s in (1, 2, 3)]
    assert packing_of(packed[0]) == (bits, group) and packing_of(own) is None
    plain = [unpack_decoder_state(p, own) for p in packed]
    w = [1.0, 2.0, 1.0]
    got = mean_decoder_states(packed, w, own, ["a", "b", "c"])
    assert packing_of(got) == (bits, group)
    back = unpack_decoder_state(got, own)
    top = 2 ** (bits - 1) - 1
    for k in own:
        want = (plain[0][k] + 2 * plain[1][k] + plain[2][k]) / 4
        step = (want - own[k]).abs().max() / top
        assert (back[k] - want).abs().max() <= 0.5 * step + 1e-6, k  # within half a level of the packing
    if bits == 4:  # the packed bytes averaged (two levels a byte): far off, what this guards against
        naive = unpack_decoder_state(mean_tensors(packed, w), own)["layers.0.fc1.weight"]
        assert (naive - back["layers.0.fc1.weight"]).abs().max() > 0.05
    with pytest.raises(ValueError, match="packed and plain"):
        mean_decoder_states([packed[0], plain[1]], [1, 1], own, ["a", "b"])
    with pytest.raises(ValueError, match="Whisper's own decoder"):
        mean_decoder_states(packed[:2], [1, 1], None, ["a", "b"])
    plain_mean = mean_decoder_states(plain[:2], [1, 1], None, ["a", "b"])  # plain ones need no original
    torch.testing.assert_close(plain_mean["layers.0.fc1.bias"], (plain[0]["layers.0.fc1.bias"]
                                                                 + plain[1]["layers.0.fc1.bias"]) / 2)


def _lora_folder(path, base: nn.Module, seed: int, rank: int = 2):
    m = copy.deepcopy(base)
    attach(m, {"encoder": LoRASpec(rank=rank, alpha=2 * rank)}, ["0"])
    torch.manual_seed(seed)
    for p in adapter_parameters(m):
        p.data.normal_(0, 0.5)
    save_adapters(m, path)
    return {n: layer.delta_weight("encoder") for n, layer in lora_layers(m)}


def test_the_mean_of_adapter_folders_is_the_mean_of_their_weight_changes(tmp_path):
    base = nn.Sequential(nn.Linear(6, 5))
    deltas = [_lora_folder(tmp_path / f"f{i}", base, i, rank=i + 1) for i in range(3)]
    folders = [read_adapter_folder(tmp_path / f"f{i}") for i in range(3)]
    for w in ([1.0, 1.0, 1.0], [0.0, 3.0, 1.0]):
        m = apply_adapter_folder(detach(copy.deepcopy(base)), *mean_adapter_folders(folders, w), "mean")
        (name, layer), = lora_layers(m)
        assert layer.adapters["encoder"].spec.rank == 6
        want = sum(x * d["0"] for x, d in zip(w, deltas)) / sum(w)
        torch.testing.assert_close(layer.delta_weight("encoder"), want)
    with pytest.raises(ValueError, match="weights"):
        mean_adapter_folders(folders, [1.0, 1.0])


def _model_folder(path, own: dict, seed: int, base: nn.Module) -> dict:
    path.mkdir()
    cfg = {"format": "mmlora-model", "model": {"media": {"audio": {"encoder": {"preset": "whisper-tiny.en"}}}}}
    (path / "config.json").write_text(json.dumps(cfg))
    save_file({"w": torch.full((3,), float(seed))}, str(path / "projectors.safetensors"))
    save_file(pack_decoder_delta(_trained(own, seed), own, bits=4), str(path / WHISPER_DECODER))
    return _lora_folder(path / WHISPER_ENCODER, base, seed)


def test_average_models_averages_a_judge_as_weights(tmp_path, monkeypatch):
    own, base = _own(), nn.Sequential(nn.Linear(6, 5))
    da = _model_folder(tmp_path / "a", own, 1, base)
    db = _model_folder(tmp_path / "b", own, 3, base)

    class Own:
        decoder = nn.Module()

    Own.decoder.state_dict = lambda: own
    asked = []
    monkeypatch.setattr(WhisperJudge, "load", classmethod(lambda cls, name: asked.append(name) or Own()))
    out = average_model_dirs([tmp_path / "a", tmp_path / "b"], tmp_path / "avg", [1, 3])
    assert asked == ["whisper-tiny.en"]  # the Whisper the config names, for the packed weights
    assert load_file(str(out / "projectors.safetensors"))["w"].tolist() == [2.5] * 3  # the rest as before
    ua, ub = (unpack_decoder_state(load_file(str(tmp_path / d / WHISPER_DECODER)), own) for d in "ab")
    got = unpack_decoder_state(load_file(str(out / WHISPER_DECODER)), own)
    for k in own:
        want = (ua[k] + 3 * ub[k]) / 4
        assert (got[k] - want).abs().max() <= 0.5 * (want - own[k]).abs().max() / 7 + 1e-6, k
    m = apply_adapter_folder(detach(copy.deepcopy(base)), *read_adapter_folder(out / WHISPER_ENCODER), "mean")
    (_, layer), = lora_layers(m)
    torch.testing.assert_close(layer.delta_weight("encoder"), (da["0"] + 3 * db["0"]) / 4)
    cfg = json.loads((tmp_path / "a/config.json").read_text())
    cfg["model"]["media"]["audio"]["encoder"] = {}
    (tmp_path / "a/config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="preset"):
        average_model_dirs([tmp_path / "a", tmp_path / "b"], tmp_path / "x")
    assert not (tmp_path / "x").exists() and not (tmp_path / ".tmp-x").exists()
    (tmp_path / "b" / "second_judges" / "s1").mkdir(parents=True)  # a folder deeper: refused, not mixed by bytes
    with pytest.raises(ValueError, match=r"b: has second judges \(second_judges/\)"):
        average_model_dirs([tmp_path / "a", tmp_path / "b"], tmp_path / "x")
    assert not (tmp_path / "x").exists()
