"""Run Triton kernels on the CPU through Triton's interpreter (``TRITON_INTERPRET=1``).

Triton 3.6's interpreter turns scalar arguments into 1-element arrays and calls ``int()`` on
them, which NumPy >= 2.4 refuses; this shim makes ``__index__`` take the single element.
Import this module before anything imports :mod:`triton`.
"""
from __future__ import annotations

import os

os.environ["TRITON_INTERPRET"] = "1"

import triton.runtime.interpreter as _interp  # noqa: E402

_orig = _interp._patch_lang_tensor


def _patched(tensor, scope):
    _orig(tensor, scope)
    scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))


_interp._patch_lang_tensor = _patched
