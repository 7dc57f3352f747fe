"""``fedsilo sample RUN_DIR --n N --out DIR``: a synthetic data set from a trained generator.

Written into ``DIR`` (new or empty), readable by any tool and by fedsilo's own loaders:

- ``images/<id>.png`` and ``labels.csv`` (``id_code``, ``diagnosis``: the APTOS/EyePACS layout of
  ``data.source = "imagefolder"``);
- ``synthetic.npz`` in the MedMNIST layout (``train_images`` uint8 (N, H, W, C), ``train_labels``
  (N, 1)) for ``data.source = "medmnist"``;
- ``provenance.json``: which run, round and sites made it, with which privacy guarantee (epsilon
  and delta, or "no formal DP"), the seed, and where the grades come from.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from fedsilo import progress
from fedsilo.fileio import atomic_write_text
from fedsilo.run.folder import RunDirError
from fedsilo.run.load import load_trained

logger = logging.getLogger(__name__)

NUM_GRADES = 5
CHUNK = 256


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Images (N, C, H, W) in [-1, 1] -> uint8 (N, H, W, C) (values clipped, rounded)."""
    x = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def sample_run(run_dir: str | Path, n: int, out: str | Path, *, grade: int | None = None, seed: int = 0,
               round_: int | None = None, site: str | None = None, device: str | None = None) -> Path:
    """Write ``n`` synthetic images of a synthesis run (see the module docstring); return ``out``.

    Parameters
    ----------
    run_dir
        A finished synthesis run.
    n
        Number of images (>= 1).
    out
        A new or empty folder.
    grade
        Only this DR grade (0-4; conditional generators only).
    seed
        Seeds the latent codes: the same run, round, n, grade and seed give the same images.
    round_, site, device
        Which weights and where (see :func:`fedsilo.run.load.load_trained`).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if grade is not None and not 0 <= grade < NUM_GRADES:
        raise ValueError(f"grade must be in 0..{NUM_GRADES - 1}, got {grade}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RunDirError(f"{str(out)!r} exists and is not an empty folder; sample into a new one "
                          f"(nothing was overwritten)")
    logger.info("Loading the generator of %s", run_dir)
    trained = load_trained(run_dir, round_=round_, site=site, device=device)
    images, grades = [], []
    label_source = ""
    try:
        for start in range(0, n, CHUNK):
            count = min(CHUNK, n - start)
            x, y, label_source = trained.task.generate(trained.model, count, grade, seed + start, trained.device)
            images.append(to_uint8(x))
            grades.append(y.cpu().numpy().astype(np.int64))
            progress.current().step("sample: images generated", start + count, n)
    except NotImplementedError as exc:
        raise RunDirError(str(exc)) from exc
    pixels, labels = np.concatenate(images), np.concatenate(grades)
    warn_single_grade(labels, grade, label_source)
    (out / "images").mkdir(parents=True, exist_ok=True)
    width = max(5, len(str(n - 1)))
    ids = [f"syn_{i:0{width}d}" for i in range(n)]
    for image_id, px in zip(ids, pixels, strict=True):
        Image.fromarray(px[..., 0] if px.shape[-1] == 1 else px).save(out / "images" / f"{image_id}.png")
    with (out / "labels.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id_code", "diagnosis"])
        writer.writerows(zip(ids, labels.tolist(), strict=True))
    np.savez_compressed(out / "synthetic.npz", train_images=pixels, train_labels=labels.reshape(-1, 1).astype(np.uint8))
    atomic_write_text(out / "provenance.json", json.dumps(_provenance(trained, n, grade, seed, label_source, labels),
                                                          indent=2) + "\n")
    logger.info("Wrote %d synthetic images from %s to %s", n, trained.source, out)
    return out


def warn_single_grade(labels: np.ndarray, grade: int | None, label_source: str) -> None:
    """Warn when a set sampled for every grade holds only one (a collapsed or barely trained generator)."""
    present = np.unique(labels)
    if grade is None and len(labels) > 1 and len(present) == 1 and not label_source.startswith("none"):
        logger.warning("All %d sampled images have grade %d (labels: %s): the generator does not cover the other "
                       "grades (it collapsed, or trained too briefly, as a smoke test does); check the set before "
                       "using it", len(labels), int(present[0]), label_source)


def _covered(label_source: str) -> str:
    """What a DP generator's epsilon covers in the released set (the images; predicted grades not)."""
    if label_source.startswith("predicted"):
        return ("the generated images only: the grades in labels.csv are " + label_source
                + ", without differential privacy, so they are not covered by epsilon")
    if label_source.startswith("none"):
        return "the generated images (they carry no labels)"
    return "the generated images and their labels (the labels are the generator's own conditioning input)"


def _provenance(trained: Any, n: int, grade: int | None, seed: int, label_source: str,
                labels: np.ndarray) -> dict[str, Any]:
    from fedsilo.report.summary import privacy_spent

    run, cfg = trained.run, trained.run.cfg
    if cfg.privacy.mode == "none":
        privacy: dict[str, Any] = {"guarantee": "no formal DP", "mode": "none"}
    else:
        spent = privacy_spent(run)
        eps = spent.get("epsilon")
        privacy = {"guarantee": f"({cfg.privacy.mode}-level) differential privacy", "mode": cfg.privacy.mode,
                   "noise": cfg.privacy.guarantee,
                   "epsilon": "inf" if isinstance(eps, float) and math.isinf(eps) else eps,
                   "delta": spent.get("delta"), "site_epsilon": spent.get("site_epsilon"),
                   "covers": _covered(label_source), "audit_canaries": cfg.privacy.canaries}
    env = run.read_env()
    return {
        "run": str(run.path),
        "experiment": cfg.experiment.name,
        "round": trained.round,
        "model": f"site {trained.site}'s generator" if trained.site else "global generator",
        "generator_weights": (f"exponential moving average over rounds (gan.ema_decay = {trained.state['ema_decay']})"
                              if "ema_decay" in trained.state and not trained.site else "as trained"),
        "mode": cfg.experiment.mode,
        "sites": [{k: s.get(k) for k in ("name", "num_train")} for s in run.read_sites()],
        "privacy": privacy,
        "count": n,
        "grade": grade,
        "grade_counts": np.bincount(labels, minlength=NUM_GRADES).tolist(),
        "labels": label_source,
        "seed": seed,
        "commit": env.get("git", {}).get("commit"),
        "files": {"png": "images/*.png + labels.csv (id_code, diagnosis)", "medmnist": "synthetic.npz (train split)"},
    }
