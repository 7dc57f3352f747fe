"""Segmentation metrics (Dice 2D/3D, HD95 in mm) and the marginal Dice+CE loss, on hand-made label maps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedsilo.data.labels import IGNORE_INDEX, ORGAN_IDS
from fedsilo.tasks.segmentation import (
    dice_per_class,
    hd95_per_class,
    marginal_log_probs,
    masked_dice_ce,
    nanmean_per_class,
    per_patient_dice,
    per_patient_hd95,
    stack_slices,
)

NAN = float("nan")
PANCREAS = ORGAN_IDS["pancreas"]
ALL_BUT_PANCREAS = torch.tensor([c != PANCREAS for c in range(8)])


def _assert_nan_equal(got, expected) -> None:
    np.testing.assert_allclose(np.asarray(got, dtype=float), np.asarray(expected, dtype=float), rtol=1e-6, atol=1e-9)


# ----------------------------------------------------------------------------------- 2D Dice
def test_slice_dice_hand_computed_with_ignored_voxels() -> None:
    target = torch.tensor([[[1, 1, 0, 0], [1, 2, 2, 0], [0, 2, 255, 255]]])
    pred = torch.tensor([[[1, 0, 0, 0], [1, 2, 2, 2], [0, 0, 1, 2]]])
    d = dice_per_class(pred, target)
    assert d.shape == (1, 8) and d.dtype == torch.float64
    # class 0: |T|=4 |P|=5 overlap 3; class 1: 3, 2, 2; class 2: 3, 3, 2 (ignored voxels dropped)
    _assert_nan_equal(d[0], [6 / 9, 4 / 5, 4 / 6, NAN, NAN, NAN, NAN, NAN])


def test_slice_dice_of_a_false_positive_is_zero_not_nan() -> None:
    d = dice_per_class(torch.tensor([[[3, 0], [0, 0]]]), torch.tensor([[[0, 0], [0, 0]]]), num_classes=4)
    _assert_nan_equal(d[0], [2 * 3 / 7, NAN, NAN, 0.0])


def test_unannotated_class_is_nan_and_its_prediction_counts_as_background() -> None:
    target = torch.tensor([[[0, 0], [1, 1]]])
    pred = torch.tensor([[[PANCREAS, 0], [1, 1]]])
    full = dice_per_class(pred, target)
    assert full[0, 0].item() == pytest.approx(2 / 3) and full[0, PANCREAS] == 0.0
    partial = dice_per_class(pred, target, annotated=ALL_BUT_PANCREAS)
    assert partial[0, 0] == 1.0 and partial[0, 1] == 1.0 and math.isnan(partial[0, PANCREAS])


def test_per_sample_annotation_masks() -> None:
    target = torch.tensor([[[0, 1]], [[0, 1]]])
    pred = torch.tensor([[[2, 1]], [[2, 1]]])
    ann = torch.tensor([[True, True, True], [True, True, False]])
    d = dice_per_class(pred, target, num_classes=3, annotated=ann)
    _assert_nan_equal(d, [[0.0, 1.0, 0.0], [1.0, 1.0, NAN]])


# ----------------------------------------------------------------------------------- 3D Dice
def _two_patients():
    vols_true = {
        "A": np.array([[[1, 1], [0, 0]], [[1, 1], [1, 0]], [[0, 0], [0, 0]]]),
        "B": np.array([[[2, 2], [0, 0]], [[2, 0], [0, 0]]]),
    }
    vols_pred = {
        "A": np.array([[[1, 0], [0, 0]], [[1, 1], [1, 1]], [[0, 0], [0, 1]]]),
        "B": np.array([[[2, 2], [0, 0]], [[0, 0], [0, 0]]]),
    }
    z_of = {"A": [0, 1, 2], "B": [5, 6]}
    order = [("B", 1), ("A", 2), ("A", 0), ("B", 0), ("A", 1)]  # shuffled slices
    true = np.stack([vols_true[p][i] for p, i in order])
    pred = np.stack([vols_pred[p][i] for p, i in order])
    return pred, true, [p for p, _ in order], [z_of[p][i] for p, i in order], vols_true


def test_stack_slices_rebuilds_volumes_in_slice_order() -> None:
    _, true, pids, zs, vols_true = _two_patients()
    stacked = stack_slices(true, pids, zs)
    assert set(stacked) == {"A", "B"}
    np.testing.assert_array_equal(stacked["A"], vols_true["A"])
    np.testing.assert_array_equal(stacked["B"], vols_true["B"])
    stacked_t = stack_slices(torch.as_tensor(true), pids, zs)
    np.testing.assert_array_equal(stacked_t["A"], vols_true["A"])


def test_per_patient_3d_dice_hand_computed() -> None:
    pred, true, pids, zs, _ = _two_patients()
    d = per_patient_dice(pred, true, pids, zs, num_classes=3)
    # A: class 1 |T|=5 |P|=6 overlap 4 -> 8/11; class 0 |T|=7 |P|=6 overlap 5 -> 10/13; class 2 absent
    _assert_nan_equal(d["A"], [10 / 13, 8 / 11, NAN])
    # B: class 2 |T|=3 |P|=2 overlap 2 -> 4/5; class 0 |T|=5 |P|=6 overlap 5 -> 10/11
    _assert_nan_equal(d["B"], [10 / 11, NAN, 4 / 5])
    # the mean over patients skips NaN
    _assert_nan_equal(nanmean_per_class(d), [(10 / 13 + 10 / 11) / 2, 8 / 11, 4 / 5])
    # 3D Dice is not the mean of 2D slice Dice (slice z=2 of A has a lone false positive)
    slice_mean = nanmean_per_class(dice_per_class(pred, true, num_classes=3).numpy())
    assert slice_mean[1] != pytest.approx(8 / 11)


def test_per_patient_dice_with_annotation_per_patient() -> None:
    pred, true, pids, zs, _ = _two_patients()
    ann = {"A": np.array([True, True, True]), "B": np.array([True, False, True])}
    d = per_patient_dice(pred, true, pids, zs, num_classes=3, annotated={k: torch.as_tensor(v) for k, v in ann.items()})
    _assert_nan_equal(d["B"], [10 / 11, NAN, 4 / 5])
    with pytest.raises(ValueError, match="annotated has no entry for patient 'B'"):
        per_patient_dice(pred, true, pids, zs, num_classes=3, annotated={"A": torch.ones(3, dtype=torch.bool)})


def test_stack_slices_rejects_bad_inputs(caplog: pytest.LogCaptureFixture) -> None:
    s = np.zeros((3, 2, 2), dtype=np.int64)
    with pytest.raises(ValueError, match="slice_indices must be unique per patient, patient 'p' repeats"):
        stack_slices(s, ["p", "p", "p"], [0, 1, 1])
    with pytest.raises(ValueError, match="must both have length N=3, got 2 and 3"):
        stack_slices(s, ["p", "p"], [0, 1, 2])
    with pytest.raises(ValueError, match=r"slices must be shaped \(N, H, W\)"):
        stack_slices(np.zeros((3, 2)), ["p"] * 3, [0, 1, 2])
    stack_slices(s, ["p"] * 3, [0, 1, 3])
    assert "not contiguous" in caplog.text


# ----------------------------------------------------------------------------------- HD95
def _plates() -> tuple[np.ndarray, np.ndarray]:
    truth = np.zeros((5, 5, 6), dtype=np.int64)
    pred = np.zeros_like(truth)
    truth[1, 1:4, 1:4] = 1  # a 3x3 plate on slice 1
    pred[3, 1:4, 2:5] = 1  # the same plate two slices up and one column right
    return pred, truth


def test_hd95_with_anisotropic_spacing_hand_computed() -> None:
    pred, truth = _plates()
    hd = hd95_per_class(pred, truth, spacing=(2.5, 0.7, 0.9), num_classes=3)
    # every voxel is an edge voxel; 6 of 9 distances are 2 slices * 2.5 mm = 5 mm, the 3 voxels of
    # the unmatched column are sqrt(5^2 + 0.9^2) mm away; their 95th percentile is the latter.
    expected = math.sqrt(5.0**2 + 0.9**2)
    assert hd[1] == pytest.approx(expected, rel=1e-6)
    assert math.isnan(hd[0]) and math.isnan(hd[2])
    iso = hd95_per_class(pred, truth, spacing=(1.0, 1.0, 1.0), num_classes=3)
    assert iso[1] == pytest.approx(math.sqrt(5.0), rel=1e-6)


def test_hd95_is_the_95th_percentile_not_the_maximum() -> None:
    truth = np.zeros((3, 45), dtype=np.int64)
    truth[0, :40] = 1
    pred = truth.copy()
    pred[2, 44] = 1  # one stray voxel: 1 of 41 distances
    hd95 = hd95_per_class(pred, truth, spacing=(2.0, 0.5), num_classes=2)
    hd100 = hd95_per_class(pred, truth, spacing=(2.0, 0.5), num_classes=2, percentile=100)
    assert hd95[1] == pytest.approx(0.0, abs=1e-9)
    assert hd100[1] == pytest.approx(math.sqrt((2 * 2.0) ** 2 + (5 * 0.5) ** 2), rel=1e-6)


def test_hd95_empty_prediction_gets_the_penalty_and_unannotated_is_nan() -> None:
    _, truth = _plates()
    pred = np.zeros_like(truth)
    diag = math.sqrt((5 * 2.5) ** 2 + (5 * 0.7) ** 2 + (6 * 0.9) ** 2)
    assert hd95_per_class(pred, truth, (2.5, 0.7, 0.9), num_classes=2)[1] == pytest.approx(diag)
    assert hd95_per_class(pred, truth, (2.5, 0.7, 0.9), num_classes=2, empty_penalty=99.0)[1] == 99.0
    ann = torch.tensor([True, False])
    assert math.isnan(hd95_per_class(pred, np.zeros_like(truth), (2.5, 0.7, 0.9), num_classes=2, annotated=ann)[1])


def test_hd95_ignores_ignore_index_voxels() -> None:
    pred, truth = _plates()
    truth_ig = truth.copy()
    truth_ig[4] = IGNORE_INDEX
    pred_ig = pred.copy()
    pred_ig[4, 0, 0] = 1  # a stray prediction inside the ignored slab does not count
    hd = hd95_per_class(pred_ig, truth_ig, (2.5, 0.7, 0.9), num_classes=2, percentile=100)
    assert hd[1] == pytest.approx(math.sqrt(5.0**2 + 0.9**2), rel=1e-6)


def test_per_patient_hd95_restacks_slices() -> None:
    pred, truth = _plates()
    order = [3, 0, 4, 2, 1]
    out = per_patient_hd95(pred[order], truth[order], ["p"] * 5, order, spacing={"p": (2.5, 0.7, 0.9)}, num_classes=2)
    assert out["p"][1] == pytest.approx(math.sqrt(5.0**2 + 0.9**2), rel=1e-6)


# ----------------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("pred", "target", "kwargs", "match"),
    [
        (np.zeros((1, 2, 2)), np.zeros((1, 2, 2), np.int64), {}, "pred must be an integer label map, got dtype"),
        (np.zeros((1, 2, 2), np.int64), np.zeros((1, 2, 3), np.int64), {}, "pred and target must have the same shape"),
        (np.full((1, 2, 2), 8), np.zeros((1, 2, 2), np.int64), {}, r"pred values must be in \[0, 8\), got \[8, 8\]"),
        (np.zeros((1, 2, 2), np.int64), np.full((1, 2, 2), 9), {}, r"target values must be in \[0, 8\) or 255"),
        (np.zeros(3, np.int64), np.zeros(3, np.int64), {}, r"pred must be shaped \(B, ...\)"),
        (np.zeros((1, 2, 2), np.int64), np.full((1, 2, 2), PANCREAS), {"annotated": ALL_BUT_PANCREAS},
         "target of sample 0 contains class 5, which annotated marks as not labelled"),
        (np.zeros((1, 2, 2), np.int64), np.zeros((1, 2, 2), np.int64), {"annotated": torch.ones(7, dtype=torch.bool)},
         r"annotated must be shaped \(8,\) or \(1, 8\), got \(7,\)"),
        (np.zeros((1, 2, 2), np.int64), np.zeros((1, 2, 2), np.int64), {"annotated": torch.ones(8)},
         "annotated must be a bool mask"),
        (np.zeros((1, 2, 2), np.int64), np.zeros((1, 2, 2), np.int64), {"annotated": torch.arange(8) > 0},
         r"annotated\[..., 0\] \(background\) must be True"),
    ],
)
def test_dice_rejects_bad_inputs(pred, target, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        dice_per_class(pred, target, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"spacing": (1.0, 1.0)}, r"spacing must be 3 positive finite numbers"),
        ({"spacing": (1.0, -1.0, 1.0)}, r"spacing must be 3 positive finite numbers"),
        ({"spacing": (1.0, 1.0, 1.0), "percentile": 0}, r"percentile must be in \(0, 100\], got 0"),
        ({"spacing": (1.0, 1.0, 1.0), "percentile": 101}, r"percentile must be in \(0, 100\]"),
        ({"spacing": (1.0, 1.0, 1.0), "empty_penalty": -1.0}, "empty_penalty must be >= 0 or None, got -1.0"),
    ],
)
def test_hd95_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    pred, truth = _plates()
    with pytest.raises(ValueError, match=match):
        hd95_per_class(pred, truth, num_classes=2, **kwargs)


def test_hd95_rejects_bad_dimensionality() -> None:
    with pytest.raises(ValueError, match=r"pred must be shaped \(H, W\) or \(D, H, W\)"):
        hd95_per_class(np.zeros(4, np.int64), np.zeros(4, np.int64), spacing=(1.0,))


def test_nanmean_per_class_hand_values_and_errors() -> None:
    _assert_nan_equal(nanmean_per_class(np.array([[1.0, NAN, NAN], [0.5, 0.2, NAN]])), [0.75, 0.2, NAN])
    with pytest.raises(ValueError, match="at least one case"):
        nanmean_per_class({})
    with pytest.raises(ValueError, match=r"values must be shaped \(N, C\)"):
        nanmean_per_class(np.zeros(3))


# ----------------------------------------------------------------------------------- marginal loss
def test_marginal_ce_hand_values() -> None:
    logits = torch.zeros(1, 8, 2, 2)
    target = torch.zeros(1, 2, 2, dtype=torch.long)
    five = torch.tensor([True] * 5 + [False] * 3)
    # background merged with 3 unannotated classes: p' = 4/8 -> CE = ln 2; all annotated: ln 8
    assert masked_dice_ce(logits, target, five, lambda_dice=0.0).item() == pytest.approx(math.log(2.0))
    assert masked_dice_ce(logits, target, None, lambda_dice=0.0).item() == pytest.approx(math.log(8.0))
    lp = marginal_log_probs(logits, five.expand(1, 8))
    torch.testing.assert_close(lp.exp().sum(dim=1), torch.ones(1, 2, 2))
    assert torch.isinf(lp[:, 5:]).all()


@pytest.mark.parametrize("batch_dice", [True, False])
def test_dice_part_hand_values(batch_dice: bool) -> None:
    # 2 classes, p = 0.5 everywhere; target [[0, 1], [0, 0]]:
    # Dice_0 = 2*1.5/(2+3) = 3/5 -> loss 2/5; Dice_1 = 2*0.5/(2+1) = 1/3 -> loss 2/3; CE = ln 2
    logits = torch.zeros(1, 2, 2, 2)
    target = torch.tensor([[[[0, 1], [0, 0]]]])
    kw = {"batch_dice": batch_dice}
    assert masked_dice_ce(logits, target, **kw).item() == pytest.approx((2 / 5 + 2 / 3) / 2 + math.log(2), rel=1e-4)
    assert masked_dice_ce(logits, target, include_background=False, **kw).item() == pytest.approx(
        2 / 3 + math.log(2), rel=1e-4)
    assert masked_dice_ce(logits, target, lambda_ce=0.0, lambda_dice=2.0, **kw).item() == pytest.approx(
        2 * (2 / 5 + 2 / 3) / 2, rel=1e-4)
    # a class absent from the target is left to CE: all-background target -> Dice term = loss of class 0 only
    background = torch.zeros(1, 2, 2, dtype=torch.long)
    assert masked_dice_ce(logits, background, lambda_ce=0.0, **kw).item() == pytest.approx(1 / 3, rel=1e-4)


def test_batch_dice_sums_each_class_over_the_samples_that_annotate_it() -> None:
    # sample 0 annotates class 2 and has it; sample 1 does not annotate it (its voxels are background)
    logits = torch.zeros(2, 3, 1, 2)
    target = torch.tensor([[[2, 0]], [[0, 0]]])
    ann = torch.tensor([[True, True, True], [True, True, False]])
    # class 2 over sample 0 only: p = 1/3 on 2 voxels, 1 true voxel -> Dice = 2*(1/3)/(2/3 + 1) = 2/5
    # class 0: sample 0 p = 1/3 (x2), sample 1 marginal p = 2/3 (x2); truth 1 + 2 voxels
    #          -> Dice = 2*(1/3 + 4/3)/(2/3 + 4/3 + 3) = (10/3)/5 = 2/3 ; class 1 absent -> left out
    got = masked_dice_ce(logits, target, ann, lambda_ce=0.0)
    assert got.item() == pytest.approx(((1 - 2 / 5) + (1 - 2 / 3)) / 2, rel=1e-4)


def _organ_logits(background_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Confident logits: liver where the target is liver, ``background_class`` elsewhere."""
    target = torch.zeros(2, 8, 8, dtype=torch.long)
    target[:, 2:5, 2:5] = ORGAN_IDS["liver"]
    winner = torch.where(target == ORGAN_IDS["liver"], ORGAN_IDS["liver"], background_class)
    logits = 10.0 * torch.nn.functional.one_hot(winner, 8).movedim(-1, 1).float()
    return logits, target


