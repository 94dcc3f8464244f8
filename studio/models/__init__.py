"""Trained networks: the 2-D time-conditioned MLP and the checkpoint folders (bundled, local, Hub) they live in."""
