"""Explicit randomness and devices: seeds derived from (base seed, purpose, round, site).

Every random choice in fedsilo draws from a generator seeded by :func:`derive_seed`, so the
numbers of round ``r`` at site ``s`` depend only on the experiment seed, ``r`` and ``s`` —
not on how many rounds ran before in this process. That is what makes resumed runs and the
two engines (in-process and Ray) give bit-identical weights.
"""

from __future__ import annotations

import os
import secrets
import zlib
from collections.abc import Sequence

import numpy as np
import torch


def derive_seed(base: int, *keys: int | str) -> int:
    """A 63-bit seed from a base seed and any number of int or string keys.

    Parameters
    ----------
    base
        The experiment seed.
    *keys
        Purpose and position, e.g. ``("train", round, site_index)``.

    Examples
    --------
    >>> derive_seed(0, "train", 1, 2) == derive_seed(0, "train", 1, 2)
    True
    """
    if base < 0:
        raise ValueError(f"base seed must be >= 0, got {base}")
    words = [int(base)]
    for key in keys:
        if isinstance(key, str):
            words.append(zlib.crc32(key.encode("utf-8")))
        elif isinstance(key, (int, np.integer)) and key >= 0:
            words.append(int(key))
        else:
            raise ValueError(f"seed keys must be non-negative ints or strings, got {key!r}")
    state = np.random.SeedSequence(words).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


def np_rng(base: int, *keys: int | str) -> np.random.Generator:
    """A numpy Generator seeded with :func:`derive_seed`."""
    return np.random.default_rng(derive_seed(base, *keys))


def torch_generator(base: int, *keys: int | str, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch Generator on ``device`` seeded with :func:`derive_seed`."""
    gen = torch.Generator(device=device)
    gen.manual_seed(derive_seed(base, *keys))
    return gen


def secure_seed() -> int:
    """A 63-bit seed from the operating system's cryptographic source (``os.urandom``).

    It is drawn where it is used and never stored or sent, so no other party (nor anyone who
    knows the experiment seed) can regenerate what it seeds.
    """
    return secrets.randbits(63)


def private_generator(base: int, *keys: int | str, reproducible: bool,
                      device: str | torch.device = "cpu") -> torch.Generator:
    """The generator of a differential-privacy mechanism's randomness (noise, Poisson sampling).

    Parameters
    ----------
    base, *keys
        As for :func:`torch_generator`; used only when ``reproducible``.
    reproducible
        ``privacy.reproducible_noise``: seed from the experiment seed, so the run repeats exactly
        (simulation only: every party that knows the seed can regenerate the noise and subtract
        it). Otherwise seeded by :func:`secure_seed`, drawn afresh at every call.
    device
        Where the generator lives.

    Notes
    -----
    The secure variant seeds torch's Philox/Mersenne generator from ``os.urandom``; the seed is
    unpredictable, the stream after it is not a cryptographic PRNG (Opacus' ``secure_mode`` with
    ``torchcsprng`` is; it is not packaged for this torch).
    """
    if reproducible:
        return torch_generator(base, *keys, device=device)
    gen = torch.Generator(device=device)
    gen.manual_seed(secure_seed())
    return gen


def resolve_device(name: str, assigned_gpus: Sequence[int | str] | None = None) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; other names are passed to ``torch.device``.

    Parameters
    ----------
    name
        ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (``experiment.device``).
    assigned_gpus
        Inside a Ray actor, the GPU ids Ray assigned to it (``ray.get_gpu_ids()``; empty when the
        site asked for none); None outside Ray. Then ``auto`` means the first assigned GPU, or the
        CPU when none was assigned (even on a machine with GPUs: they belong to other sites).
    """
    if name == "auto":
        if assigned_gpus is not None:
            if not assigned_gpus:
                return torch.device("cpu")
            return torch.device("cuda", visible_index(assigned_gpus[0], os.environ.get("CUDA_VISIBLE_DEVICES")))
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was requested but CUDA is not available")
    return device


def visible_index(gpu_id: int | str, cuda_visible_devices: str | None) -> int:
    """Torch's index of the physical GPU ``gpu_id`` given ``CUDA_VISIBLE_DEVICES``.

    Ray normally narrows ``CUDA_VISIBLE_DEVICES`` to the actor's GPUs, so the first assigned GPU
    is ``cuda:0``; when the variable is unset every GPU is visible under its own id.

    >>> visible_index(3, "3"), visible_index(3, "1,3"), visible_index(3, None)
    (0, 1, 3)
    """
    if cuda_visible_devices is None:
        return int(gpu_id)
    visible = [v.strip() for v in cuda_visible_devices.split(",") if v.strip()]
    if str(gpu_id) not in visible:
        raise ValueError(f"GPU {gpu_id!r} assigned by Ray is not in CUDA_VISIBLE_DEVICES={cuda_visible_devices!r}")
    return visible.index(str(gpu_id))


def seed_torch(seed: int, device: torch.device | str = "cpu") -> None:
    """Seed torch's default generator of ``device`` (e.g. for dropout).

    Unlike ``torch.manual_seed`` this does not queue a seed call for every lazily initialised
    accelerator backend (each of which formats a stack trace), which matters when it runs for
    every site and round.
    """
    device = torch.device(device)
    torch.random.default_generator.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.manual_seed(seed)
