"""Shared pytest fixtures (the builders they use live in helpers.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import flwr.supercore.logger  # noqa: F401  (importing flwr resets its logger level)
import pytest

from helpers import SHARED_DATA, as_superlink, make_tiny_medmnist, tiny_config

logging.getLogger("flwr").setLevel(logging.WARNING)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to the real images in ``../shared/data``; skips the test when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (only CI and developer clones have it)")
    return SHARED_DATA


@pytest.fixture
def tiny_npz(tmp_path: Path) -> Path:
    """Path of a tiny learnable MedMNIST-layout file (5 grades)."""
    return make_tiny_medmnist(tmp_path / "tiny.npz")


@pytest.fixture
def tiny_cfg(tiny_npz: Path):
    """Factory: :func:`helpers.tiny_config` on the tiny file of this test."""
    return lambda *overrides: tiny_config(tiny_npz, *overrides)


@pytest.fixture
def superlink_identity() -> None:
    """Messages built in the test carry the SuperLink's identity (see :func:`helpers.as_superlink`)."""
    as_superlink()
