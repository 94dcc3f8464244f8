"""The masked-softmax machinery shared by pca_locality, ls and els: masks, column plans, the torch tiles,
the Triton tiles and the denoiser base class. The Triton module depends on the plan, never the reverse."""
