"""DCGAN generator and discriminator for small medical images.

The architecture follows Radford et al., "Unsupervised representation learning with deep
convolutional generative adversarial networks", ICLR 2016: strided (transposed) 4x4 convolutions,
no pooling, ReLU in the generator and LeakyReLU(0.2) in the discriminator, tanh output and
N(0, 0.02) initialisation. It is the model of the FedGAN study (Kamran et al., "FedGAN: Federated
diabetic retinopathy image generation", PLOS ONE 2025).

Layouts (``w`` = ``base_width``; the stem of the generator maps z to a 4x4 map, or 7x7 at 28 px):

============  ====================================  ====================================
image size    generator (stem -> blocks -> head)    discriminator (stem -> blocks -> head)
============  ====================================  ====================================
28            7 (2w) -> 14 (w) -> 28                28 -> 14 (w) -> 7 (2w) -> logit (7x7)
32            4 (4w) -> 8 (2w) -> 16 (w) -> 32      32 -> 16 (w) -> 8 (2w) -> 4 (4w) -> logit
64            4 (8w) -> 8 -> 16 -> 32 (w) -> 64     64 -> 32 (w) -> ... -> 4 (8w) -> logit
128           4 (16w) -> ... -> 64 (w) -> 128       128 -> 64 (w) -> ... -> 4 (16w) -> logit
============  ====================================  ====================================

Channel widths depend on the distance from the image, so a 32 px and a 64 px network share the
shapes of their image-side layers; :mod:`fedsilo.models.dcgan_transfer` relies on that.

Normalisation is selectable per network (``"batch"`` as in DCGAN, ``"group"``, ``"instance"`` or
``"none"``): Opacus' DP-SGD rejects BatchNorm, so a discriminator trained with DP-SGD uses
``"group"`` or ``"none"``. Layers followed by a normalisation have no bias; the others do.
The discriminator may be shallower than the table (``blocks``) and spectrally normalised
(``spectral_norm``; its weights are then stored as ``<layer>.parametrizations.weight.original``).

With ``num_classes > 0`` both networks are class-conditional (e.g. DR grade 0-4): the generator
concatenates a learnt label embedding to z (Mirza & Osindero 2014) and the discriminator adds a
projection term ``<embed(y), sum_hw h(x)>`` to its logit (Miyato & Koyama, "cGANs with projection
discriminator", ICLR 2018).
"""

from __future__ import annotations

import logging
from typing import Literal

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

Norm = Literal["batch", "group", "instance", "none"]
IMAGE_SIZES: tuple[int, ...] = (28, 32, 64, 128)
NORMS: tuple[str, ...] = ("batch", "group", "instance", "none")
INIT_STD = 0.02

__all__ = [
    "IMAGE_SIZES",
    "NORMS",
    "DCGANDiscriminator",
    "DCGANGenerator",
    "dcgan_init_",
    "sample_latent",
]


def _check_common(image_size: int, channels: int, base_width: int, norm: str, num_classes: int, groups: int) -> None:
    if image_size not in IMAGE_SIZES:
        raise ValueError(f"image_size must be one of {IMAGE_SIZES}, got {image_size}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if base_width < 1:
        raise ValueError(f"base_width must be >= 1, got {base_width}")
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if num_classes < 0:
        raise ValueError(f"num_classes must be >= 0 (0 = unconditional), got {num_classes}")
    if groups < 1:
        raise ValueError(f"groups must be >= 1, got {groups}")


def _num_blocks(image_size: int) -> int:
    """Stride-2 blocks between stem and head: 1 at 28 px, log2(size / 4) - 1 otherwise."""
    return 1 if image_size == 28 else (image_size // 4).bit_length() - 2


def _norm_layer(norm: str, num_channels: int, groups: int) -> nn.Module:
    """A normalisation layer; ``"none"`` gives ``nn.Identity`` so that state-dict keys stay stable."""
    if norm == "batch":
        return nn.BatchNorm2d(num_channels)
    if norm == "group":
        g = min(groups, num_channels)
        while num_channels % g:  # largest divisor of num_channels not above `groups`
            g -= 1
        return nn.GroupNorm(g, num_channels)
    if norm == "instance":
        return nn.InstanceNorm2d(num_channels, affine=True)
    return nn.Identity()


def _check_labels(labels: Tensor | None, num_classes: int, batch: int) -> None:
    if num_classes == 0:
        if labels is not None:
            raise ValueError("labels must be None for an unconditional model (num_classes=0)")
        return
    if labels is None:
        raise ValueError(f"labels are required for a conditional model (num_classes={num_classes})")
    if labels.shape != (batch,) or labels.dtype not in (torch.int64, torch.int32):
        raise ValueError(
            f"labels must be an integer tensor of shape ({batch},), got {labels.dtype} {tuple(labels.shape)}"
        )
    if batch and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"labels must be in [0, {num_classes - 1}], got range [{int(labels.min())}, {int(labels.max())}]"
        )


@torch.no_grad()
def dcgan_init_(module: nn.Module, generator: torch.Generator) -> nn.Module:
    """Initialise a network in place as in DCGAN (Radford et al. 2016).

    Convolution, linear and embedding weights ~ N(0, 0.02); normalisation scales ~ N(1, 0.02);
    all biases 0. Exception: the label embedding of a :class:`DCGANGenerator` ~ N(0, 1), the scale
    of the z it is concatenated to (at 0.02 the label would be all but invisible at the start; the
    projection embedding of the discriminator stays at 0.02 so it does not swamp the logit).
    Values are drawn on the CPU from ``generator`` in module order and then copied to each
    parameter's device, so the result is the same on every device for a given seed.

    Parameters
    ----------
    module
        Network to initialise (modified in place).
    generator
        CPU ``torch.Generator``; its state advances.

    Returns
    -------
    nn.Module
        ``module`` itself.
    """
    if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
        raise ValueError(f"generator must be a CPU torch.Generator, got {generator!r}")

    def normal_(p: Tensor, mean: float, std: float = INIT_STD) -> None:
        p.copy_(torch.randn(p.shape, generator=generator, dtype=torch.float32).mul_(std).add_(mean))

    label_embeddings = {id(m.embed) for m in module.modules() if isinstance(m, DCGANGenerator) and m.embed is not None}
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
            normal_(m.weight, 0.0, 1.0 if id(m) in label_embeddings else INIT_STD)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm2d)) and m.weight is not None:
            normal_(m.weight, 1.0)
        bias = getattr(m, "bias", None)
        if isinstance(bias, Tensor):
            bias.zero_()
    return module


