"""The segmentation task: one multi-class 2D U-Net for every organ and both modalities (FedGIN).

Dudda Nagaraju et al., "FedGIN: Federated learning with dynamic global intensity non-linear
augmentation for organ segmentation using multi-modal images" (arXiv 2508.05137) and
"Federated Learning for Cross-Modality Medical Image Segmentation via Augmentation-Driven
Generalization" (arXiv 2602.20773): CT-only and MRI-only sites train one segmentation model;
each site augments its slices with GIN (Ouyang et al., IEEE TMI 2022) so that the model sees
intensity distributions beyond its own modality. The reference code trains one binary model per
organ; here one model predicts all organs, and a site's unannotated organs are marginalised into
background in its loss (:func:`~fedsilo.tasks.segmentation.losses.masked_dice_ce`), never trained
as background.

Methods (``segmentation.method``, see :mod:`~fedsilo.tasks.segmentation.methods`): none, gin,
gin+ipa, randconv, prorandconv, fmaug, raffesdg and dsbn; DSBN's batch norms are averaged only
among sites of one modality (:meth:`SegmentationTask.local_state`) and every prediction uses the
batch norms of its slice's modality.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fedsilo.augment import consistency_loss
from fedsilo.data.abdomen import SliceDataset, federated_volumes, volume_site_from_path, volume_tests
from fedsilo.data.federated import FederatedData, SiteData
from fedsilo.data.labels import NUM_CLASSES, ORGANS
from fedsilo.models.dsbn import norm_key_domains
from fedsilo.models.unet import DEFAULT_DOMAINS, build_unet
from fedsilo.tasks.base import InferenceSpec, LocalStateRule, LocalSteps, Phase, StepLoss, Task, TrainContext
from fedsilo.tasks.segmentation.evaluation import (
    forward_by_domain,
    merge_test_sets,
    modality_metrics,
    predict,
    probabilities,
    slice_dice,
)
from fedsilo.tasks.segmentation.losses import masked_dice_ce
from fedsilo.tasks.segmentation.methods import Method, make_augmentation, resolve_method
from fedsilo.tasks.segmentation.metrics import nanmean_per_class
from fedsilo.tasks.segmentation.overlays import pick_slices, save_overlay

__all__ = ["SegmentationTask"]

logger = logging.getLogger(__name__)

class SegmentationTask(Task):
    """Federated multi-organ segmentation of abdominal CT and MRI slices."""

    name = "segmentation"
    primary_metric = "dice3d_mean"

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.method: Method = resolve_method(cfg.segmentation.method, cfg.unet.norm)
        self._test: SliceDataset | bool | None = None

    # -- model ---------------------------------------------------------------------------------

    def _make_model(self) -> nn.Module:
        u = self.cfg.unet
        return build_unet(
            in_channels=2 * self.cfg.data.volume.context + 1, num_classes=NUM_CLASSES, norm=self.method.norm,
            base_width=u.base_width, depth=u.depth, num_res_units=u.num_res_units, dropout=u.dropout,
            domains=DEFAULT_DOMAINS if self.method.dsbn else None,
        )

    def local_state(self) -> LocalStateRule | None:
        """DSBN: each domain's batch-norm arrays are averaged among the sites of that modality, and
        the global model takes the ``<d>`` batch norms from the modality-``<d>`` sites."""
        if not self.method.dsbn:
            return None
        domains = {k: d for k, d in norm_key_domains(self.build_model()).items() if d is not None}
        return domains.__contains__, "modality", domains.get

    # -- data ----------------------------------------------------------------------------------

    def federated_data(self) -> FederatedData[SliceDataset]:
        return federated_volumes(self.cfg)

    def site_from_path(self, path: str, name: str) -> SiteData[SliceDataset]:
        """Deployment: site ``name``'s scans from its own folder (see :func:`~fedsilo.data.abdomen.volume_site_from_path`)."""
        return volume_site_from_path(self.cfg, path, name)

    def pooled_train(self) -> SliceDataset:
        return SliceDataset.concat([s.train for s in self.federated_data().sites])

    # -- learning ------------------------------------------------------------------------------

    @property
    def _private(self) -> bool:
        """Sample-level DP-SGD: each slice's gradient must depend on that slice alone."""
        return self.cfg.privacy.mode == "sample" and self.cfg.privacy.active

    def _loss(self, logits: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        s = self.cfg.segmentation
        if not self._private:
            return masked_dice_ce(logits, y, mask, lambda_dice=s.lambda_dice, lambda_ce=s.lambda_ce)
        # DP-SGD clips each slice's gradient, so a slice's gradient must not depend on the others:
        # the loss is the mean over slices of each slice's own Dice + CE (batch Dice, and CE or Dice
        # averaged over the batch's voxels or class pairs, would couple the slices)
        per_slice = [masked_dice_ce(logits[i:i + 1], y[i:i + 1], mask[i:i + 1] if mask.ndim == 2 else mask,
                                    lambda_dice=s.lambda_dice, lambda_ce=s.lambda_ce, batch_dice=False)
                     for i in range(len(logits))]
        return torch.stack(per_slice).mean()

    def _step_loss(self, model: nn.Module, augment: Any, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor,
                   mods: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(total loss, segmentation loss, consistency loss or None) of one augmented batch; GIN+IPA's
        two views go through the model together and add the consistency term."""
        dsbn = self.method.dsbn
        if augment.n_views == 2:
            v1, v2 = augment(x)
            l1, l2 = forward_by_domain(model, torch.cat([v1, v2]), np.concatenate([mods, mods]), dsbn).chunk(2)
            seg = 0.5 * (self._loss(l1, y, mask) + self._loss(l2, y, mask))
            cons = consistency_loss([l1, l2], self.cfg.augment.consistency_kind)
            return seg + self.cfg.augment.consistency_weight * cons, seg, cons
        if self._private:
            # one draw per slice, slice after slice: a slice's view never depends on how many slices
            # share its batch (one added slice leaves the others' views, and gradients, unchanged)
            views = torch.cat([augment(x[i:i + 1]) for i in range(len(x))]) if len(x) else x
        else:
            views = augment(x)
        seg = self._loss(forward_by_domain(model, views, mods, dsbn), y, mask)
        return seg, seg, None

    def local_steps(self, model: nn.Module, data: SliceDataset, ctx: TrainContext) -> LocalSteps:
        """The masked Dice + cross-entropy of each augmented batch (and GIN+IPA's consistency term).

        Raises
        ------
        ValueError
            When the site's training data carry no label maps.
        """
        if data.labels is None:
            raise ValueError(f"site {ctx.site_name!r}: training data must be labelled")
        augment = make_augmentation(self.cfg, ctx.round, ctx.site_index)

        def prepare(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, np.ndarray]:
            x, y, mask = data.batch(idx, ctx.device)
            return x, y, mask, data.modalities[idx.numpy()]

        def loss(module: nn.Module, batch: Any) -> StepLoss:
            total, seg, cons = self._step_loss(module, augment, *batch)
            return total, {"train_loss": seg, **({"train_consistency": cons} if cons is not None else {})}

        return LocalSteps(prepare, [Phase(model, loss)])

    # -- evaluation ----------------------------------------------------------------------------

    def test_data(self) -> SliceDataset | None:
        """Every ``[[data.test]]`` set in one dataset (patient ids prefixed with the set's name).

        Reads only the test sets, never a site's scans (a deployment's coordinator has none)."""
        if self._test is None:
            self._test = merge_test_sets(volume_tests(self.cfg)) or False
        return self._test or None

    def evaluate(self, model: nn.Module, data: Any, device: torch.device) -> dict[str, float]:
        """Per-organ, per-modality 2D/3D Dice and HD95 (mm) on held-out test patients
        (see :mod:`~fedsilo.tasks.segmentation.evaluation` for the names)."""
        data = merge_test_sets(data)
        if data is None or not len(data):
            return {"n": 0}
        pred = predict(model, data, device, self.cfg.eval.batch_size, self.method.dsbn)
        return {**modality_metrics(pred, data, hd95=self.cfg.segmentation.hd95), "n": float(len(data))}

    def evaluate_site(self, model: nn.Module, data: SliceDataset, device: torch.device) -> dict[str, float]:
        """Cheap site validation: mean 2D slice Dice over the organs the site annotates, and the loss."""
        if not len(data) or data.labels is None:
            return {"n": 0}
        pred = predict(model, data, device, self.cfg.eval.batch_size, self.method.dsbn)
        per_class = nanmean_per_class(slice_dice(pred, data.labels.long(), data.class_mask))[1:]
        defined = per_class[np.isfinite(per_class)]
        return {"dice2d_mean": float(defined.mean()) if defined.size else 0.0, "n": len(data)}

    def round_artifacts(self, model: nn.Module, rnd: int, out_dir: Any, device: torch.device) -> None:
        """``overlays/<modality>-round-<r>.png``: image, truth, prediction for a few test patients."""
        if not self.cfg.segmentation.overlays:
            return
        data = self.test_data()
        if data is None or data.labels is None or not len(data):
            return
        for mod in sorted(set(data.modalities.tolist())):
            idx = pick_slices(data, mod)
            if not len(idx):
                continue
            pred = predict(model, data, device, self.cfg.eval.batch_size, self.method.dsbn, idx).numpy()
            centre = data.images.shape[1] // 2
            titles = [f"{data.patient_ids[i]} z={data.slice_index[i]}" for i in idx]
            save_overlay(Path(out_dir) / "overlays" / f"{mod}-round-{rnd:03d}.png",
                         data.images[torch.as_tensor(idx), centre].numpy(), data.labels[torch.as_tensor(idx)].numpy(),
                         pred, titles)

    # -- use ------------------------------------------------------------------------------------

    def predict_probabilities(self, model: nn.Module, data: SliceDataset, device: torch.device) -> torch.Tensor:
        return probabilities(model, data, device, self.cfg.eval.batch_size, self.method.dsbn)

    def inference_spec(self, model: nn.Module) -> InferenceSpec:
        """The U-Net on preprocessed slices; a DSBN model is exported once per modality is not
        supported (the exported graph would fix one modality's batch norms)."""
        if self.method.dsbn:
            raise NotImplementedError("a DSBN model routes each slice through its modality's batch norms; export "
                                      "supports single-path models (methods other than dsbn)")
        v = self.cfg.data.volume
        channels = 2 * v.context + 1
        contract = {
            "input": {"name": "slices", "shape": ["batch", channels, v.size, v.size], "dtype": "float32",
                      "range": [0.0, 1.0],
                      "preprocessing": ["axial slices in radiological display (patient right on the image left, "
                                        "anterior up)", f"CT: window level {v.ct_level:g} / width {v.ct_width:g} HU "
                                        f"-> [0, 1]", f"MR: clip to percentiles {v.mr_lower_percentile:g}-"
                                        f"{v.mr_upper_percentile:g} per volume, then {v.mr_method}",
                                        f"pad to square, resize in-plane to {v.size}x{v.size}"
                                        + (", cropped to the body first" if v.crop_foreground else ""),
                                        f"{channels} channel(s): the slice"
                                        + (f" and {v.context} neighbour(s) on each side" if v.context else "")]},
            "output": {"name": "logits", "shape": ["batch", NUM_CLASSES, v.size, v.size], "dtype": "float32",
                       "meaning": "unnormalised class scores per pixel; argmax over dim 1 = organ id",
                       "classes": list(ORGANS)},
        }
        return InferenceSpec(model.eval(), torch.zeros(1, channels, v.size, v.size), "slices", "logits", contract)
