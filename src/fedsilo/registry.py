"""The tasks an experiment may name (``experiment.task``) and where their code lives.

One mapping, read by the config (to validate ``experiment.task`` before any work starts) and
by :func:`fedsilo.tasks.make_task` (to build the task). Entries are ``"module:Class"`` import
paths, imported only when a task is used, so a task's heavy dependencies load on demand.
Adding a task is a new folder under ``fedsilo/tasks/`` with a :class:`~fedsilo.tasks.Task`
subclass, and one line here.
"""

from __future__ import annotations

import importlib
from typing import Any

TASKS: dict[str, str] = {
    "classification": "fedsilo.tasks.classification:ClassificationTask",
    "segmentation": "fedsilo.tasks.segmentation:SegmentationTask",
    "synthesis": "fedsilo.tasks.synthesis:SynthesisTask",
}


def resolve(target: str) -> Any:
    """The object a ``"package.module:Name"`` path names.

    Raises
    ------
    ValueError
        When ``target`` is not of the form ``module:Name``.
    """
    module, sep, name = target.partition(":")
    if not sep or not module or not name:
        raise ValueError(f"target must look like 'package.module:Name', got {target!r}")
    return getattr(importlib.import_module(module), name)


__all__ = ["TASKS", "resolve"]
