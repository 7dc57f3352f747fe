"""``fedsilo export RUN_DIR --format onnx|torchscript``: a trained model for other tools.

The exported file runs the task's inference module (the classifier, the GAN's generator, the
segmentation U-Net; see :meth:`fedsilo.tasks.base.Task.inference_spec`) with a dynamic batch
axis. Next to it ``contract-<format>.json`` says what goes in and what comes out (shapes, dtype, value
range, preprocessing, class or organ names), where the weights came from, and how closely the
exported model's outputs match PyTorch's on a seeded random batch — checked at export time, so
an export that does not reproduce the model is an error, not a file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from fedsilo.fileio import atomic_write_text
from fedsilo.run.folder import RunDirError
from fedsilo.run.load import TrainedModel, load_trained

logger = logging.getLogger(__name__)

ExportFormat = Literal["onnx", "torchscript"]
FORMATS: tuple[str, ...] = ("onnx", "torchscript")
SUFFIX = {"onnx": ".onnx", "torchscript": ".pt"}
#: Largest accepted |exported - pytorch| on the check batch (float32 kernels differ in summation order).
TOLERANCE = 1e-3
CHECK_BATCH = 3


def export_run(run_dir: str | Path, fmt: str, out: str | Path | None = None, *, round_: int | None = None,
               site: str | None = None) -> Path:
    """Export a run's model; return the exported file's path.

    Parameters
    ----------
    run_dir
        A finished run folder.
    fmt
        ``onnx`` (opset chosen by torch's exporter; checked with onnxruntime) or ``torchscript``
        (``torch.jit.trace``).
    out
        Folder for ``model.onnx``/``model.pt`` and ``contract-<format>.json`` (default ``RUN_DIR/export``).
        Existing files there are never replaced.
    round_, site
        Which weights (see :func:`fedsilo.run.load.load_trained`).
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    logger.info("Loading the model of %s", run_dir)
    trained = load_trained(run_dir, round_=round_, site=site, device="cpu")
    try:
        spec = trained.task.inference_spec(trained.model)
    except NotImplementedError as exc:
        raise RunDirError(str(exc)) from exc
    out_dir = Path(out) if out is not None else trained.run.path / "export"
    target = out_dir / f"model{SUFFIX[fmt]}"
    contract_path = out_dir / f"contract-{fmt}.json"
    for path in (target, contract_path):
        if path.exists():
            raise RunDirError(f"{str(path)!r} exists; export into another --out folder (nothing was replaced)")
    out_dir.mkdir(parents=True, exist_ok=True)
    check = _check_batch(spec.example, trained.run.cfg.experiment.seed)
    with torch.no_grad():
        expected = spec.module(check).float().numpy()
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        tmp_file = Path(tmp) / target.name
        logger.info("Exporting %s to %s (the exporter traces the model: seconds to a minute)", trained.source, fmt)
        with quiet_exporter():
            if fmt == "onnx":
                _export_onnx(spec.module, spec.example, spec.input_name, spec.output_name, tmp_file)
            else:
                torch.jit.trace(spec.module, spec.example).save(str(tmp_file))
        logger.info("Checking the exported model against PyTorch on %d inputs", CHECK_BATCH)
        if fmt == "onnx":
            got = _run_onnx(tmp_file, spec.input_name, check)
        else:
            with torch.no_grad():
                got = torch.jit.load(str(tmp_file))(check).float().numpy()
        error = float(np.max(np.abs(got - expected))) if expected.size else 0.0
        if not math.isfinite(error) or error > TOLERANCE:
            raise RuntimeError(f"the exported {fmt} model does not reproduce PyTorch's outputs "
                               f"(max |difference| {error:.3g} > {TOLERANCE}); nothing was written")
        shutil.move(str(tmp_file), target)
    atomic_write_text(contract_path, json.dumps(_contract(trained, spec.contract, fmt, target, error), indent=2) + "\n")
    logger.info("Exported %s to %s (max |difference| to PyTorch %.2g on %d inputs)", trained.source, target,
                error, CHECK_BATCH)
    return target


#: Loggers of the exporters' own chatter (info lines per optimisation pass, skipped torchvision ops).
EXPORTER_LOGGERS = ("torch.onnx", "torch.export", "torch._export", "torch.fx", "torch._dynamo", "onnxscript",
                    "onnx_ir")


@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
    """Keep torch's and onnxscript's internals off the console while a model is exported.

    Their loggers are raised to ERROR (errors still show; exceptions propagate unchanged) and
    their warnings (deprecations inside torch) are logged at DEBUG instead of printed. With
    debug logging on (``fedsilo -v``) nothing is hidden.
    """
    if logging.getLogger().isEnabledFor(logging.DEBUG):
        yield
        return
    loggers = [logging.getLogger(name) for name in EXPORTER_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
    for w in caught:
        logger.debug("exporter warning (%s:%d): %s", w.filename, w.lineno, w.message)


def _check_batch(example: torch.Tensor, seed: int) -> torch.Tensor:
    """A seeded batch of CHECK_BATCH inputs shaped like ``example`` (values in [-1, 1])."""
    gen = torch.Generator().manual_seed(seed)
    shape = (CHECK_BATCH, *example.shape[1:])
    return (torch.rand(shape, generator=gen) * 2 - 1).to(example.dtype)


def _export_onnx(module: torch.nn.Module, example: torch.Tensor, input_name: str, output_name: str,
                 path: Path) -> None:
    batch = torch.export.Dim("batch", min=1, max=65536)
    torch.onnx.export(module, (example,), str(path), dynamo=True, input_names=[input_name],
                      output_names=[output_name], dynamic_shapes=({0: batch},), verbose=False,
                      external_data=False)


def _run_onnx(path: Path, input_name: str, batch: torch.Tensor) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {input_name: batch.numpy()})[0], dtype=np.float32)


def _contract(trained: TrainedModel, contract: dict[str, Any], fmt: str, target: Path, error: float) -> dict[str, Any]:
    cfg = trained.run.cfg
    return {
        "format": fmt,
        "file": target.name,
        "task": cfg.experiment.task,
        **contract,
        "source": {"run": str(trained.run.path), "experiment": cfg.experiment.name, "round": trained.round,
                   "site": trained.site, "mode": cfg.experiment.mode, "seed": cfg.experiment.seed,
                   "commit": trained.run.read_env().get("git", {}).get("commit")},
        "check": {"inputs": CHECK_BATCH, "max_abs_difference_to_pytorch": error, "tolerance": TOLERANCE},
        "torch": torch.__version__,
    }
