"""Modality projectors: compress encoder frames, project into the LLM width (see docs/PROJECTORS.md).

``build_projector(ProjectorConfig(...), d_in, d_llm)`` gives a module called as
``proj(x [B,N,D], mask [B,N], rate=None|k, hidden_states=None|[...]) -> (emb [B,N',d_llm], mask')``.
"""
from .bank import ProjectorBank, build_projector, project_features
from .compress import (AvgPoolCompressor, Compressor, ConvCompressor, IdentityCompressor, StackCompressor,
                       check_inputs)
from .mlp import MLPProjector
from .projector import COMPRESSORS, PRESETS, Projector, ProjectorConfig, make_compressor
from .qladder import LadderLayer, QLadder, QLadderConfig, append_after_valid

__all__ = [
    "ProjectorConfig", "QLadderConfig", "build_projector", "project_features", "Projector", "ProjectorBank", "PRESETS", "COMPRESSORS",
    "Compressor", "StackCompressor", "AvgPoolCompressor", "ConvCompressor", "IdentityCompressor", "make_compressor",
    "MLPProjector", "QLadder", "LadderLayer", "append_after_valid", "check_inputs",
]
