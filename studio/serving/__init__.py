"""Serving a shared instance: the device worker, ZeroGPU, the policy gate, launch settings, the load test."""