def test_predicting_an_unannotated_organ_costs_nothing_but_is_penalised_when_annotated() -> None:
    good, target = _organ_logits(background_class=0)
    pancreas_everywhere, _ = _organ_logits(background_class=PANCREAS)
    unannotated_good = masked_dice_ce(good, target, ALL_BUT_PANCREAS)
    unannotated_panc = masked_dice_ce(pancreas_everywhere, target, ALL_BUT_PANCREAS)
    assert unannotated_panc.item() == pytest.approx(unannotated_good.item(), abs=1e-6)
    assert unannotated_good.item() < 0.01
    annotated_panc = masked_dice_ce(pancreas_everywhere, target, torch.ones(8, dtype=torch.bool))
    assert annotated_panc.item() > 5.0  # CE ~ 10 on every background voxel


def test_ignored_voxels_do_not_contribute() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 8, 6, 6, generator=gen, requires_grad=True)
    target = torch.randint(0, 5, (2, 6, 6), generator=gen)
    target[:, :, :2] = IGNORE_INDEX
    loss = masked_dice_ce(logits, target, ALL_BUT_PANCREAS)
    loss.backward()
    assert logits.grad is not None
    assert logits.grad[:, :, :, :2].abs().max() == 0.0
    assert logits.grad[:, :, :, 2:].abs().max() > 0.0
    other = logits.detach().clone()
    other[:, :, :, :2] = torch.randn(2, 8, 6, 2, generator=gen) * 50
    assert masked_dice_ce(other, target, ALL_BUT_PANCREAS).item() == pytest.approx(loss.item(), rel=1e-6)
    everything_ignored = torch.full((2, 6, 6), IGNORE_INDEX)
    zero = masked_dice_ce(logits, everything_ignored)
    assert zero.item() == 0.0 and zero.requires_grad


