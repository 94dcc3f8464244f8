"""The window machinery of the equivariant local score machine (`els`): clipped k x k windows grouped by shape,
the training windows of each shape kept per patch size (deduplicated), and the exact softmax over them as
matrix products: per shape, logits are one product of the batch's windows with the training windows, folded
into an exact online softmax (`torch_scan` on any device; `triton_scan`, one fused kernel on CUDA, reading what
`layout` prepares). `geometry` depends on nothing here; the rest depend on it, never the reverse, and only
`triton_scan` imports Triton."""
