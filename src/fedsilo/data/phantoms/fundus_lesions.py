"""Diabetic-retinopathy lesions for the fundus phantom, drawn per ICDR grade.

The International Clinical Diabetic Retinopathy (ICDR) severity scale (Wilkinson et al.,
"Proposed international clinical diabetic retinopathy and diabetic macular edema disease
severity scales", Ophthalmology 110(9):1677-1682, 2003) defines five grades:

0. no apparent retinopathy: no abnormality;
1. mild non-proliferative DR (NPDR): microaneurysms only;
2. moderate NPDR: more than microaneurysms (dot/blot and flame haemorrhages, hard exudates,
   occasional cotton-wool spots) but less than severe;
3. severe NPDR: the 4-2-1 rule, e.g. more than 20 intraretinal haemorrhages in each of four
   quadrants, venous beading in two or more quadrants, or intraretinal microvascular
   abnormalities (IRMA); cotton-wool spots are common;
4. proliferative DR (PDR): neovascularisation at the disc (NVD) or elsewhere (NVE), pre-retinal
   or vitreous haemorrhage; eyes are often already treated with pan-retinal laser photocoagulation
   (PRP scars).

Lesion counts and sizes grow with the grade and with a per-image severity within the grade, and
lesion contrast varies per image, so adjacent grades overlap as in real screening data. Drusen,
nerve-fibre-layer sheen and choroidal naevi appear at any grade as confounders (not lesions).
Sizes are in FOV radii (FOV diameter ~ 12 mm, so 0.01 ~ 60 um).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .fundus_anatomy import GEOMETRY_STEP, VEIN, Eye, Walks, random_walks

__all__ = ["LESION_TYPES", "LAYERS", "Blobs", "Lesions", "sample_lesions"]

#: Rendering layers, in id order (vessels first, then DR lesions, then confounders).
LAYERS: tuple[str, ...] = (
    "vein", "artery", "microaneurysm", "haemorrhage", "hard_exudate", "cotton_wool_spot", "irma",
    "neovascularisation", "preretinal_haemorrhage", "laser_scar", "laser_scar_pale", "drusen", "sheen", "naevus",
)  # fmt: skip
_L = {name: i for i, name in enumerate(LAYERS)}
#: Lesion classes in the masks returned by ``generate_fundus(..., return_lesions=True)``; id 0 is none.
LESION_TYPES: tuple[str, ...] = ("none",) + LAYERS[2:10]


@dataclass(frozen=True)
class Blobs:
    """``m`` Gaussian spots: centres ``x, y``, ``sigma`` (FOV radii), peak ``amp``, ``layer`` id; each ``(m,)``."""

    x: np.ndarray
    y: np.ndarray
    sigma: np.ndarray
    amp: np.ndarray
    layer: np.ndarray


@dataclass(frozen=True)
class Lesions:
    """Everything grade-dependent in one image: spots, fine abnormal vessels, the (beaded) tree."""

    blobs: Blobs
    walks: list[Walks]
    tree: list[Walks]


class _Spots:
    """Accumulates spots layer by layer."""

    def __init__(self) -> None:
        self.parts: list[tuple[np.ndarray, ...]] = []

    def add(self, xy: np.ndarray, sigma: np.ndarray, amp: np.ndarray, layer: str) -> None:
        xy = np.asarray(xy, dtype=float).reshape(-1, 2)
        m = xy.shape[0]
        sig, am = np.broadcast_to(sigma, (m,)), np.broadcast_to(amp, (m,))
        self.parts.append((xy[:, 0], xy[:, 1], sig, am, np.full(m, _L[layer])))

    def blobs(self) -> Blobs:
        cols = [np.concatenate([p[i] for p in self.parts]) if self.parts else np.zeros(0) for i in range(5)]
        return Blobs(x=cols[0], y=cols[1], sigma=cols[2], amp=cols[3], layer=cols[4].astype(np.int64))


def sample_lesions(grade: int, eye: Eye, tree: list[Walks], rng: np.random.Generator) -> Lesions:
    """Draw the lesions of one image of ICDR ``grade`` (0-4) on a given eye and vessel tree."""
    spots, walks = _Spots(), []
    sev = rng.random()  # severity within the grade
    vis = rng.uniform(0.6, 1.1)  # lesion contrast in this photograph
    dd = eye.disc_diameter

    def count(lo: int, hi: int) -> int:
        u = float(np.clip(sev + rng.normal(0.0, 0.2), 0.0, 0.999))
        return lo + int(u * (hi - lo + 1))

    def place(n: int, spread: float = 1.4, quadrants: np.ndarray | None = None) -> np.ndarray:
        """``(<= n, 2)`` points around the fovea, outside the disc, inside the FOV."""
        m = 4 * n + 4
        q = rng.choice(quadrants, size=m) if quadrants is not None else rng.integers(0, 4, size=m)
        ang = np.arctan2(*(eye.fovea - eye.disc)[::-1]) + (q + rng.random(m)) * (np.pi / 2)
        rad = 2.5 * dd * spread * np.sqrt(rng.uniform(0.005, 1.0, size=m))
        pts = eye.fovea + rad[:, None] * np.stack([np.cos(ang), np.sin(ang)], axis=1)
        ok = (np.hypot(pts[:, 0], pts[:, 1]) < 0.93) & (np.hypot(*(pts - eye.disc).T) > 1.3 * eye.disc_radius)
        return pts[ok][:n]

    def fine_vessels(centres: np.ndarray, n_each: tuple[int, int], length: tuple[float, float], layer: str) -> None:
        if len(centres) == 0:
            return
        reps = rng.integers(n_each[0], n_each[1] + 1, size=len(centres))
        start = np.repeat(centres, reps, axis=0) + rng.normal(0.0, 0.02, size=(reps.sum(), 2))
        m = start.shape[0]
        walks.append(random_walks(
            rng, start, rng.uniform(-np.pi, np.pi, m), rng.uniform(*length, m), rng.uniform(0.006, 0.011, m),
            np.full(m, _L[layer]), tortuosity=rng.uniform(30.0, 55.0, m), corr_length=0.02, taper=0.3,
        ))  # fmt: skip

    if grade >= 1:  # microaneurysms: tiny sharp red dots, mostly in the posterior pole
        n = {1: (1, 6), 2: (3, 14), 3: (6, 22), 4: (6, 22)}[grade]
        pts = place(count(*n), spread=1.0)
        spots.add(pts, rng.uniform(0.005, 0.009, len(pts)), vis * rng.uniform(0.7, 1.0, len(pts)), "microaneurysm")
    if grade >= 2:
        quads = None if grade >= 3 else rng.permutation(4)[: rng.integers(1, 4)]
        n_h = count(*{2: (1, 12), 3: (10, 45), 4: (6, 40)}[grade])
        big = 0.016 if grade == 2 else 0.022
        for c in place(n_h, spread=1.5, quadrants=quads):  # dot and blot haemorrhages
            parts = rng.integers(1, 4)
            sig = rng.uniform(0.008, big) * rng.uniform(0.7, 1.0, parts)
            spots.add(c + rng.normal(0.0, 1.0, (parts, 2)) * sig[:, None], sig, vis * rng.uniform(0.6, 0.95, parts), "haemorrhage")
        for _ in range(count(0, 2) if grade == 2 else count(1, 6)):  # flame haemorrhages near the disc
            a = rng.uniform(-np.pi, np.pi)
            r = eye.disc_radius + rng.uniform(0.02, 0.3)
            t = np.linspace(-1.0, 1.0, 5)[:, None] * rng.uniform(0.015, 0.035)
            xy = eye.disc + r * np.array([np.cos(a), np.sin(a)]) + t * np.array([np.cos(a), np.sin(a)])
            spots.add(xy, rng.uniform(0.006, 0.01), vis * rng.uniform(0.5, 0.85), "haemorrhage")
        p_ex, n_cl = {2: (0.65, (1, 2)), 3: (0.65, (1, 3)), 4: (0.55, (1, 3))}[grade]
        if rng.random() < p_ex:  # hard exudates: waxy yellow flecks, often a circinate ring
            for c in place(rng.integers(n_cl[0], n_cl[1] + 1), spread=0.6):
                k = count(4, 24)
                if rng.random() < 0.5:
                    a = rng.uniform(0, 2 * np.pi, k)
                    off = rng.uniform(0.04, 0.11) * np.stack([np.cos(a), np.sin(a)], 1) + rng.normal(0, 0.008, (k, 2))
                else:
                    off = rng.normal(0.0, 0.035, (k, 2))
                spots.add(c + off, rng.uniform(0.004, 0.009, k), vis * rng.uniform(0.6, 1.0, k), "hard_exudate")
        n_cws = (count(1, 2) if rng.random() < 0.25 else 0) if grade == 2 else count(1, 7)
        trunk = tree[0]
        s = np.arange(trunk.valid.shape[1]) * GEOMETRY_STEP
        cand = np.argwhere(trunk.valid & ((s > 0.1) & (s < 0.8))[None, :])  # along the arcades, near the disc
        for i in rng.integers(0, max(len(cand), 1), size=n_cws if len(cand) else 0):  # cotton-wool spots
            c = trunk.xy[tuple(cand[i])] + rng.normal(0.0, 0.025, 2)
            sig = rng.uniform(0.016, 0.035)
            spots.add(c + rng.normal(0.0, 0.7, (3, 2)) * sig, sig * rng.uniform(0.6, 1.0, 3), vis * rng.uniform(0.3, 0.6), "cotton_wool_spot")
    if grade >= 3:
        tree = _bead_veins(tree, eye, rng, beading=rng.random() < 0.6, dilation=rng.uniform(1.0, 1.25))
        if rng.random() < 0.45:
            fine_vessels(place(count(1, 3), spread=1.1), (3, 6), (0.02, 0.06), "irma")
    if grade == 4:
        kinds = rng.random()
        if kinds < 0.7:  # new vessels at the disc (NVD)
            a = rng.uniform(-np.pi, np.pi, count(1, 3))
            centres = eye.disc + eye.disc_radius * rng.uniform(0.2, 1.1, (len(a), 1)) * np.stack([np.cos(a), np.sin(a)], 1)
            fine_vessels(centres, (8, 16), (0.04, 0.14), "neovascularisation")
        if kinds > 0.4:  # new vessels elsewhere (NVE), on the arcades
            trunk = tree[0]
            rows = rng.integers(0, trunk.n, size=count(1, 3))
            cols = np.minimum(rng.integers(30, 100, size=len(rows)), trunk.valid.sum(axis=1)[rows] - 1)
            fine_vessels(trunk.xy[rows, np.maximum(cols, 0)], (8, 16), (0.04, 0.12), "neovascularisation")
        if rng.random() < 0.3:  # pre-retinal haemorrhage: a large boat-shaped clot
            c = place(1, spread=1.0)
            c = c if len(c) else eye.fovea[None, :]
            t = np.linspace(-1.0, 1.0, 7)[:, None] * np.array([rng.uniform(0.04, 0.1), 0.0])
            sig = rng.uniform(0.025, 0.05) * (1.0 - 0.5 * np.abs(t[:, 0]) / max(abs(t[0, 0]), 1e-9))
            spots.add(c[:1] + t, sig, 0.95, "preretinal_haemorrhage")
        if rng.random() < 0.4:
            _laser_scars(spots, eye, rng)
    _confounders(spots, eye, tree, rng)
    return Lesions(blobs=spots.blobs(), walks=walks, tree=tree)


def _bead_veins(tree: list[Walks], eye: Eye, rng: np.random.Generator, *, beading: bool, dilation: float) -> list[Walks]:
    """Dilate the veins and, in 2-4 quadrants, give them a sausage-like calibre (venous beading)."""
    quads = rng.permutation(4)[: rng.integers(2, 5)]
    wavelength, depth, phase = rng.uniform(0.03, 0.06), rng.uniform(0.5, 1.0), rng.uniform(0, 2 * np.pi)
    out = []
    for w in tree:
        vein = (w.kind == VEIN)[:, None]
        factor = np.where(vein, dilation, 1.0)
        if beading:
            s = np.arange(w.valid.shape[1]) * GEOMETRY_STEP
            rel = w.xy - eye.disc
            q = (np.floor((np.arctan2(rel[..., 1], rel[..., 0]) + np.pi) / (np.pi / 2)).astype(int)) % 4
            bead = 1.0 + depth * np.sin(2 * np.pi * s / wavelength + phase)[None, :] ** 2 - depth / 2
            factor = np.where(vein & np.isin(q, quads), factor * bead, factor)
        out.append(replace(w, width=w.width * factor))
    return out


def _laser_scars(spots: _Spots, eye: Eye, rng: np.random.Generator) -> None:
    """Pan-retinal photocoagulation: a jittered grid of pigmented scars sparing the posterior pole."""
    step = rng.uniform(0.07, 0.1)
    g = np.arange(-1.0, 1.0 + step, step)
    xy = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2) + rng.normal(0.0, 0.18 * step, (g.size**2, 2))
    keep = (np.hypot(*xy.T) < 0.95) & (np.hypot(*(xy - eye.fovea).T) > 2.9 * eye.disc_diameter)
    keep &= (np.hypot(*(xy - eye.disc).T) > 2.0 * eye.disc_diameter) & (rng.random(len(xy)) < rng.uniform(0.5, 0.95))
    xy = xy[keep]
    sig = rng.uniform(0.011, 0.018, len(xy))
    spots.add(xy, sig, rng.uniform(0.6, 1.0, len(xy)), "laser_scar")
    spots.add(xy, 0.5 * sig, rng.uniform(0.3, 0.6, len(xy)), "laser_scar_pale")


def _confounders(spots: _Spots, eye: Eye, tree: list[Walks], rng: np.random.Generator) -> None:
    """Non-DR findings at any grade: drusen, nerve-fibre-layer sheen, choroidal naevus."""
    u = rng.random(3)
    if u[0] < 0.12:
        c = eye.fovea + rng.normal(0.0, 0.12, (rng.integers(3, 16), 2))
        spots.add(c, rng.uniform(0.004, 0.008, len(c)), rng.uniform(0.3, 0.55, len(c)), "drusen")
    if u[1] < 0.35:
        trunk = tree[0]
        pts = trunk.xy[:4, 5:90:6][trunk.valid[:4, 5:90:6]]
        spots.add(pts + rng.normal(0.0, 0.03, pts.shape), 0.03, rng.uniform(0.06, 0.14), "sheen")
    if u[2] < 0.04:
        c = eye.fovea + rng.normal(0.0, 0.35, (1, 2))
        spots.add(c if np.hypot(*c[0]) < 0.85 else c * 0.5, rng.uniform(0.035, 0.07), rng.uniform(0.3, 0.5), "naevus")