def test_per_sample_annotation_equals_broadcast_one() -> None:
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 8, 4, 4, generator=gen)
    target = torch.randint(0, 5, (3, 4, 4), generator=gen)
    a = masked_dice_ce(logits, target, ALL_BUT_PANCREAS)
    b = masked_dice_ce(logits, target, ALL_BUT_PANCREAS.expand(3, 8))
    assert a.item() == pytest.approx(b.item())


@pytest.mark.parametrize(
    ("logits", "target", "kwargs", "match"),
    [
        (torch.zeros(2, 8), torch.zeros(2, dtype=torch.long), {}, r"logits must be shaped \(B, C, \*spatial\)"),
        (torch.zeros(1, 8, 2, 2), torch.zeros(1, 3, 2, dtype=torch.long), {}, r"target must be shaped \(1, 2, 2\)"),
        (torch.zeros(1, 8, 2, 2), torch.zeros(1, 2, 2), {}, "target must hold integer labels"),
        (torch.zeros(1, 8, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long), {"lambda_dice": -1.0},
         "lambda_dice must be >= 0, got -1.0"),
        (torch.zeros(1, 8, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long), {"lambda_ce": -0.5},
         "lambda_ce must be >= 0, got -0.5"),
        (torch.zeros(1, 8, 2, 2), torch.full((1, 2, 2), PANCREAS), {"annotated": ALL_BUT_PANCREAS},
         "target of sample 0 contains class 5, which annotated marks as not labelled"),
        (torch.zeros(1, 8, 2, 2), torch.full((1, 2, 2), 8), {},
         r"target values must be in \[0, 8\) or 255, got \[8, 8\]"),
        (torch.zeros(1, 8, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long), {"annotated": torch.arange(8) > 0},
         r"annotated\[..., 0\] \(background\) must be True"),
    ],
)
def test_masked_dice_ce_rejects_bad_inputs(logits, target, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        masked_dice_ce(logits, target, **kwargs)
