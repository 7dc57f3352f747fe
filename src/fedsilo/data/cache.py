"""On-disk cache of preprocessed volumes (their slices are rows of the stored arrays).

Location: the ``root`` argument, else ``$FEDSILO_CACHE``, else ``~/.cache/fedsilo``; entries
live under ``<root>/volumes/``.

Key: SHA-256 of (a fingerprint of every file the case reads, the case's metadata and label
table, the :class:`PreprocessSettings`, :data:`CACHE_VERSION`). The default fingerprint hashes
the files' *bytes* (``"content"``), not size + mtime + path (``"stat"``, available): bytes are
what the result depends on, so the key survives moving or copying a data set (another mount,
another machine, ``cp`` without ``-p``) and changes when a file is rewritten in place with its
old size and timestamp (``rsync -t``, ``touch -r``, coarse mtime on network file systems), where
``stat`` would silently serve stale slices. Hashing reads the compressed files once (CHAOS' 15
volumes, 42 MB: ~0.1 s) which is far cheaper than decoding and resampling them; ``"stat"`` is
there for very large archives where even one read per run is too much.

Writes are atomic (:func:`fedsilo.fileio.atomic_open`), so an
interrupted run or two concurrent runs never leave a half-written entry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np

from fedsilo.data.preprocess_volume import PreprocessSettings
from fedsilo.data.sources.volume import CaseRef, Volume
from fedsilo.fileio import atomic_open

__all__ = ["CACHE_VERSION", "VolumeCache", "default_cache_dir", "fingerprint_files"]

logger = logging.getLogger(__name__)

#: Bump when the preprocessing code changes its output, to invalidate every entry.
CACHE_VERSION: int = 1

Fingerprint = Literal["content", "stat"]
_CHUNK = 1 << 20


def default_cache_dir(root: str | Path | None = None) -> Path:
    """``root`` if given, else ``$FEDSILO_CACHE``, else ``~/.cache/fedsilo``."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("FEDSILO_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fedsilo"


def fingerprint_files(paths: list[Path], method: Fingerprint = "content") -> str:
    """Hex digest identifying the files' contents (``"content"``: SHA-256 of the bytes, in
    order) or their stat (``"stat"``: resolved path, size, mtime_ns)."""
    if method not in ("content", "stat"):
        raise ValueError(f"fingerprint must be 'content' or 'stat', got {method!r}")
    digest = hashlib.sha256()
    for path in paths:
        if method == "content":
            digest.update(path.name.encode() + b"\0")
            with path.open("rb") as fh:
                while chunk := fh.read(_CHUNK):
                    digest.update(chunk)
        else:
            st = path.stat()
            digest.update(f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return digest.hexdigest()


class VolumeCache:
    """Preprocessed volumes on disk, keyed by source content and settings.

    Parameters
    ----------
    root : str, Path or None
        See :func:`default_cache_dir`.
    fingerprint : {"content", "stat"}
        How source files are identified (module docstring says why ``"content"`` is default).
    """

    def __init__(self, root: str | Path | None = None, fingerprint: Fingerprint = "content") -> None:
        if fingerprint not in ("content", "stat"):
            raise ValueError(f"fingerprint must be 'content' or 'stat', got {fingerprint!r}")
        self.root = default_cache_dir(root)
        self.fingerprint = fingerprint
        self.hits = 0
        self.misses = 0

    def key(self, case: CaseRef, settings: PreprocessSettings, extra: str = "") -> str:
        """Cache key of a case under settings (hashes the files; see :func:`fingerprint_files`)."""
        meta = {
            "version": CACHE_VERSION,
            "files": fingerprint_files(case.files(), self.fingerprint),
            "patient_id": case.patient_id,
            "case_id": case.case_id,
            "modality": case.modality,
            "site": case.site,
            "mapping": None if case.mapping is None else case.mapping.to_dict(),
            "settings": settings.to_dict(),
            "extra": extra,
        }
        return hashlib.sha256(json.dumps(meta, sort_keys=True, default=str).encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.root / "volumes" / key[:2] / f"{key}.npz"

    def get(self, key: str) -> Volume | None:
        """The stored volume, or None (missing or unreadable entries count as misses)."""
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                return Volume(
                    image=data["image"],
                    labels=data["labels"] if "labels" in data.files else None,
                    spacing=tuple(meta["spacing"]),
                    patient_id=meta["patient_id"],
                    modality=meta["modality"],
                    site=meta["site"],
                    source=tuple(Path(p) for p in meta["source"]),
                    annotated=frozenset(meta["annotated"]),
                    case_id=meta["case_id"],
                    affine=data["affine"] if "affine" in data.files else None,
                )
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
            logger.warning("ignoring unreadable cache entry %s (%s)", path, exc)
            return None

    def put(self, key: str, volume: Volume) -> Path:
        """Store a volume atomically; returns the entry's path."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "spacing": list(volume.spacing),
            "patient_id": volume.patient_id,
            "modality": volume.modality,
            "site": volume.site,
            "source": [str(p) for p in volume.source],
            "annotated": sorted(volume.annotated),
            "case_id": volume.case_id,
        }
        arrays: dict[str, np.ndarray] = {"image": volume.image, "meta": np.array(json.dumps(meta))}
        if volume.labels is not None:
            arrays["labels"] = volume.labels
        if volume.affine is not None:
            arrays["affine"] = np.asarray(volume.affine)
        with atomic_open(path) as fh:
            np.savez(fh, **arrays)
        return path

    def get_or_compute(self, case: CaseRef, settings: PreprocessSettings, compute: Callable[[], Volume]) -> Volume:
        """Return the cached volume for ``(case, settings)``, or compute, store and return it."""
        key = self.key(case, settings)
        found = self.get(key)
        if found is not None:
            self.hits += 1
            logger.debug("cache hit %s (%s)", case.case_id, key[:12])
            return found
        self.misses += 1
        volume = compute()
        self.put(key, volume)
        logger.debug("cache miss %s, stored %s", case.case_id, key[:12])
        return volume

    def clear(self) -> int:
        """Delete every entry; returns how many were removed."""
        removed = 0
        for path in (self.root / "volumes").glob("*/*.npz"):
            path.unlink(missing_ok=True)
            removed += 1
        return removed
