"""fedsilo.data.sources: readers that yield :class:`Volume` records (or 2D slices) from public
layouts: NIfTI (CHAOS, nnU-Net/MSD/AMOS, pairs), CSV manifests, DICOM series, PNG slice folders."""

from fedsilo.data.sources.dicom import DicomSeries, find_series_folders, read_dicom_series
from fedsilo.data.sources.dicom_write import write_dicom_series
from fedsilo.data.sources.layouts import amos_modality, chaos_source, dicom_source, nnunet_source, pair_source
from fedsilo.data.sources.loading import CaseListSource, load_case
from fedsilo.data.sources.manifest import manifest_source
from fedsilo.data.sources.nifti import canonical_to_internal, internal_to_nifti, read_nifti
from fedsilo.data.sources.png_slices import PngSliceSource, read_png
from fedsilo.data.sources.volume import CaseRef, Modality, Volume, VolumeSource

__all__ = [
    "CaseListSource",
    "CaseRef",
    "DicomSeries",
    "Modality",
    "PngSliceSource",
    "Volume",
    "VolumeSource",
    "amos_modality",
    "canonical_to_internal",
    "chaos_source",
    "dicom_source",
    "find_series_folders",
    "internal_to_nifti",
    "load_case",
    "manifest_source",
    "nnunet_source",
    "pair_source",
    "read_dicom_series",
    "read_nifti",
    "read_png",
    "write_dicom_series",
]
