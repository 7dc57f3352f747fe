"""Builders every test module shares: configs, tiny data sets, volumes, Flower messages, toy models.

One module, so a config or a volume factory is written once (conftest.py holds the fixtures).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity
from torch import nn

from fedsilo.config import ExperimentConfig, config_from_dict
from fedsilo.data.sources.volume import Volume
from fedsilo.federation.messages import ARRAYS, METRICS, NUM_EXAMPLES

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


# --------------------------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------------------------


def experiment(base: Mapping[str, Any], overrides: Iterable[str] = ()) -> ExperimentConfig:
    """A validated config from a nested dict and ``key=value`` overrides."""
    return config_from_dict(base, list(overrides))


def make_tiny_medmnist(path: Path, n_train: int = 150, n_test: int = 50, size: int = 12, seed: int = 0) -> Path:
    """A MedMNIST-layout .npz whose grade is written in the images' brightness and a bar's length.

    Learnable in a few steps, so end-to-end tests can check that training really happens.
    """
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


def tiny_config(npz: Path, *overrides: str) -> ExperimentConfig:
    """DR grading on a tiny MedMNIST file: 2 sites, 2 rounds, seconds per run."""
    return experiment({
        "experiment": {"name": "tiny", "seed": 0, "threads": 1},
        "data": {"source": "medmnist", "path": str(npz), "image_size": 12, "test_split": "test",
                 "val_fraction": 0.2},
        "partition": {"name": "iid"},
        "federation": {"num_sites": 2, "rounds": 2},
        "train": {"batch_size": 8, "lr": 0.01, "local_epochs": 2},
        "classifier": {"width": 4, "depth": 2},
    }, overrides)


def phantom_classification_config(*overrides: str, **federation: Any) -> ExperimentConfig:
    """DR grading on 60 phantom fundus images at 28 px, 3 sites, 2 rounds (the deployment tests' run)."""
    return experiment({
        "experiment": {"name": "dep", "seed": 0, "threads": 1},
        "data": {"source": "phantom", "image_size": 28, "val_fraction": 0.2, "phantom": {"n_train": 60, "n_test": 20}},
        "partition": {"name": "iid"},
        "federation": {"num_sites": 3, "rounds": 2, **federation},
        "train": {"batch_size": 16, "local_epochs": 1},
        "classifier": {"width": 4, "depth": 1},
    }, overrides)


SEG_SHAPE = [12, 32, 32]


def phantom_sites(modalities: Iterable[str], count: int, shape: list[int], offset: int = 0,
                  suffix: str = "site") -> list[dict[str, Any]]:
    """``[[data.sites]]`` / ``[[data.test]]`` tables of phantom patients, one per modality."""
    return [{"name": f"{m}-{suffix}", "kind": "phantom", "modality": m, "count": count, "offset": offset,
             "shape": shape} for m in modalities]


def seg_config(*overrides: str, method: str = "gin", mode: str = "federated",
               sites: list[dict[str, Any]] | None = None) -> ExperimentConfig:
    """FedGIN on the abdomen phantom: a CT and an MR site (4 patients each, or ``sites``), one test
    patient per modality, 2 rounds of 3 steps on a 32 px U-Net."""
    sites = sites if sites is not None else phantom_sites(("ct", "mr"), 4, SEG_SHAPE)
    return experiment({
        "experiment": {"name": "tiny-seg", "task": "segmentation", "mode": mode, "seed": 0, "threads": 1},
        "data": {"source": "volumes", "val_fraction": 0.25, "volume": {"size": 32, "skip_empty": True, "cache": False},
                 "sites": sites, "test": phantom_sites(("ct", "mr"), 1, SEG_SHAPE, offset=50, suffix="test")},
        "federation": {"num_sites": len(sites), "rounds": 2, "timeout": 60.0},
        "train": {"local_steps": 3, "batch_size": 8, "lr": 0.003, "optimizer": "adam"},
        "segmentation": {"method": method, "hd95": True},
        "unet": {"base_width": 4, "depth": 3, "num_res_units": 1},
    }, overrides)


def chaos_sites(paths: Mapping[tuple[str, str], str]) -> list[dict[str, Any]]:
    """``[[data.sites]]`` tables of CHAOS-layout folders: ``(name, modality) -> folder``."""
    return [{"name": n, "kind": "chaos", "modality": m, "path": p, "mapping": "fedsilo"} for (n, m), p in paths.items()]


def gan_config(*overrides: str, mode: str = "federated") -> ExperimentConfig:
    """FedGAN on 160 phantom fundus images at 28 px, 2 severity-specialised sites, 2 rounds."""
    return experiment({
        "experiment": {"name": "tiny-gan", "task": "synthesis", "mode": mode, "seed": 0, "threads": 1},
        "data": {"source": "phantom", "image_size": 28, "val_fraction": 0.1, "phantom": {"n_train": 160, "n_test": 40}},
        "partition": {"name": "severity", "sites_per_class": 1},
        "federation": {"num_sites": 2, "rounds": 2},
        "train": {"local_steps": 3, "batch_size": 16},
        "gan": {"latent_dim": 8, "g_width": 8, "d_width": 8, "eval_samples": 24, "reference_epochs": 2,
                "tstr_epochs": 1},
        "classifier": {"width": 4, "depth": 1},
    }, overrides)


def pretrain_config(*overrides: str) -> ExperimentConfig:
    """GAN pre-training on two phantom CT patients (centralised, one round)."""
    return experiment({
        "experiment": {"name": "tiny-pretrain", "task": "synthesis", "mode": "centralised", "seed": 0, "threads": 1},
        "data": {"source": "volumes", "val_fraction": 0.0, "volume": {"size": 28, "skip_empty": True, "cache": False},
                 "sites": phantom_sites(("ct",), 2, [8, 32, 32])},
        "federation": {"num_sites": 1, "rounds": 1},
        "train": {"local_steps": 2, "batch_size": 8},
        "gan": {"latent_dim": 8, "g_width": 8, "d_width": 8, "eval_samples": 16, "reference_epochs": 1},
    }, overrides)


# --------------------------------------------------------------------------------------------
# Volumes and NIfTI files
# --------------------------------------------------------------------------------------------

#: A LAS affine like CHAOS' (x flipped), 2 x 2 x 5 mm.
LAS = np.array([[-2.0, 0, 0, 50.0], [0, 2.0, 0, -40.0], [0, 0, 5.0, 10.0], [0, 0, 0, 1]])


def radiological_affine(spacing: tuple[float, float, float],
                        origin: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """The affine of an internal ``(D, H, W)`` array with ``spacing`` (dz, dy, dx) mm."""
    dz, dy, dx = spacing
    return np.array([[0, 0, -dx, origin[0]], [0, -dy, 0, origin[1]], [dz, 0, 0, origin[2]], [0, 0, 0, 1.0]])


def make_volume(image: np.ndarray | None = None, labels: np.ndarray | None = None, *,
                shape: tuple[int, int, int] = (4, 8, 8), spacing: tuple[float, float, float] = (5.0, 1.0, 1.0),
                patient_id: str = "p", modality: str = "ct", site: str | None = None,
                annotated: Iterable[int] | None = None, affine: np.ndarray | None = None) -> Volume:
    """A :class:`Volume` for tests: zeros of ``shape`` unless ``image`` is given; ``annotated``
    defaults to the organs present in ``labels``."""
    if image is None:
        image = np.zeros(labels.shape if labels is not None else shape, np.float32)
    if annotated is None:
        annotated = [int(v) for v in np.unique(labels) if v] if labels is not None else []
    return Volume(np.asarray(image, np.float32), labels, spacing, patient_id, modality, site=site,  # type: ignore[arg-type]
                  annotated=frozenset(annotated), affine=affine)


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray = LAS) -> Path:
    """Save ``data`` (NIfTI voxel order (I, J, K)) with ``affine``."""
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def tiny_pair(folder: Path, pid: str = "1", shape: tuple[int, int, int] = (12, 10, 4),
              prefix: tuple[str, str] = ("image_", "label_")) -> tuple[Path, Path]:
    """A CHAOS-style image/label pair: a bright box labelled liver (1) and a smaller one spleen (4)."""
    rng = np.random.default_rng(int(pid) if pid.isdigit() else 0)
    image = rng.uniform(0, 100, size=shape).astype(np.float64)
    label = np.zeros(shape, dtype=np.float64)
    label[2:6, 2:6, 1:3] = 1
    label[8:10, 6:8, 1:3] = 4
    folder.mkdir(parents=True, exist_ok=True)
    img = write_nifti(folder / f"{prefix[0]}{pid}.nii.gz", image)
    lab = write_nifti(folder / f"{prefix[1]}{pid}.nii.gz", label)
    return img, lab


# --------------------------------------------------------------------------------------------
# Flower messages
# --------------------------------------------------------------------------------------------


def as_superlink() -> None:
    """Give messages made outside a Flower runtime the SuperLink's identity (as the engines do)."""
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0


def arrays(**values: np.ndarray) -> ArrayRecord:
    """An ArrayRecord of numpy arrays."""
    return ArrayRecord({k: Array(np.asarray(v)) for k, v in values.items()})


def train_reply(node: int, record: ArrayRecord | None = None, n: int | None = 1,
                metrics: Mapping[str, float] | None = None) -> Message:
    """A training reply from node ``node``: ``record`` under ``arrays`` and ``num-examples`` = ``n``
    (left out when None) plus ``metrics``."""
    content = RecordDict()
    if record is not None:
        content[ARRAYS] = record
    values = {**({NUM_EXAMPLES: n} if n is not None else {}), **(metrics or {})}
    if values or record is not None:
        content[METRICS] = MetricRecord(values)
    msg = Message(content, reply_to=Message(RecordDict(), dst_node_id=node, message_type="train"))
    msg.metadata.__dict__["_src_node_id"] = node
    return msg


# --------------------------------------------------------------------------------------------
# Toy models for attacks
# --------------------------------------------------------------------------------------------


class MixtureGenerator(nn.Module):
    """A memorising toy generator: ``G(z) = softmax(z / tau) @ images`` (one latent unit per
    image) produces sharp mixtures of, and can reproduce exactly, the images it was given."""

    def __init__(self, images: torch.Tensor, tau: float = 0.3) -> None:
        super().__init__()
        self.latent_dim, self.num_classes, self.tau, self.shape = len(images), 0, tau, images.shape[1:]
        self.register_buffer("images", images.flatten(1))
        self.scale = nn.Parameter(torch.ones(1))  # a parameter, so that it has a device

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(z * self.scale / self.tau, dim=1)
        return (weights @ self.images).view(len(z), *self.shape)


def overfit_discriminator(train: torch.Tensor, seed: int, steps: int = 300) -> nn.Module:
    """A discriminator overfit to call ``train`` (N, 1, 8, 8) real and fresh uniform images fake."""
    torch.manual_seed(seed)
    d = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.LeakyReLU(0.2), nn.Linear(128, 1), nn.Flatten(0))
    opt = torch.optim.Adam(d.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(seed + 100)
    for _ in range(steps):
        fake = torch.rand(len(train), 1, 8, 8, generator=gen) * 2 - 1
        loss = (nn.functional.binary_cross_entropy_with_logits(d(train), torch.ones(len(train)))
                + nn.functional.binary_cross_entropy_with_logits(d(fake), torch.zeros(len(fake))))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return d
