"""The on-disk preprocessed-volume cache and the source -> slices pipeline."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from fedsilo.data.cache import VolumeCache, default_cache_dir, fingerprint_files
from fedsilo.data.pipeline import load_slices, preprocessed_volumes
from fedsilo.data.preprocess_volume import PreprocessSettings
from fedsilo.data.sources import CaseRef, Volume, chaos_source
from fedsilo.data.sources.loading import CaseListSource
from helpers import tiny_pair, write_nifti


class CountingSource(CaseListSource):
    """Counts decodes."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.decoded = 0

    def load(self, case: CaseRef) -> Volume:
        self.decoded += 1
        return super().load(case)


def _source(folder: Path) -> CountingSource:
    tiny_pair(folder, "1")
    tiny_pair(folder, "2")
    base = chaos_source(folder, site="a")
    return CountingSource(base.cases(), name="chaos")


def test_second_run_does_not_decode(tmp_path: Path) -> None:
    src = _source(tmp_path / "data")
    cache = VolumeCache(tmp_path / "cache")
    settings = PreprocessSettings(size=16)
    first = load_slices(src, settings, cache=cache)
    assert src.decoded == 2 and (cache.hits, cache.misses) == (0, 2)
    second = load_slices(src, settings, cache=cache)
    assert src.decoded == 2 and cache.hits == 2
    assert len(first) == len(second) == 8
    for a, b in zip(first, second, strict=True):
        assert (a.patient_id, a.slice_index, a.site, a.annotated, a.spacing) == (b.patient_id, b.slice_index, b.site, b.annotated, b.spacing)
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.label, b.label)
    assert not list((tmp_path / "cache").rglob("*.tmp"))  # atomic writes leave no temporaries


def test_invalidated_by_settings_and_content(tmp_path: Path) -> None:
    src = _source(tmp_path / "data")
    cache = VolumeCache(tmp_path / "cache")
    list(preprocessed_volumes(src, PreprocessSettings(size=16), cache))
    list(preprocessed_volumes(src, PreprocessSettings(size=32), cache))
    assert src.decoded == 4  # new settings -> new keys
    # Rewrite an uncompressed image in place with other values: same size, same mtime. A
    # size+mtime key would serve the stale entry; the content key does not.
    path = tmp_path / "data" / "image_3.nii"
    write_nifti(path, np.arange(480.0).reshape(12, 10, 4))
    src3 = CountingSource(chaos_source(tmp_path / "data", site="a").cases(), name="chaos")
    before = [v.image.copy() for v in preprocessed_volumes(src3, PreprocessSettings(size=16), cache)]
    stat, stat_key = path.stat(), fingerprint_files([path], "stat")
    write_nifti(path, np.arange(480.0)[::-1].reshape(12, 10, 4))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and fingerprint_files([path], "stat") == stat_key
    decoded = src3.decoded
    after = list(preprocessed_volumes(src3, PreprocessSettings(size=16), cache))
    assert src3.decoded == decoded + 1  # only image_3 decoded again
    assert not np.array_equal(after[2].image, before[2])
    np.testing.assert_array_equal(after[0].image, before[0])


def test_moved_data_still_hits_with_content_fingerprint(tmp_path: Path) -> None:
    src = _source(tmp_path / "data")
    cache = VolumeCache(tmp_path / "cache")
    list(preprocessed_volumes(src, PreprocessSettings(size=16), cache))
    (tmp_path / "data").rename(tmp_path / "moved")
    moved = CountingSource(chaos_source(tmp_path / "moved", site="a").cases(), name="chaos")
    list(preprocessed_volumes(moved, PreprocessSettings(size=16), cache))
    assert moved.decoded == 0
    stat_cache = VolumeCache(tmp_path / "cache2", fingerprint="stat")
    assert stat_cache.key(moved.cases()[0], PreprocessSettings()) != VolumeCache(tmp_path / "cache2").key(moved.cases()[0], PreprocessSettings())


def test_cache_dir_resolution_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDSILO_CACHE", str(tmp_path / "env"))
    assert default_cache_dir() == tmp_path / "env"
    assert VolumeCache().root == tmp_path / "env"
    assert default_cache_dir(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("FEDSILO_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "fedsilo"
    with pytest.raises(ValueError, match="fingerprint must be 'content' or 'stat'"):
        VolumeCache(tmp_path, fingerprint="mtime")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fingerprint must be 'content' or 'stat'"):
        fingerprint_files([], method="md5")  # type: ignore[arg-type]


def test_corrupt_entry_is_a_miss_and_clear(tmp_path: Path) -> None:
    src = _source(tmp_path / "data")
    cache = VolumeCache(tmp_path / "cache")
    list(preprocessed_volumes(src, PreprocessSettings(size=16), cache))
    entries = sorted((tmp_path / "cache").rglob("*.npz"))
    assert len(entries) == 2
    entries[0].write_bytes(b"garbage")
    list(preprocessed_volumes(src, PreprocessSettings(size=16), cache))
    assert src.decoded == 3
    assert cache.clear() == 2 and not list((tmp_path / "cache").rglob("*.npz"))


def test_real_chaos_cached_pipeline(tmp_path: Path, shared_data: Path) -> None:
    src = CountingSource(chaos_source(shared_data / "chaos_mr_t2").cases()[:2], name="chaos")
    cache = VolumeCache(tmp_path)
    settings = PreprocessSettings(size=64)
    slices = load_slices(src, settings, context=1, skip_empty=True, cache=cache)
    again = load_slices(src, settings, context=1, skip_empty=True, cache=cache)
    assert src.decoded == 2 and len(slices) == len(again) > 0
    assert slices[0].image.shape == (3, 64, 64)
    assert {s.patient_id for s in slices} == {"1", "2"}
