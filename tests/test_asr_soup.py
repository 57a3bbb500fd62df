"""scripts/asr_soup.py: the judge of two candidates averaged in weight space, the rest of the folder kept."""
from __future__ import annotations

import copy

import pytest
import torch
from conftest import load_script
from safetensors.torch import load_file, save_file
from torch import nn

from mmlora.encoders.whisper_judge import pack_decoder_delta, unpack_decoder_state
from mmlora.lora import LoRASpec, adapter_parameters, attach, lora_layers, read_adapter_folder, save_adapters

soup = load_script("asr_soup")


def _own() -> dict:
    g = torch.Generator().manual_seed(0)
    return {"layers.0.fc1.weight": torch.randn(8, 128, generator=g), "layers.0.fc1.bias": torch.randn(8, generator=g)}


def _trained(own: dict, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {k: v + 0.1 * torch.randn(v.shape, generator=g) for k, v in own.items()}


def test_the_soups_decoder_is_the_mean_of_the_two_within_the_packings_rounding():
    own = _own()
    ta, tb = _trained(own, 1), _trained(own, 2)
    pa, pb = pack_decoder_delta(ta, own, bits=4), pack_decoder_delta(tb, own, bits=4)
    ua, ub = unpack_decoder_state(pa, own), unpack_decoder_state(pb, own)
    for share in (0.0, 0.5, 1.0):
        got = unpack_decoder_state(soup.soup_state(pa, pb, own, share), own)
        for k in own:
            want = ua[k] + share * (ub[k] - ua[k])
            # 4 bits: one step is the group's largest change / 7; rounding is at most half of one
            step = (want - own[k]).abs().max() / 7
            assert (got[k] - want).abs().max() <= 0.5 * step + 1e-6, k
    mean = unpack_decoder_state(soup.soup_state(pa, pb, own, 0.5), own)["layers.0.fc1.weight"]
    assert not torch.allclose(mean, ua["layers.0.fc1.weight"], atol=1e-3)  # it moved from A towards B
    with pytest.raises(ValueError, match="different weights"):
        soup.soup_state(pa, {k: v for k, v in pb.items() if "bias" not in k}, own, 0.5)


def _folder(tmp_path, name: str, own: dict, seed: int, base: nn.Module) -> tuple:
    d = tmp_path / name
    d.mkdir()
    (d / "config.json").write_text("{}")
    (d / "projectors.safetensors").write_bytes(b"same")
    save_file(pack_decoder_delta(_trained(own, seed), own, bits=4), str(d / soup.WHISPER_DECODER))
    m = copy.deepcopy(base)
    attach(m, {"encoder": LoRASpec(rank=2, alpha=4)}, ["0"])
    torch.manual_seed(seed)
    for p in adapter_parameters(m):
        p.data.normal_(0, 0.5)
    save_adapters(m, d / soup.WHISPER_ENCODER)
    return d, {n: layer.delta_weight("encoder") for n, layer in lora_layers(m)}


def test_make_soup_keeps_the_rest_and_mixes_the_encoder_lora_exactly(tmp_path):
    from mmlora.lora import apply_adapter_folder, detach

    own, base = _own(), nn.Sequential(nn.Linear(6, 5))
    a, da = _folder(tmp_path, "a", own, 1, base)
    b, db = _folder(tmp_path, "b", own, 2, base)
    out = tmp_path / "soup"
    soup.make_soup(a, b, out, own, 0.5)
    assert (out / "projectors.safetensors").read_bytes() == b"same"
    m = apply_adapter_folder(detach(copy.deepcopy(base)), *read_adapter_folder(out / soup.WHISPER_ENCODER), "mixed")
    got = dict((n, layer.delta_weight("encoder")) for n, layer in lora_layers(m))
    torch.testing.assert_close(got["0"], 0.5 * da["0"] + 0.5 * db["0"])
    dec = unpack_decoder_state(load_file(str(out / soup.WHISPER_DECODER)), own)
    assert set(dec) == set(own)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left
    with pytest.raises(FileExistsError, match="--force"):
        soup.make_soup(a, b, out, own, 0.5)
    soup.make_soup(a, b, out, own, 0.0, force=True)
    torch.testing.assert_close(unpack_decoder_state(load_file(str(out / soup.WHISPER_DECODER)), own),
                               unpack_decoder_state(load_file(str(a / soup.WHISPER_DECODER)), own), atol=0.01, rtol=0)


def test_folders_of_two_different_models_are_refused(tmp_path):
    own, base = _own(), nn.Sequential(nn.Linear(6, 5))
    a, _ = _folder(tmp_path, "a", own, 1, base)
    b, _ = _folder(tmp_path, "b", own, 2, base)
    (b / "projectors.safetensors").write_bytes(b"other")
    with pytest.raises(ValueError, match="projectors.safetensors differs"):
        soup.make_soup(a, b, tmp_path / "x", own)
    (b / "projectors.safetensors").unlink()
    with pytest.raises(ValueError, match="different files"):
        soup.make_soup(a, b, tmp_path / "x", own)
    (b / soup.WHISPER_DECODER).unlink()
    with pytest.raises(FileNotFoundError, match="whisper_decoder.safetensors: missing"):
        soup.make_soup(a, b, tmp_path / "x", own)
    assert not (tmp_path / "x").exists()
