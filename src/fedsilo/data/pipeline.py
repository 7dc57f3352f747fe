"""source -> preprocess (cached) -> slices: the one call a task makes to get training slices."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from fedsilo.data.cache import VolumeCache
from fedsilo.data.preprocess_volume import PreprocessSettings, preprocess_volume
from fedsilo.data.slices import Slice, extract_slices
from fedsilo.data.sources.volume import Volume, VolumeSource

__all__ = ["load_slices", "preprocessed_volumes"]

logger = logging.getLogger(__name__)


def preprocessed_volumes(
    source: VolumeSource, settings: PreprocessSettings, cache: VolumeCache | None = None
) -> Iterator[Volume]:
    """Yield each case of ``source`` preprocessed, from ``cache`` when it holds it.

    Parameters
    ----------
    source : VolumeSource
    settings : PreprocessSettings
    cache : VolumeCache or None
        None decodes every time.
    """
    for case in source.cases():
        if cache is None:
            yield preprocess_volume(source.load(case), settings)
        else:
            yield cache.get_or_compute(case, settings, lambda case=case: preprocess_volume(source.load(case), settings))


def load_slices(
    source: VolumeSource,
    settings: PreprocessSettings,
    context: int = 0,
    skip_empty: bool = False,
    cache: VolumeCache | None = None,
) -> list[Slice]:
    """All slices of a source (see :func:`fedsilo.data.slices.extract_slices` for the options)."""
    out: list[Slice] = []
    for volume in preprocessed_volumes(source, settings, cache):
        out.extend(extract_slices(volume, context=context, skip_empty=skip_empty))
    logger.info("%s: %d slices (context=%d, skip_empty=%s)", source.name, len(out), context, skip_empty)
    return out
