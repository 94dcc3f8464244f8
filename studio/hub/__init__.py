"""The Hugging Face Hub around runs: export bundles with dataset cards, push and pull."""