def sample_latent(
    batch_size: int,
    latent_dim: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Draw z ~ N(0, I), shape ``(batch_size, latent_dim)``, on the CPU from ``generator``, then move it.

    ``generator=None`` uses torch's global generator; pass one for reproducible samples.
    """
    if batch_size < 0 or latent_dim < 1:
        raise ValueError(f"batch_size must be >= 0 and latent_dim >= 1, got {batch_size} and {latent_dim}")
    return torch.randn(batch_size, latent_dim, generator=generator).to(device)


def _spectral_norm_(module: nn.Module, seed: int) -> None:
    """Spectrally normalise every convolution and embedding of ``module`` in place; the power
    iteration's start vectors come from ``seed`` (the global RNG state is left untouched)."""
    from torch.nn.utils.parametrizations import spectral_norm

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in list(module.modules()):
            if isinstance(m, (nn.Conv2d, nn.Embedding)):
                spectral_norm(m)


class DCGANGenerator(nn.Module):
    """DCGAN generator: z ``(B, latent_dim)`` (and labels ``(B,)``) -> images ``(B, C, H, W)`` in [-1, 1].

    Parameters
    ----------
    image_size
        Output side: 28, 32, 64 or 128 (28 px uses a native 7 -> 14 -> 28 layout).
    channels
        Output channels, 1 (grey, e.g. CT/MR) or 3 (colour fundus).
    latent_dim
        Size of z.
    base_width
        Channels of the last hidden layer (``ngf`` in DCGAN); widths double towards the stem.
    norm
        ``"batch"`` (DCGAN), ``"group"``, ``"instance"`` or ``"none"``.
    num_classes
        0 for unconditional; otherwise the number of label values (5 for DR grades).
    embed_dim
        Size of the label embedding concatenated to z (ignored when unconditional).
    groups
        Maximum number of groups for ``norm="group"`` (the largest divisor of the width not above it).
    seed
        Seed of the DCGAN initialisation; the global RNG state is left untouched.
    """

    def __init__(
        self,
        image_size: int = 64,
        channels: int = 3,
        latent_dim: int = 100,
        base_width: int = 64,
        norm: Norm = "batch",
        num_classes: int = 0,
        embed_dim: int = 32,
        groups: int = 8,
        seed: int = 0,
    ) -> None:
        super().__init__()
        _check_common(image_size, channels, base_width, norm, num_classes, groups)
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
        if num_classes and embed_dim < 1:
            raise ValueError(f"embed_dim must be >= 1 for a conditional generator, got {embed_dim}")
        self.image_size, self.channels, self.latent_dim = image_size, channels, latent_dim
        self.num_classes, self.norm = num_classes, norm
        self.embed_dim = embed_dim if num_classes else 0
        n = _num_blocks(image_size)
        stem_kernel = 7 if image_size == 28 else 4
        bias = norm == "none"
        with torch.random.fork_rng(devices=[]):  # PyTorch's default init must not consume global RNG state
            self.embed = nn.Embedding(num_classes, embed_dim) if num_classes else None
            width = base_width * 2**n
            self.stem = nn.Sequential(
                nn.ConvTranspose2d(latent_dim + self.embed_dim, width, stem_kernel, 1, 0, bias=bias),
                _norm_layer(norm, width, groups),
                nn.ReLU(),
            )
            blocks = []
            for _ in range(n):
                blocks.append(
                    nn.Sequential(
                        nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=bias),
                        _norm_layer(norm, width // 2, groups),
                        nn.ReLU(),
                    )
                )
                width //= 2
            self.blocks = nn.Sequential(*blocks)
            self.head = nn.Sequential(nn.ConvTranspose2d(width, channels, 4, 2, 1, bias=True), nn.Tanh())
        dcgan_init_(self, torch.Generator().manual_seed(seed))

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """Map z ``(B, latent_dim)`` or ``(B, latent_dim, 1, 1)`` (+ labels ``(B,)``) to ``(B, C, H, W)``."""
        if z.dim() == 4 and z.shape[2:] == (1, 1):
            z = z.flatten(1)
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z must have shape (B, {self.latent_dim}), got {tuple(z.shape)}")
        _check_labels(labels, self.num_classes, z.shape[0])
        if self.embed is not None:
            z = torch.cat([z, self.embed(labels)], dim=1)
        return self.head(self.blocks(self.stem(z[:, :, None, None])))


class DCGANDiscriminator(nn.Module):
    """DCGAN discriminator: images ``(B, C, H, W)`` (and labels ``(B,)``) -> logits ``(B,)``.

    Parameters
    ----------
    image_size, channels, norm, num_classes, groups, seed
        As for :class:`DCGANGenerator`; the first layer is never normalised (DCGAN).
    base_width
        Channels of the first layer (``ndf``); widths double with each stride-2 block.
    blocks
        Stride-2 blocks between stem and head (None = DCGAN's for the size, see the module table);
        with fewer the head's kernel covers the larger last map, so the network has far fewer
        weights (a DP-friendly discriminator).
    spectral_norm
        Spectral normalisation of every convolution and of the projection embedding (Miyato et
        al., "Spectral normalization for GANs", ICLR 2018; torch's parametrisation, one power
        iteration per training forward). Its vectors are drawn from ``seed`` too.
    """

    def __init__(
        self,
        image_size: int = 64,
        channels: int = 3,
        base_width: int = 64,
        norm: Norm = "batch",
        num_classes: int = 0,
        groups: int = 8,
        seed: int = 0,
        blocks: int | None = None,
        spectral_norm: bool = False,
    ) -> None:
        super().__init__()
        _check_common(image_size, channels, base_width, norm, num_classes, groups)
        self.image_size, self.channels, self.num_classes, self.norm = image_size, channels, num_classes, norm
        n = _num_blocks(image_size) if blocks is None else blocks
        if not 0 <= n <= _num_blocks(image_size):
            raise ValueError(f"blocks must be in [0, {_num_blocks(image_size)}] at {image_size} px, got {blocks}")
        bias = norm == "none"
        with torch.random.fork_rng(devices=[]):
            width = base_width
            self.stem = nn.Sequential(nn.Conv2d(channels, width, 4, 2, 1, bias=True), nn.LeakyReLU(0.2))
            blocks = []
            for _ in range(n):
                blocks.append(
                    nn.Sequential(
                        nn.Conv2d(width, width * 2, 4, 2, 1, bias=bias),
                        _norm_layer(norm, width * 2, groups),
                        nn.LeakyReLU(0.2),
                    )
                )
                width *= 2
            self.blocks = nn.Sequential(*blocks)
            self.head = nn.Conv2d(width, 1, (image_size // 2) >> n, 1, 0, bias=True)
            self.embed = nn.Embedding(num_classes, width) if num_classes else None
        self.feature_dim, self.spectral_norm = width, spectral_norm
        dcgan_init_(self, torch.Generator().manual_seed(seed))
        if spectral_norm:
            _spectral_norm_(self, seed)

    def features(self, x: Tensor) -> Tensor:
        """Last hidden feature map ``(B, F, 4, 4)`` (``(B, F, 7, 7)`` at 28 px; larger with fewer blocks)."""
        expected = (self.channels, self.image_size, self.image_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"x must have shape (B, {', '.join(map(str, expected))}), got {tuple(x.shape)}")
        return self.blocks(self.stem(x))

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """Logits ``(B,)`` (real > 0); add the projection term when conditional."""
        _check_labels(labels, self.num_classes, x.shape[0])
        h = self.features(x)
        logits = self.head(h).flatten()
        if self.embed is not None:
            logits = logits + (self.embed(labels) * h.sum(dim=(2, 3))).sum(dim=1)
        return logits
