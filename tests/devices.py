"""The devices a test runs on: the CPU always, CUDA where there is one (the gpu marker skips it elsewhere)."""

import pytest

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]
