"""Shared pytest fixtures."""

from __future__ import annotations

import logging
from pathlib import Path

import flwr.supercore.logger  # noqa: F401  (importing flwr resets its logger level)
import pytest

logging.getLogger("flwr").setLevel(logging.WARNING)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to the real images in ``../shared/data``; skips the test when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (only CI and developer clones have it)")
    return SHARED_DATA


def make_tiny_medmnist(path: Path, n_train: int = 150, n_test: int = 50, size: int = 12, seed: int = 0) -> Path:
    """A MedMNIST-layout .npz whose grade is written in the images' brightness and a bar's length.

    Learnable in a few steps, so end-to-end tests can check that training really happens.
    """
    import numpy as np

    rng = np.random.default_rng(seed)

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, 5, size=n)
        imgs = rng.integers(0, 40, size=(n, size, size, 3)).astype(np.float64)
        for i, g in enumerate(labels):
            imgs[i, :, :, 0] += 40 * g
            imgs[i, : 2 + 2 * g, : size // 2, 1] += 120
        return np.clip(imgs, 0, 255).astype(np.uint8), labels.reshape(-1, 1).astype(np.uint8)

    tr_x, tr_y = split(n_train)
    te_x, te_y = split(n_test)
    np.savez(path, train_images=tr_x, train_labels=tr_y, test_images=te_x, test_labels=te_y)
    return path


@pytest.fixture
def tiny_npz(tmp_path: Path) -> Path:
    """Path of a tiny learnable MedMNIST-layout file (5 grades)."""
    return make_tiny_medmnist(tmp_path / "tiny.npz")


def tiny_config(npz: Path, *overrides: str):
    """A fast classification config on a tiny MedMNIST file, with extra ``key=value`` overrides."""
    from fedsilo.config import config_from_dict

    base = {
        "experiment": {"name": "tiny", "seed": 0, "threads": 1},
        "data": {"source": "medmnist", "path": str(npz), "image_size": 12, "test_split": "test",
                 "val_fraction": 0.2},
        "partition": {"name": "iid"},
        "federation": {"num_sites": 2, "rounds": 2},
        "train": {"batch_size": 8, "lr": 0.01, "local_epochs": 2},
        "classifier": {"width": 4, "depth": 2},
    }
    return config_from_dict(base, overrides)


@pytest.fixture
def tiny_cfg(tiny_npz: Path):
    """Factory: :func:`tiny_config` on the tiny file of this test."""
    return lambda *overrides: tiny_config(tiny_npz, *overrides)
