"""Analytic Diffusion Studio: training-free diffusion denoisers beside trained ones."""

__version__ = "0.1.0"
