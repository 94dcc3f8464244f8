"""Parameters and helpers shared by the softmax (empirical-prior) denoisers."""

from __future__ import annotations

from studio.params import Param

TEMPERATURE = Param("temperature", float, 1.0, "softmax temperature τ (1 = Bayes posterior)", low=1e-6, high=1e6)
CHUNK = Param("chunk_size", int, None, "training points per GEMM chunk (auto = from memory)", low=1, optional=True)
TOPK = Param("top_k", int, 8, "neighbours reported to the UI", low=1, high=1000)
STORAGE = Param("storage", str, "auto", "how the training data sit on the device: uint8 = their 8-bit codes (data "
                "from 8-bit images only, a quarter of the memory; no float32 copy is made), float32, or auto = uint8 "
                "on a GPU from 2 GiB of float32 data, and anywhere when their float32 copy would not fit in memory",
                choices=("auto", "float32", "uint8"))
