"""Typed configs: YAML recipes, key=value overrides with coercion, clear errors, round trips."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
import yaml

from mmlora.config import ConfigError, apply_overrides, dump_config, from_dict, load_config, to_dict


class Mode(enum.Enum):
    FAST = "fast"
    SLOW = "slow"


@dataclass
class Optim:
    lr: float = 1e-3  # learning rate
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW betas
    schedule: Literal["cosine", "constant"] = "cosine"  # decay kind


@dataclass
class Model:
    name: str  # required: no default
    layers: int = 2  # decoder layers
    targets: list[str] = field(default_factory=lambda: ["q_proj"])  # LoRA targets
    rates: dict[str, int] = field(default_factory=dict)  # compression rate per modality
    dropout: float | None = None  # optional
    mode: Mode = Mode.FAST  # an enum
    out: Path = Path("out")  # a path

    def __post_init__(self):
        if self.layers < 1:
            raise ValueError("layers must be >= 1")


@dataclass
class Run:
    model: Model
    optim: Optim = field(default_factory=Optim)
    seed: int = 0
    tag: str = "x"
    debug: bool = False


@pytest.fixture
def recipe(tmp_path):
    p = tmp_path / "run.yaml"
    p.write_text(yaml.safe_dump({"model": {"name": "tiny", "layers": 3, "rates": {"audio": 4}},
                                 "optim": {"lr": "1e-3"}, "seed": 5}))
    return p


def test_load_yaml_and_types(recipe):
    cfg = load_config(Run, recipe)
    assert cfg.model == Model(name="tiny", layers=3, rates={"audio": 4})
    assert cfg.optim.lr == 1e-3 and isinstance(cfg.optim.lr, float)  # YAML reads 1e-3 as a string
    assert cfg.seed == 5 and cfg.optim.betas == (0.9, 0.999)


def test_overrides_coerce_to_field_types(recipe):
    cfg = load_config(Run, recipe, [
        "optim.lr=3e-4", "seed=7", "debug=true", "tag=007", "model.targets=[q_proj, v_proj]",
        "optim.betas=[0.9,0.98]", "optim.schedule=constant", "model.rates.video=2", "model.dropout=0.1",
        "model.mode=slow", "model.out=/tmp/x", "model.layers=4"])
    assert cfg.optim.lr == 3e-4 and cfg.seed == 7 and cfg.debug is True
    assert cfg.tag == "007"  # a str field keeps the text as typed
    assert cfg.model.targets == ["q_proj", "v_proj"] and cfg.optim.betas == (0.9, 0.98)
    assert cfg.optim.schedule == "constant" and cfg.model.rates == {"audio": 4, "video": 2}
    assert cfg.model.dropout == 0.1 and cfg.model.mode is Mode.SLOW and cfg.model.out == Path("/tmp/x")
    assert load_config(Run, recipe, ["model.dropout=null"]).model.dropout is None
    assert load_config(Run, recipe, ["model.dropout=none"]).model.dropout is None


@pytest.mark.parametrize("override,match", [
    ("optim.lrr=1", r"override 'optim.lrr=1': unknown key 'lrr' in optim \(did you mean 'lr'\?\)"),
    ("seed=abc", r"override 'seed=abc'.*field 'seed': expected an integer, got 'abc'"),
    ("debug=maybe", r"field 'debug': expected true or false"),
    ("optim.schedule=step", r"field 'optim.schedule': 'step' is not one of \['cosine', 'constant'\]"),
    ("optim.betas=[1,2,3]", r"field 'optim.betas': expected 2 items, got 3"),
    ("model.layers=0", r"section 'model': layers must be >= 1"),
    ("seed", r"expected key=value"),
    ("seed.x=1", r"seed is a value, not a section"),
    ("model.mode=medium", r"'medium' is not one of \['fast', 'slow'\]"),
])
def test_override_errors_name_the_override_and_field(recipe, override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(Run, recipe, [override])


def test_file_errors_name_the_file_and_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  name: tiny\n  layerz: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: field 'model.layerz': unknown key 'layerz' for Model "
                                          r"\(did you mean 'layers'\?\)"):
        load_config(Run, bad)
    bad.write_text("model:\n  name: tiny\n  layers: three\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: field 'model.layers': expected an integer, got 'three'"):
        load_config(Run, bad)
    bad.write_text("model:\n  name: 12\n")
    with pytest.raises(ConfigError, match=r"field 'model.name': expected a string, got int 12 \(quote it"):
        load_config(Run, bad)
    bad.write_text("optim: {lr: 1}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: missing required field\(s\) 'model'"):
        load_config(Run, bad)
    bad.write_text("model: [1, 2]\n")
    with pytest.raises(ConfigError, match=r"field 'model': expected a mapping for Model"):
        load_config(Run, bad)
    bad.write_text("model: {name: a\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: not valid YAML"):
        load_config(Run, bad)
    with pytest.raises(ConfigError, match=r"nope.yaml: config file not found"):
        load_config(Run, tmp_path / "nope.yaml")


def test_base_includes_and_cycles(tmp_path):
    (tmp_path / "base.yaml").write_text("model: {name: base, layers: 2, rates: {audio: 4}}\nseed: 1\n")
    (tmp_path / "child.yaml").write_text("_base_: base.yaml\nmodel: {layers: 6, rates: {video: 2}}\n")
    cfg = load_config(Run, tmp_path / "child.yaml")
    assert cfg.model.name == "base" and cfg.model.layers == 6 and cfg.seed == 1
    assert cfg.model.rates == {"audio": 4, "video": 2}  # mappings merge key by key
    (tmp_path / "a.yaml").write_text("_base_: b.yaml\n")
    (tmp_path / "b.yaml").write_text("_base_: a.yaml\n")
    with pytest.raises(ConfigError, match="include cycle"):
        load_config(Run, tmp_path / "a.yaml")


def test_dump_and_reload_round_trip(recipe, tmp_path):
    cfg = load_config(Run, recipe, ["model.mode=slow", "optim.betas=[0.8,0.9]", "model.dropout=0.25"])
    text = dump_config(cfg, tmp_path / "resolved.yaml")
    assert "mode: slow" in text and "betas:" in text
    assert load_config(Run, tmp_path / "resolved.yaml") == cfg
    assert from_dict(Run, to_dict(cfg)) == cfg


def test_apply_overrides_without_schema_and_from_dict_errors():
    data = apply_overrides({"a": {"b": 1}}, ["a.c=2", "d.e.f=x"])
    assert data["a"]["b"] == 1 and data["a"]["c"] == "2" and data["d"] == {"e": {"f": "x"}}
    with pytest.raises(ConfigError, match=r"<dict>: field 'seed': expected an integer"):
        from_dict(Run, {"model": {"name": "a"}, "seed": 1.5})
    assert from_dict(Run, {"model": {"name": "a"}, "seed": 2.0}).seed == 2


def test_train_config_from_yaml(tmp_path):
    from mmlora.train import TrainConfig

    p = tmp_path / "t.yaml"
    p.write_text("output_dir: out\nmax_steps: 10\nlr: 1e-3\ngroup_lr: {projector: 1e-3, lora: 2e-4}\n"
                 "betas: [0.9, 0.98]\n")
    cfg = load_config(TrainConfig, p, ["group_lr.lora=5e-4", "mixed_precision=bf16", "resume=none"])
    assert cfg.group_lr == {"projector": 1e-3, "lora": 5e-4} and cfg.betas == (0.9, 0.98)
    assert cfg.mixed_precision == "bf16" and cfg.resume == "none"
    with pytest.raises(ConfigError, match=r"TrainConfig: average_last=5 needs keep_last >= 5"):
        load_config(TrainConfig, p, ["average_last=5"])
    with pytest.raises(ConfigError, match=r"'mixed_precision'.*'fp8' is not one of"):
        load_config(TrainConfig, p, ["mixed_precision=fp8"])


def test_override_deep_in_a_free_form_dict_is_parsed():
    """A free-form ``dict`` field (an encoder's config) takes overrides at any depth as YAML values, also where the
    recipe already has a nested mapping there (``frames: {chunk: 1024}``): an int stays an int, not override text."""
    from mmlora.tasks.cli import load_run_config

    _, cfg = load_run_config("recipes/avsr_smollm2_whisper_tiny.yaml", [
        "model.media.video.encoder.frames.chunk=8", "model.media.video.encoder.mean=[0.5, 0.5, 0.5]"])
    enc = cfg.model.media["video"].encoder
    assert enc["frames"]["chunk"] == 8 and type(enc["frames"]["chunk"]) is int
    assert enc["mean"] == [0.5, 0.5, 0.5] and enc["image_size"] == 96
    assert all(type(x) is float for x in enc["mean"])
