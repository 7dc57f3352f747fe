"""A generic CSV manifest: one row per scan, paths relative to the CSV.

Columns: ``image`` (NIfTI file or DICOM series folder), ``label`` (NIfTI, optional or empty for
unlabelled rows), ``modality`` (``ct``/``mr``), ``patient_id``, ``site`` (may be empty); optional
``mapping`` (a built-in table name such as ``amos`` or a ``.toml`` path relative to the CSV) and
``case_id`` (needed only when a patient has several scans; otherwise ``<patient_id>`` or
``<patient_id>#<n>``).
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

from fedsilo.data.errors import DataError
from fedsilo.data.labels import LabelMapping, get_mapping
from fedsilo.data.sources.loading import CaseListSource
from fedsilo.data.sources.volume import CaseRef, check_modality

__all__ = ["REQUIRED_COLUMNS", "manifest_source"]

REQUIRED_COLUMNS: tuple[str, ...] = ("image", "modality", "patient_id")


def manifest_source(
    csv_path: str | Path,
    mapping: LabelMapping | str | None = None,
    allow_empty_labels: bool = False,
) -> CaseListSource:
    """Cases listed in a CSV manifest.

    Parameters
    ----------
    csv_path : str or Path
    mapping : LabelMapping, str or None
        Table for rows whose ``mapping`` cell is absent or empty.
    allow_empty_labels : bool

    Returns
    -------
    CaseListSource

    Raises
    ------
    DataError
        Missing columns, a bad modality, a missing file, or a labelled row without a mapping;
        the message names the CSV and the line.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: manifest not found")
    base = csv_path.parent
    with csv_path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise DataError(f"{csv_path}: missing column(s) {missing}; found {columns}")
        rows = [
            ({k.strip(): (v or "").strip() for k, v in row.items() if k}, line)
            for line, row in enumerate(reader, start=2)
        ]
    if not rows:
        raise DataError(f"{csv_path}: no rows")
    per_patient = Counter(row["patient_id"] for row, _ in rows)
    seen: Counter[str] = Counter()
    cases = []
    for row, line in rows:
        where = f"{csv_path}, line {line}"
        pid = row["patient_id"]
        if not pid:
            raise DataError(f"{where}: empty patient_id")
        try:
            modality = check_modality(row["modality"])
        except ValueError as exc:
            raise DataError(f"{where}: {exc}") from None
        image = base / row["image"]
        label = base / row["label"] if row.get("label") else None
        for path in (image, label):
            if path is not None and not path.exists():
                raise DataError(f"{where}: {path} does not exist")
        table = None
        if label is not None:
            spec = row.get("mapping") or mapping
            if spec is None:
                raise DataError(f"{where}: labelled row without a mapping (add a 'mapping' column or pass mapping=)")
            if isinstance(spec, str) and spec.endswith(".toml"):
                spec = base / spec
            try:
                table = get_mapping(spec)
            except (ValueError, OSError) as exc:
                raise DataError(f"{where}: {exc}") from None
        seen[pid] += 1
        case_id = row.get("case_id") or (pid if per_patient[pid] == 1 else f"{pid}#{seen[pid]}")
        cases.append(CaseRef(pid, modality, image, label, table, row.get("site") or None, case_id))
    return CaseListSource(cases, name=f"manifest:{csv_path.stem}", allow_empty_labels=allow_empty_labels)
