"""Local HF vision towers (CLIP with CLS, SigLIP without, dual CLIPModel folders) as frozen encoders."""
from __future__ import annotations

import pytest
import torch
import transformers as tf

from mmlora.encoders import HFVisionConfig, HFVisionEncoder, build_encoder, config_from_dict

TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, image_size=32,
            patch_size=8)
MEAN, STD = [0.48, 0.46, 0.41], [0.27, 0.26, 0.28]


def save_tower(folder, kind: str):
    torch.manual_seed(0)
    if kind == "clip":
        model = tf.CLIPVisionModel(tf.CLIPVisionConfig(**TINY))
    elif kind == "siglip":
        model = tf.SiglipVisionModel(tf.SiglipVisionConfig(**TINY))
    else:  # dual encoder: only the vision tower is used
        model = tf.CLIPModel(tf.CLIPConfig(text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                                            num_attention_heads=4, vocab_size=50),
                                           vision_config=TINY, projection_dim=16))
    model.eval().save_pretrained(folder)
    tf.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, image_mean=MEAN,
                          image_std=STD).save_pretrained(folder)
    return model


def reference(model, images):
    """transformers' forward on our preprocessing (whole frame resized, (x - mean) / std)."""
    x = torch.nn.functional.interpolate(images, size=(32, 32), mode="bilinear", antialias=True)
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    tower = getattr(model, "vision_model", model)
    with torch.no_grad():
        return tower(pixel_values=x, output_hidden_states=True).hidden_states


@pytest.mark.parametrize("kind,has_cls", [("clip", True), ("siglip", False), ("clip-dual", True)])
def test_tokens_layers_and_cls(tmp_path, kind, has_cls):
    model = save_tower(tmp_path, kind)
    enc = build_encoder(HFVisionConfig(path=str(tmp_path)))
    assert enc.drop_cls is has_cls and enc.output_dim == 32
    images = torch.rand(2, 3, 40, 40)
    f = enc.encode([images[0], images[1]], output_hidden_states=True)
    ref = reference(model, images)
    skip = 1 if has_cls else 0
    assert f.x.shape == (2, 16, 32) and f.tokens_per_step == 16 and f.rate_hz is None
    torch.testing.assert_close(f.x, ref[-1][:, skip:], rtol=1e-5, atol=1e-5)
    assert len(f.hidden_states) == 3  # one per layer (QLadder)
    for l in range(3):
        torch.testing.assert_close(f.hidden_states[l], ref[l + 1][:, skip:], rtol=1e-5, atol=1e-5)
    pen = HFVisionEncoder(HFVisionConfig(path=str(tmp_path), layer=-2, drop_cls=False))
    torch.testing.assert_close(pen.encode([images[0]]).x[0], ref[-2][0], rtol=1e-5, atol=1e-5)
    assert pen.encoder_id != enc.encoder_id


def test_video_frames_and_errors(tmp_path):
    save_tower(tmp_path, "siglip")
    enc = build_encoder(config_from_dict({"kind": "hf_vision", "path": str(tmp_path), "frames": {"stride": 3}}))
    vid = torch.randint(0, 256, (7, 32, 32, 3), dtype=torch.uint8)
    f = enc.encode([vid, vid[:2]])
    assert f.x.shape == (2, 3 * 16, 32) and f.mask.sum(1).tolist() == [48, 16] and f.rate_hz == 25 / 3
    torch.testing.assert_close(f.x[0, 16:32], enc.encode([vid[3]]).x[0], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="images only"):
        enc.encode([vid], output_hidden_states=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty: not a transformers model folder"):
        build_encoder(HFVisionConfig(path=str(tmp_path / "empty")))
