"""The segmentation (FedGIN) task end to end: training, DSBN, every method, evaluation, predict."""

from __future__ import annotations

import dataclasses
import json

import nibabel as nib
import numpy as np
import pytest
import torch

from fedsilo.config import ConfigError, config_from_dict
from fedsilo.data.labels import ORGANS
from fedsilo.report import write_run_files
from fedsilo.report.summary import final_rows
from fedsilo.run.start import start_run
from fedsilo.tasks import TrainContext, make_task
from fedsilo.tasks.segmentation import METHODS
from fedsilo.training import train_site
from helpers import SEG_SHAPE, seg_config


@pytest.fixture(scope="module")
def gin_run(tmp_path_factory):
    run = start_run(seg_config(), tmp_path_factory.mktemp("seg") / "run")
    write_run_files(run.path)
    return run


def test_run_reports_per_organ_and_modality_metrics_and_overlays(gin_run):
    glob = final_rows(gin_run)["global"]
    for mod in ("ct", "mr"):
        assert glob[f"test_patients_{mod}"] == 1
        assert 0.0 <= glob[f"test_dice3d_{mod}_mean"] <= 1.0
        assert f"test_dice3d_{mod}_liver" in glob and f"test_hd95_{mod}_liver" in glob
    assert glob["test_dice3d_mean"] == pytest.approx((glob["test_dice3d_ct_mean"] + glob["test_dice3d_mr_mean"]) / 2)
    for mod in ("ct", "mr"):
        assert (gin_run.path / "overlays" / f"{mod}-round-002.png").stat().st_size > 1000
    sites = {r["scope"] for r in gin_run.read_metrics()}
    assert {"ct-site", "mr-site", "global"} <= sites
    assert {s["name"]: s.get("modality") for s in gin_run.read_sites()} == {"ct-site": "ct", "mr-site": "mr"}
    assert "Research on federated multi-organ segmentation" in (gin_run.path / "MODEL_CARD.md").read_text()


def test_dsbn_keeps_each_modalitys_batch_norm_to_its_sites(tmp_path):
    """One federated DSBN round: the CT batch norms of the global model are exactly those the CT site
    trained (the MR site's copy is never averaged in), likewise for MR; shared weights are the
    example-weighted mean of both sites' (checked against the same round run site by site)."""
    fed = start_run(seg_config("federation.rounds=1", method="dsbn"), tmp_path / "fed")
    local = start_run(seg_config("federation.rounds=1", method="dsbn", mode="local"), tmp_path / "local")
    g = torch.load(fed.final_path, weights_only=False)["model"]
    sites = torch.load(local.final_path, weights_only=False)["site_models"]
    n = {s["name"]: s["num_train"] for s in fed.read_sites()}
    bn_keys = [k for k in g if ".bns." in k]
    assert bn_keys and any(".bns.ct." in k for k in bn_keys) and any(".bns.mr." in k for k in bn_keys)
    for k in bn_keys:
        owner = "ct-site" if ".bns.ct." in k else "mr-site"
        torch.testing.assert_close(g[k], sites[owner][k], rtol=0, atol=0, msg=k)
    shared = [k for k in g if ".bns." not in k and g[k].is_floating_point()]
    total = sum(n.values())
    for k in shared[:6]:
        mean = sum(sites[s][k].double() * n[s] / total for s in n)
        torch.testing.assert_close(g[k].double(), mean, rtol=1e-5, atol=1e-6, msg=k)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains(method):
    cfg = seg_config("train.local_steps=2", method=method)
    task = make_task(cfg)
    site = task.site_data(1)
    model = task.build_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = train_site(task, model, site.train, TrainContext(round=1, site_index=1, site_name="mr-site",
                                                        device=torch.device("cpu")))
    assert np.isfinite(result.metrics["train_loss"]) and result.num_examples == len(site.train)
    changed = [k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.equal(v, before[k])]
    assert changed
    if method == "gin+ipa":
        assert result.metrics["train_consistency"] >= 0


