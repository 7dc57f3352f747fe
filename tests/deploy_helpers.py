"""Shared by the deployment tests: the tiny grading experiment a loopback deployment runs."""

from __future__ import annotations

from fedsilo.config import config_from_dict


def small_cfg(**fed):
    """3 sites, 2 rounds, 60 phantom fundus images at 28 px: seconds per run."""
    return config_from_dict({
        "experiment": {"name": "dep", "seed": 0, "threads": 1},
        "data": {"source": "phantom", "image_size": 28, "val_fraction": 0.2, "phantom": {"n_train": 60, "n_test": 20}},
        "partition": {"name": "iid"},
        "federation": {"num_sites": 3, "rounds": 2, **fed},
        "train": {"batch_size": 16, "local_epochs": 1},
        "classifier": {"width": 4, "depth": 1},
    })


def seg_cfg(paths: dict[tuple[str, str], str], sites: list[dict] | None = None):
    """FedGIN on sites ``(name, modality) -> chaos-layout folder`` (or explicit ``sites`` tables);
    a one-patient phantom test set per modality; 2 rounds of 3 steps."""
    shape = [8, 32, 32]
    sites = sites or [{"name": n, "kind": "chaos", "modality": m, "path": p, "mapping": "fedsilo"}
                      for (n, m), p in paths.items()]
    return config_from_dict({
        "experiment": {"name": "dep-seg", "task": "segmentation", "seed": 0, "threads": 1},
        "data": {"source": "volumes", "val_fraction": 0.25, "volume": {"size": 32, "skip_empty": True},
                 "sites": sites,
                 "test": [{"name": f"{m}-test", "kind": "phantom", "modality": m, "count": 1, "offset": 100,
                           "shape": shape} for m in ("ct", "mr")]},
        "federation": {"num_sites": len(sites), "rounds": 2, "timeout": 60.0},
        "train": {"local_steps": 3, "batch_size": 8, "lr": 0.003, "optimizer": "adam"},
        "segmentation": {"method": "gin"},
        "unet": {"base_width": 4, "depth": 3, "num_res_units": 0},
    })
