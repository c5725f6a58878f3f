"""Fixtures shared by the scoring tests that run real (tiny) transformers models."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for the module: tiny models gain nothing from more, and on a shared machine (or under
    pytest-xdist, one torch per worker) spinning OpenMP threads slow them several-fold."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def gpt2(tiny_gpt2_dir, one_torch_thread):
    """The tiny GPT-2 of tests/conftest.py, loaded through lmmap's own loader (float32, CPU)."""
    from lmmap.scoring.hf import load_model

    return load_model(str(tiny_gpt2_dir), device="cpu", dtype="float32")