def test_bad_segmentation_configs_are_rejected():
    with pytest.raises(ConfigError, match="segmentation.method"):
        seg_config(method="gin2")
    with pytest.raises(ConfigError, match=r"data.volume.size must be divisible by 2\*\*\(unet.depth - 1\) = 4, got 34"):
        seg_config("data.volume.size=34")
    with pytest.raises(ConfigError, match="data.source must be 'volumes'"):
        config_from_dict({"experiment": {"task": "segmentation"}, "data": {"source": "phantom"}})


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def test_predict_round_trip_matches_evaluation(gin_run, tmp_path):
    """A phantom MR patient written as NIfTI (and as a DICOM series): fedsilo predict gives a label
    map on the input's grid, and its Dice against the truth equals what evaluation reports."""
    from fedsilo.data.labels import get_mapping
    from fedsilo.data.sources.dicom_write import write_dicom_series
    from fedsilo.data.sources.loading import load_case
    from fedsilo.data.sources.volume import CaseRef
    from fedsilo.data.tools import write_abdomen_phantom
    from fedsilo.inference.predict import predict_path
    from fedsilo.run.load import load_trained

    src = tmp_path / "scans"
    write_abdomen_phantom(src, 1, "mr", seed=7, shape=tuple(SEG_SHAPE))
    case = load_case(CaseRef("dicom-case", "mr", src / "image_1.nii.gz", src / "label_1.nii.gz", get_mapping("fedsilo")))
    write_dicom_series(case, tmp_path / "dicom" / "series1")

    out = predict_path(gin_run.path, src, tmp_path / "pred", modality="mr")
    assert list(out.written) == ["image_1"] and not out.failed
    pred_img = nib.load(out.written["image_1"])
    truth_img = nib.load(src / "label_1.nii.gz")
    np.testing.assert_allclose(pred_img.affine, truth_img.affine, atol=1e-4)
    assert pred_img.shape == truth_img.shape
    pred, truth = np.asarray(pred_img.dataobj), np.asarray(truth_img.dataobj)

    # the run's evaluation on the same patient, as a [[data.test]] set
    cfg = dataclasses.replace(gin_run.cfg, data=dataclasses.replace(gin_run.cfg.data, test=[
        dataclasses.replace(gin_run.cfg.data.test[1], name="probe", kind="pair", path=str(src / "image_1.nii.gz"),
                            label_path=str(src / "label_1.nii.gz"), mapping="fedsilo", count=0, offset=0)]))
    trained = load_trained(gin_run.path)
    task = make_task(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, volume=dataclasses.replace(
        cfg.data.volume, skip_empty=False))))
    reported = task.evaluate(trained.model, task.test_data(), torch.device("cpu"))
    compared = 0
    for organ_id, organ in enumerate(ORGANS[1:], start=1):
        key = f"dice3d_mr_{organ}"
        if key in reported and np.isfinite(reported[key]):
            assert _dice(pred == organ_id, truth == organ_id) == pytest.approx(reported[key], abs=1e-6), organ
            compared += 1
    assert compared >= 3

    volumes = (tmp_path / "pred" / "volumes.csv").read_text().splitlines()
    liver = next(line for line in volumes if ",liver," in line).split(",")
    voxel_ml = abs(np.linalg.det(truth_img.affine[:3, :3])) / 1000
    assert float(liver[5]) == pytest.approx((pred == 1).sum() * voxel_ml, rel=1e-3)
    sidecar = json.loads((tmp_path / "pred" / "labels.json").read_text())
    assert sidecar["labels"]["1"] == "liver" and sidecar["model"]["round"] == 2
    assert (tmp_path / "pred" / "overlays" / "image_1.png").stat().st_size > 1000

    dicom = predict_path(gin_run.path, tmp_path / "dicom", tmp_path / "pred-dicom")
    from_dicom = np.asarray(nib.as_closest_canonical(nib.load(dicom.written["series1"])).dataobj)
    np.testing.assert_array_equal(from_dicom, np.asarray(nib.as_closest_canonical(pred_img).dataobj))


def test_predict_reports_a_bad_case_and_keeps_going(gin_run, tmp_path):
    from fedsilo.data.tools import write_abdomen_phantom
    from fedsilo.inference.predict import predict_path

    write_abdomen_phantom(tmp_path / "in", 1, "ct", seed=3, shape=tuple(SEG_SHAPE))
    (tmp_path / "in" / "broken.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    out = predict_path(gin_run.path, tmp_path / "in", tmp_path / "out", modality="ct")
    assert list(out.written) == ["image_1"]
    assert "broken" in out.failed and "truncated or corrupted" in out.failed["broken"]
    assert "broken" in (tmp_path / "out" / "failures.csv").read_text()
    from fedsilo.run.folder import RunDirError

    with pytest.raises(RunDirError, match="not an empty folder"):
        predict_path(gin_run.path, tmp_path / "in", tmp_path / "out", modality="ct")


def test_segmentation_audit(gin_run):
    from fedsilo.audit.registry import run_audit

    report = run_audit(gin_run.path, overrides=["audit.reference_models=2", "audit.max_samples=12",
                                                "audit.inversion_batch_sizes=[1]", "audit.inversion_local_steps=[1]",
                                                "audit.inversion_iterations=20"])
    summary = report["summary"]
    for key in ("loss_auc", "lira_auc", "rmia_auc", "gi_psnr", "gi_psnr_dp"):
        assert key in summary, key
    assert 0.0 <= summary["loss_auc"] <= 1.0
    assert (gin_run.path / "audit" / "gradient_inversion.png").is_file()


def test_sample_level_dp_trains_privately_and_reports_epsilon(tmp_path):
    run = start_run(seg_config("privacy.mode=sample", "privacy.epsilon=8", "federation.rounds=2",
                               "federation.eval_every=2"), tmp_path / "dp")
    rows = final_rows(run)
    for site in ("ct-site", "mr-site"):
        eps = rows[site]["train_epsilon"]
        assert 0 < eps <= 8.0 + 1e-6, (site, eps)
    state = torch.load(run.final_path, weights_only=False)["model"]
    assert not any("running_mean" in k for k in state)  # batch norm became group norm
    per_round = [r["train_epsilon"] for r in run.read_metrics() if r["scope"] == "ct-site" and "train_epsilon" in r]
    assert len(per_round) == 2 and per_round[0] < per_round[1]


def test_unet_export_matches_pytorch(gin_run, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from fedsilo.inference.export import export_run
    from fedsilo.run.load import load_trained

    path = export_run(gin_run.path, "onnx", tmp_path)
    trained = load_trained(gin_run.path)
    x, _, _ = trained.task.test_data().batch(torch.arange(6))
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"slices": x.numpy()})[0]
    with torch.no_grad():
        expected = trained.model(x).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-3)
    contract = json.loads((tmp_path / "contract-onnx.json").read_text())
    assert contract["output"]["classes"][1] == "liver" and contract["input"]["range"] == [0.0, 1.0]
