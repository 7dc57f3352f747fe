"""What a task is: a model, federated data, one round of local training, and evaluation.

The federation engine, the reference modes and the CLI only talk to tasks through
:class:`Task`, so adding a task never touches them. Tasks register themselves by name in
:data:`TASKS` (see :func:`fedsilo.tasks.make_task`).
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from fedsilo.config import ExperimentConfig
from fedsilo.data.federated import FederatedData, SiteData
from fedsilo.models.ema import WeightEMA
from fedsilo.seeding import derive_seed

#: What :meth:`Task.local_state` returns: ``(is_local, group_by)`` or ``(is_local, group_by, owner)``.
LocalStateRule = (tuple[Callable[[str], bool], str]
                  | tuple[Callable[[str], bool], str, Callable[[str], str | None]])


@dataclass
class TrainContext:
    """Everything a round of local training needs besides the model and the data.

    Attributes
    ----------
    round
        Server round (1-based).
    site_index
        Position of the site in the federation (seeds its randomness).
    site_name
        Name of the site (for progress and logs).
    device
        Where to train.
    proximal_mu
        FedProx weight (0 = plain local training).
    config
        Further per-round settings sent by the strategy (e.g. DP clipping), read-only.
    site_state
        Site-level state the server keeps between rounds (e.g. a privacy accountant); the
        training loop may update it in place.
    generator
        Set by the training loop: the round's seeded generator, which draws the batch order
        and then each batch's random choices (flips, a GAN's latent codes), in that order.
    carry
        State the site keeps for itself from one of its rounds to its next and never sends (see
        :mod:`fedsilo.federation.site_memory`); with ``train.keep_optimizer_state`` the training
        loop restores its optimisers from it and stores them back. None = nothing is kept.
    private_batch_size
        Set by the training loop under sample-level DP: ``train.batch_size``, the nominal expected
        batch size, which a task uses for anything it adds per step that must depend neither on the
        real batch nor on the site's data size (a GAN's number of fakes); None without sample-level DP.
    """

    round: int
    site_index: int
    site_name: str
    device: torch.device
    proximal_mu: float = 0.0
    config: Mapping[str, Any] = field(default_factory=dict)
    site_state: dict[str, Any] = field(default_factory=dict)
    generator: torch.Generator | None = None
    private_batch_size: int | None = None
    carry: dict[str, Any] | None = None


#: What a phase's loss returns: the loss to minimise and the values to log for this batch
#: (each averaged over the round, weighted by the batch size).
StepLoss = tuple[torch.Tensor, dict[str, float | torch.Tensor]]


@dataclass
class Phase:
    """One optimiser update per batch of local training (see :mod:`fedsilo.training`).

    Attributes
    ----------
    module
        The parameters this phase's optimiser updates (the model, or a GAN's discriminator or
        generator).
    loss
        ``loss(module, batch) -> (loss, logged)``: ``module`` is :attr:`module` as the loop runs
        it (under DP-SGD, Opacus' per-sample-gradient wrapper), ``batch`` what
        :attr:`LocalSteps.prepare` made of the batch indices.
    lr
        Base learning rate (scheduled over rounds by the loop); None = ``train.lr``.
    optimizer
        ``optimizer(params, lr)``; None = the configured ``train.optimizer``.
    reads_data
        Whether the loss reads the site's data. DP-SGD privatises exactly such a phase (at most
        one per task); the others run with per-sample gradients switched off and must be
        functions of the private phase's outputs only (post-processing).
    repeats
        Updates per batch (e.g. a GAN's discriminator steps per generator step).
    has_own_rows
        The loss adds rows of its own that do not come from the data (a GAN's fakes): under
        DP-SGD it runs even on an empty Poisson batch. Otherwise an empty batch is a noise-only
        step taken by the loop.
    """

    module: nn.Module
    loss: Callable[[nn.Module, Any], StepLoss]
    lr: float | None = None
    optimizer: Callable[[Iterable[nn.Parameter], float], torch.optim.Optimizer] | None = None
    reads_data: bool = True
    repeats: int = 1
    has_own_rows: bool = False


@dataclass
class LocalSteps:
    """What a task does with each batch of a round of local training.

    Attributes
    ----------
    prepare
        Batch indices ``(B,)`` into the site's data -> what the phases read (tensors on the
        training device). Called once per batch, before the phases; under DP-SGD B may be 0.
    phases
        The updates each batch makes, in order.
    """

    prepare: Callable[[torch.Tensor], Any]
    phases: list[Phase]


@dataclass
class InferenceSpec:
    """What a trained model is used through outside fedsilo (export, model cards).

    Attributes
    ----------
    module
        The part of the model to run (e.g. a GAN's generator), in eval mode.
    example
        An example input of batch size 1 (its shape fixes every axis but the first).
    input_name, output_name
        Tensor names in exported graphs.
    contract
        JSON-serialisable description: input shape, dtype, value range and preprocessing;
        output shape and meaning (class or label names).
    """

    module: nn.Module
    example: torch.Tensor
    input_name: str
    output_name: str
    contract: dict[str, Any]


@dataclass
class TrainResult:
    """What a round of local training returns: metrics and the FedAvg weight (training samples)."""

    metrics: dict[str, float]
    num_examples: int


class Task(ABC):
    """A learning problem fedsilo can federate."""

    #: Registry name (``experiment.task``).
    name: ClassVar[str]
    #: Metric that summarises quality (progress lines, model selection on validation data, "% of
    #: centralised"), and whether higher is better.
    primary_metric: ClassVar[str]
    higher_is_better: ClassVar[bool] = True

    def __init__(self, cfg: ExperimentConfig) -> None:
        self.cfg = cfg

    # -- model ---------------------------------------------------------------------------------

    @abstractmethod
    def _make_model(self) -> nn.Module:
        """A freshly initialised model (randomness from the global torch RNG, seeded by the caller)."""

    def build_model(self) -> nn.Module:
        """The model with its seeded initial weights (identical on every engine and process).

        With sample-level DP (``privacy.mode = "sample"``) the model is built DP-compatible
        (:meth:`dp_compatible`) here, in its definition, so the server and every site agree on
        its layers and state-dict keys.
        """
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(derive_seed(self.cfg.experiment.seed, "init"))
            model = self._make_model()
        if self.cfg.privacy.mode == "sample":
            model = self.dp_compatible(model)
        return model

    #: The submodule (dotted path, '' = the whole model) that DP-SGD trains: the one phase that
    #: reads data updates it (a GAN's discriminator). Audit canaries live in its weights.
    private_module: ClassVar[str] = ""

    def dp_compatible(self, model: nn.Module) -> nn.Module:
        """The parts of ``model`` that DP-SGD trains, made DP-compatible (BatchNorm -> GroupNorm).

        Default: the whole model. A task whose model holds parts that never see real data
        overrides this (a GAN converts only its discriminator; the generator is private by
        post-processing).
        """
        from fedsilo.privacy.dp import make_dp_compatible

        return make_dp_compatible(model, f"{self.name} model")

    #: Config key naming a finished run whose weights start this one (see :attr:`pretrained_run`).
    pretrained_key: ClassVar[str] = ""

    @property
    def pretrained_run(self) -> str:
        """A finished run folder whose final weights initialise this run ('' = none).

        The run layer loads it (:func:`fedsilo.run.load.initial_weights`) and passes its weights
        to :meth:`initial_state`.
        """
        return ""

    def initial_state(self, pretrained: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Initial global weights: the model's initialisation, or ``pretrained`` (a finished run's
        final global weights) adapted to this model (tasks that support it override this)."""
        if pretrained is not None:
            raise ValueError(f"task {self.name!r} does not start from pre-trained weights")
        return self.build_model().state_dict()

    def weight_average(self) -> WeightEMA:
        """A running average of the global weights over rounds that the coordinator (or the centralised
        trainer) evaluates and releases instead of the raw weights, while training continues from the
        raw ones. Default: none (an inactive :class:`~fedsilo.models.ema.WeightEMA`); the synthesis
        task averages its generator (``gan.ema_decay``)."""
        return WeightEMA(0.0)

    # -- data ----------------------------------------------------------------------------------

    @abstractmethod
    def federated_data(self) -> FederatedData[Any]:
        """Every site's training/validation split and the global test split."""

    def site_data(self, index: int) -> SiteData[Any]:
        """One site's data (by position)."""
        sites = self.federated_data().sites
        if not 0 <= index < len(sites):
            raise ValueError(f"site index must be in [0, {len(sites)}), got {index}")
        return sites[index]

    def test_data(self) -> Any | None:
        """The global held-out test split (None when the config has none)."""
        return self.federated_data().test

    def site_from_path(self, path: str, name: str) -> SiteData[Any]:
        """Deployment: site ``name``'s own data from the node's ``data-path`` (its SuperNode's
        folder or file), split into training and validation as the local engine would.

        Raises
        ------
        NotImplementedError
            For a task that cannot deploy (it does not read a site's data from a path).
        """
        raise NotImplementedError(f"task {self.name!r} cannot load a site's data from a node's data-path")

    def pooled_train(self) -> Any:
        """All sites' training data together (centralised mode)."""
        raise NotImplementedError(f"task {self.name!r} has no centralised mode")

    # -- learning ------------------------------------------------------------------------------

    @abstractmethod
    def local_steps(self, model: nn.Module, data: Any, ctx: TrainContext) -> LocalSteps:
        """How ``model`` learns from a batch of ``data`` in this round (the training loop of
        :mod:`fedsilo.training` draws the batches, builds the optimisers, applies FedProx and
        DP-SGD, and calls these steps)."""

    @abstractmethod
    def evaluate(self, model: nn.Module, data: Any, device: torch.device) -> dict[str, float]:
        """Metrics of ``model`` on ``data`` (unprefixed names, e.g. ``accuracy``); the server's
        evaluation on the global test split."""

    def evaluate_site(self, model: nn.Module, data: Any, device: torch.device) -> dict[str, float]:
        """Metrics on a site's validation split (default: :meth:`evaluate`; tasks whose full
        evaluation is expensive, e.g. GAN metrics, return cheaper ones here). ``n`` = samples."""
        return self.evaluate(model, data, device)

    # Federated test metrics: statistics each site computes on its own data, which the coordinator
    # combines (a GAN's FD and precision/recall against the sites' images). Default: none.

    def site_statistics_request(self, model: nn.Module, device: torch.device) -> dict[str, np.ndarray] | None:
        """Arrays the coordinator sends every site with the evaluation message (None: the task's test
        metrics need no site statistics, and nothing is sent)."""
        return None

    def site_statistics(self, site: SiteData[Any], request: Mapping[str, np.ndarray],
                        device: torch.device) -> dict[str, np.ndarray]:
        """A site's statistics for ``request`` (computed at the site; arrays only)."""
        raise NotImplementedError(f"task {self.name!r} computes no site statistics")

    def combine_site_statistics(self, request: Mapping[str, np.ndarray], stats: list[Mapping[str, np.ndarray]],
                                names: list[str]) -> dict[str, float]:
        """Test metrics (unprefixed) from the statistics of the sites ``names``."""
        raise NotImplementedError(f"task {self.name!r} computes no site statistics")

    def local_state(self) -> LocalStateRule | None:
        """Arrays that must not be averaged across all sites, and how sites are grouped.

        Returns ``(is_local(key), group_by)`` with ``group_by`` a key of the sites' info
        (e.g. ``"modality"`` for domain-specific batch norm: those arrays are averaged only among
        sites of one modality), optionally followed by ``owner(key) -> group | None``: the group
        whose copy of a local array goes into the global model (DSBN: the ``mr`` batch norms come
        from the MR sites), so that one global model serves every group. Returns None (the
        default) when everything is shared unless the strategy says otherwise.
        """
        return None

    def site_kept_keys(self) -> frozenset[str]:
        """State-dict keys whose arrays each site keeps for itself and never sends (its reply carries
        the values it received); default none. E.g. a GAN's own discriminator."""
        return frozenset()

    def server_optimisers(self) -> dict[str, tuple[str, float]]:
        """Server optimisers per part of the model: state-dict key prefix -> (``fedadam`` or
        ``fedavgm``, server learning rate), applied to the aggregate of that part's parameters
        (federated mode); default none."""
        return {}

    def round_artifacts(self, model: nn.Module, rnd: int, out_dir: Any, device: torch.device) -> None:
        """Optional per-evaluation files (sample grids, overlays) written into the run folder."""

    def inference_spec(self, model: nn.Module) -> InferenceSpec:
        """How the trained ``model`` is applied outside fedsilo (``fedsilo export``)."""
        raise NotImplementedError(f"task {self.name!r} does not define an inference contract, so it cannot be exported")

    def generate(self, model: nn.Module, n: int, grade: int | None, seed: int,
                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor, str]:
        """Synthetic images of a generative model (``fedsilo sample``).

        Returns images (n, C, H, W) in [-1, 1] and grades (n,) int64 on the CPU, and one sentence
        saying where the grades come from (the conditioning, or a classifier's prediction).
        """
        raise NotImplementedError(f"task {self.name!r} has no generator (`fedsilo sample` needs a synthesis run)")

    def predict_probabilities(self, model: nn.Module, data: Any, device: torch.device) -> torch.Tensor:
        """Class probabilities of ``model`` on a dataset (``fedsilo predict``): for segmentation
        (N, K, H, W) per slice of a :class:`~fedsilo.data.abdomen.SliceDataset`, on the CPU."""
        raise NotImplementedError(f"task {self.name!r} does not predict label maps (`fedsilo predict` "
                                  f"needs a segmentation run)")


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and no grad for a block; restores the previous training flag."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)
