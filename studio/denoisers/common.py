"""Parameters and helpers shared by the softmax (empirical-prior) denoisers."""

from __future__ import annotations

from studio.params import Param

TEMPERATURE = Param("temperature", float, 1.0, "softmax temperature τ (1 = Bayes posterior)", low=1e-6, high=1e6)
CHUNK = Param("chunk_size", int, None, "training points per GEMM chunk (auto = from memory)", low=1, optional=True)
TOPK = Param("top_k", int, 8, "neighbours reported to the UI", low=1, high=1000)
