"""The package layout: mmlora.<encoders|projectors|tasks|kernels> come from the checkout's top-level folders."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_mapped_subpackages_resolve_from_a_bare_checkout_on_sys_path(tmp_path):
    # -S: no site-packages, so neither a wheel nor setuptools' editable finder can help; only the checkout is on
    # sys.path (as when running `python -m mmlora.cli` from the checkout root after a path-based editable install).
    code = ("import sys, importlib.util as u; sys.path.insert(0, sys.argv[1]); "
            "print(*[u.find_spec('mmlora.' + n).origin for n in ('tasks', 'encoders', 'projectors', 'kernels')])")
    out = subprocess.run([sys.executable, "-S", "-c", code, str(ROOT)], cwd=tmp_path, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == [str(ROOT / n / "__init__.py") for n in ("tasks", "encoders", "projectors", "kernels")]
