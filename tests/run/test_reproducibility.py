"""The quick configs' final weights, hashed: a refactor that changes any number fails here.

The hashes were recorded before the architecture refactor (issue 19) and must not move unless a
change means to alter training (then say so in the commit and record the new hashes). Float
kernels round differently on another CPU family (``env.json`` records the CPU), so the hashes are
kept per CPU model (and the runs use one torch thread); on a machine whose model has no record the test skips and prints the hashes
to add.
"""

from __future__ import annotations

import hashlib

import pytest
import torch

from fedsilo.config import load_config
from helpers import REPO_ROOT

#: CPU model name (``/proc/cpuinfo``) -> config -> sha256 prefix of the final global weights.
RECORDED: dict[str, dict[str, str]] = {
    "AMD EPYC": {
        "quick-classify": "07f9411dd9a8ad3b",
        "quick-fedgin": "d05ee7fc4773085e",
        "quick-fedgan": "cac1803e092ed3f2",
    },
    "Intel(R) Xeon(R) Processor": {  # recorded on a fresh clone, 2026-12-03
        "quick-classify": "a482cfd3556ea25a",
        "quick-fedgin": "e7ff5a17271e62e1",
        "quick-fedgan": "53034753c1c6a81d",
    },
}


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 (first 16 hex digits) over every array's name, dtype and bytes, in key order."""
    h = hashlib.sha256()
    for key in sorted(state):
        value = state[key]
        h.update(key.encode())
        h.update(str(value.dtype).encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@pytest.mark.parametrize("name", ["quick-classify", "quick-fedgin", "quick-fedgan"])
def test_quick_config_final_weights_are_unchanged(name, tmp_path):
    from fedsilo.run.folder import cpu_model
    from fedsilo.run.start import start_run

    # one torch thread: a float sum split over threads rounds differently with the thread count
    cfg = load_config(REPO_ROOT / "configs" / f"{name}.toml", ["experiment.threads=1"])
    run = start_run(cfg, tmp_path / name)
    got = weights_digest(torch.load(run.final_path, weights_only=False)["model"])
    cpu = cpu_model()
    if cpu not in RECORDED:
        pytest.skip(f"no hashes recorded for CPU {cpu!r}; {name} gave {got}")
    assert got == RECORDED[cpu][name]
