"""The checkout's kernels/ folder found as the top-level ``kernels`` (the checkout's root on sys.path) hands that name
to the package installed under it (kernels/shadow.py): Hugging Face's ``kernels``, which transformers 5.25 on
imports, while ``mmlora.kernels`` stays ours."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(code: str, *path: Path) -> str:
    """``code`` in a fresh interpreter whose sys.path starts with the checkout's root, then ``path``."""
    head = f"import sys; sys.path[:0] = {[str(ROOT), *map(str, path)]!r}\n"
    done = subprocess.run([sys.executable, "-c", head + code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_top_level_name_goes_to_an_installed_package_of_that_name(tmp_path):
    site = tmp_path / "site"
    (site / "kernels").mkdir(parents=True)
    (site / "kernels" / "__init__.py").write_text("from .layer import NAME\n")
    (site / "kernels" / "layer.py").write_text("NAME = 'installed'\n")
    out = run("import kernels, mmlora.kernels as ours\n"
              "print(kernels.NAME, kernels.__file__ != ours.__file__, callable(ours.lora_delta),"
              " 'kernels.shadow' in sys.modules)", site)
    assert out == "installed True True False"


def test_without_an_installed_package_the_folder_stays_the_top_level_kernels(tmp_path):
    out = run("from mmlora.kernels.shadow import installed\n"
              "print(installed('no_such_package_here'))\n"
              "sys.path[:] = [p for p in sys.path if 'site-packages' not in p]\n"
              "import kernels; print(kernels.__file__.endswith('kernels/__init__.py'), callable(kernels.lora_delta))")
    assert out.splitlines() == ["None", "True True"]


def test_transformers_whisper_imports_from_the_checkouts_root():
    """transformers 5.25 imports ``kernels`` (hub kernels) on import of its activations; from the checkout's root
    that once found this folder and failed (``cannot import name 'CUDAProperties'``)."""
    assert run("from transformers.models.whisper.modeling_whisper import WhisperDecoder; print('ok')") == "ok"
