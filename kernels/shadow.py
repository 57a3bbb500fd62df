"""The top-level name ``kernels`` for the package installed under it (kernels/__init__.py).

mmlora's ``kernels/`` folder is the subpackage ``mmlora.kernels`` (pyproject's package-dir). Run from the checkout
(``python -m mmlora.cli``, ``python -m pytest``), the checkout's root is on ``sys.path`` and this folder is found first
as ``kernels``, hiding Hugging Face's ``kernels`` package, which transformers (5.25 on, a required dependency)
imports by that name. :func:`installed` finds and loads the package of that name elsewhere on ``sys.path``.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
from types import ModuleType


def installed(name: str = "kernels") -> ModuleType | None:
    """The package ``name`` from ``sys.path`` without the checkout's root, executed (its ``sys.modules`` entry set
    first, as the import system does, so that it imports its own submodules); None where there is none (a
    transformers before 5.25 without that package: the folder then stays the top-level ``kernels`` as it was)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = [p for p in sys.path if os.path.abspath(p or os.curdir) != root]
    spec = importlib.machinery.PathFinder.find_spec(name, path)
    if spec is None or spec.loader is None:
        return None
    ours = sys.modules.get(name)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules[name] = ours
        raise
    return module
