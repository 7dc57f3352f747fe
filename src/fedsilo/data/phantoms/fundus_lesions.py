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

from fedsilo.data.phantoms.fundus_anatomy import GEOMETRY_STEP, VEIN, Eye, Walks, random_walks

__all__ = ["LESION_TYPES", "LAYERS", "GRADE_SIGNS", "Blobs", "Lesions", "Signs", "sample_lesions"]

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


@dataclass(frozen=True)
class Signs:
    """Which DR signs one ICDR grade draws; ``(lo, hi)`` counts are scaled by the within-grade severity."""

    microaneurysms: tuple[int, int] = (0, 0)
    haemorrhages: tuple[int, int] = (0, 0)
    haemorrhage_sigma: float = 0.016  # largest blot (FOV radii)
    all_quadrants: bool = False  # else haemorrhages keep to 1-3 quadrants
    flame_haemorrhages: tuple[int, int] = (0, 0)
    exudate_p: float = 0.0
    exudate_clusters: tuple[int, int] = (1, 1)
    cotton_wool_p: float = 0.0
    cotton_wool: tuple[int, int] = (0, 0)
    venous_changes: bool = False  # dilated veins, beaded in 2-4 quadrants with probability 0.6
    irma_p: float = 0.0
    new_vessels: bool = False  # NVD and/or NVE
    preretinal_p: float = 0.0
    laser_p: float = 0.0


_SEVERE = Signs(
    microaneurysms=(6, 22), haemorrhages=(10, 45), haemorrhage_sigma=0.022, all_quadrants=True,
    flame_haemorrhages=(1, 6), exudate_p=0.65, exudate_clusters=(1, 3), cotton_wool_p=1.0, cotton_wool=(1, 7),
    venous_changes=True, irma_p=0.45,
)  # fmt: skip
#: ICDR grade -> signs (Wilkinson et al., Ophthalmology 2003).
GRADE_SIGNS: tuple[Signs, ...] = (
    Signs(),
    Signs(microaneurysms=(1, 6)),
    Signs(microaneurysms=(3, 14), haemorrhages=(1, 12), flame_haemorrhages=(0, 2), exudate_p=0.65,
          exudate_clusters=(1, 2), cotton_wool_p=0.25, cotton_wool=(1, 2)),
    _SEVERE,
    replace(_SEVERE, haemorrhages=(6, 40), exudate_p=0.55, new_vessels=True, preretinal_p=0.3, laser_p=0.4),
)  # fmt: skip


def sample_lesions(grade: int, eye: Eye, tree: list[Walks], rng: np.random.Generator) -> Lesions:
    """Draw the lesions of one image of ICDR ``grade`` (0-4) on a given eye and vessel tree."""
    signs = GRADE_SIGNS[grade]
    d = _Drawer(eye, tree, rng)
    d.microaneurysms(d.count(signs.microaneurysms))
    if signs.haemorrhages[1] > 0:
        quads = None if signs.all_quadrants else rng.permutation(4)[: rng.integers(1, 4)]
        d.haemorrhages(d.count(signs.haemorrhages), signs.haemorrhage_sigma, quads)
        d.flame_haemorrhages(d.count(signs.flame_haemorrhages))
    if rng.random() < signs.exudate_p:
        d.hard_exudates(int(rng.integers(signs.exudate_clusters[0], signs.exudate_clusters[1] + 1)))
    if rng.random() < signs.cotton_wool_p:
        d.cotton_wool_spots(d.count(signs.cotton_wool))
    if signs.venous_changes:
        d.venous_changes(beading=rng.random() < 0.6)
    if rng.random() < signs.irma_p:
        d.fine_vessels(d.place(d.count((1, 3)), spread=1.1), (3, 6), (0.02, 0.06), "irma")
    if signs.new_vessels:
        d.new_vessels()
    if rng.random() < signs.preretinal_p:
        d.preretinal_haemorrhage()
    if rng.random() < signs.laser_p:
        d.laser_scars()
    d.confounders()
    return Lesions(blobs=d.blobs(), walks=d.walks, tree=d.tree)


class _Drawer:
    """Draws lesions on one eye; holds the image's within-grade severity and lesion contrast."""

    def __init__(self, eye: Eye, tree: list[Walks], rng: np.random.Generator) -> None:
        self.eye, self.tree, self.rng = eye, tree, rng
        self.severity = rng.random()
        self.contrast = rng.uniform(0.6, 1.1)
        self.walks: list[Walks] = []
        self._parts: list[tuple[np.ndarray, ...]] = []

    # -- bookkeeping
    def add(self, xy: np.ndarray, sigma: np.ndarray | float, amp: np.ndarray | float, layer: str) -> None:
        xy = np.asarray(xy, dtype=float).reshape(-1, 2)
        m = xy.shape[0]
        sig, am = np.broadcast_to(sigma, (m,)), np.broadcast_to(amp, (m,))
        self._parts.append((xy[:, 0], xy[:, 1], sig, am, np.full(m, _L[layer])))

    def blobs(self) -> Blobs:
        cols = [np.concatenate([p[i] for p in self._parts]) if self._parts else np.zeros(0) for i in range(5)]
        return Blobs(x=cols[0], y=cols[1], sigma=cols[2], amp=cols[3], layer=cols[4].astype(np.int64))

    def count(self, lo_hi: tuple[int, int]) -> int:
        """A count in ``[lo, hi]`` that follows the image's severity, with some scatter."""
        lo, hi = lo_hi
        u = float(np.clip(self.severity + self.rng.normal(0.0, 0.2), 0.0, 0.999))
        return lo + int(u * (hi - lo + 1))

    def place(self, n: int, spread: float = 1.4, quadrants: np.ndarray | None = None) -> np.ndarray:
        """``(<= n, 2)`` points around the fovea (within ``spread`` x 2.5 DD), off the disc, in the FOV."""
        eye, rng, m = self.eye, self.rng, 4 * n + 4
        q = rng.choice(quadrants, size=m) if quadrants is not None else rng.integers(0, 4, size=m)
        ang = np.arctan2(*(eye.fovea - eye.disc)[::-1]) + (q + rng.random(m)) * (np.pi / 2)
        rad = 2.5 * eye.disc_diameter * spread * np.sqrt(rng.uniform(0.005, 1.0, size=m))
        pts = eye.fovea + rad[:, None] * np.stack([np.cos(ang), np.sin(ang)], axis=1)
        ok = (np.hypot(pts[:, 0], pts[:, 1]) < 0.93) & (np.hypot(*(pts - eye.disc).T) > 1.3 * eye.disc_radius)
        return pts[ok][:n]

    def fine_vessels(
        self, centres: np.ndarray, n_each: tuple[int, int], length: tuple[float, float], layer: str
    ) -> None:
        """Tufts of fine, very tortuous vessels (IRMA, new vessels) around each centre."""
        rng = self.rng
        if len(centres) == 0:
            return
        reps = rng.integers(n_each[0], n_each[1] + 1, size=len(centres))
        start = np.repeat(centres, reps, axis=0) + rng.normal(0.0, 0.02, size=(reps.sum(), 2))
        m = start.shape[0]
        self.walks.append(random_walks(
            rng, start, rng.uniform(-np.pi, np.pi, m), rng.uniform(*length, m), rng.uniform(0.006, 0.011, m),
            np.full(m, _L[layer]), tortuosity=rng.uniform(30.0, 55.0, m), corr_length=0.02, taper=0.3,
        ))  # fmt: skip

    # -- DR signs
    def microaneurysms(self, n: int) -> None:
        """Tiny sharp red dots (< 125 um), mostly in the posterior pole."""
        pts = self.place(n, spread=1.0)
        amp = self.contrast * self.rng.uniform(0.7, 1.0, len(pts))
        self.add(pts, self.rng.uniform(0.005, 0.009, len(pts)), amp, "microaneurysm")

    def haemorrhages(self, n: int, sigma_max: float, quadrants: np.ndarray | None) -> None:
        """Dot and blot haemorrhages: one to three overlapping red spots each."""
        rng = self.rng
        for c in self.place(n, spread=1.5, quadrants=quadrants):
            parts = rng.integers(1, 4)
            sig = rng.uniform(0.008, sigma_max) * rng.uniform(0.7, 1.0, parts)
            xy = c + rng.normal(0.0, 1.0, (parts, 2)) * sig[:, None]
            self.add(xy, sig, self.contrast * rng.uniform(0.6, 0.95, parts), "haemorrhage")

    def flame_haemorrhages(self, n: int) -> None:
        """Splinter haemorrhages near the disc, elongated along the radial nerve fibres."""
        rng, eye = self.rng, self.eye
        for _ in range(n):
            a = rng.uniform(-np.pi, np.pi)
            u = np.array([np.cos(a), np.sin(a)])
            t = np.linspace(-1.0, 1.0, 5)[:, None] * rng.uniform(0.015, 0.035)
            xy = eye.disc + (eye.disc_radius + rng.uniform(0.02, 0.3)) * u + t * u
            self.add(xy, rng.uniform(0.006, 0.01), self.contrast * rng.uniform(0.5, 0.85), "haemorrhage")

    def hard_exudates(self, clusters: int) -> None:
        """Waxy yellow flecks near the macula, in a circinate ring or a plaque."""
        rng = self.rng
        for c in self.place(clusters, spread=0.6):
            k = self.count((4, 24))
            if rng.random() < 0.5:
                a = rng.uniform(0, 2 * np.pi, k)
                off = rng.uniform(0.04, 0.11) * np.stack([np.cos(a), np.sin(a)], 1) + rng.normal(0, 0.008, (k, 2))
            else:
                off = rng.normal(0.0, 0.035, (k, 2))
            self.add(c + off, rng.uniform(0.004, 0.009, k), self.contrast * rng.uniform(0.6, 1.0, k), "hard_exudate")

    def cotton_wool_spots(self, n: int) -> None:
        """Fluffy white nerve-fibre infarcts along the arcades near the disc."""
        rng, trunk = self.rng, self.tree[0]
        s = np.arange(trunk.valid.shape[1]) * GEOMETRY_STEP
        cand = np.argwhere(trunk.valid & ((s > 0.1) & (s < 0.8))[None, :])
        if len(cand) == 0:
            return
        for i in rng.integers(0, len(cand), size=n):
            c = trunk.xy[tuple(cand[i])] + rng.normal(0.0, 0.025, 2)
            sig = rng.uniform(0.016, 0.035)
            xy = c + rng.normal(0.0, 0.7, (3, 2)) * sig
            self.add(xy, sig * rng.uniform(0.6, 1.0, 3), self.contrast * rng.uniform(0.3, 0.6), "cotton_wool_spot")

    def venous_changes(self, beading: bool) -> None:
        """Dilate the veins and, in 2-4 quadrants, give them a sausage-like calibre (venous beading)."""
        rng, eye = self.rng, self.eye
        dilation = rng.uniform(1.0, 1.25)
        quads = rng.permutation(4)[: rng.integers(2, 5)]
        wavelength, depth, phase = rng.uniform(0.03, 0.06), rng.uniform(0.5, 1.0), rng.uniform(0, 2 * np.pi)
        out = []
        for w in self.tree:
            vein = (w.kind == VEIN)[:, None]
            factor = np.where(vein, dilation, 1.0)
            if beading:
                s = np.arange(w.valid.shape[1]) * GEOMETRY_STEP
                rel = w.xy - eye.disc
                q = np.floor((np.arctan2(rel[..., 1], rel[..., 0]) + np.pi) / (np.pi / 2)).astype(int) % 4
                bead = 1.0 - depth / 2 + depth * np.sin(2 * np.pi * s / wavelength + phase)[None, :] ** 2
                factor = np.where(vein & np.isin(q, quads), factor * bead, factor)
            out.append(replace(w, width=w.width * factor))
        self.tree = out

    def new_vessels(self) -> None:
        """Neovascularisation at the disc (NVD, 70 %) and/or elsewhere on the arcades (NVE, 60 %)."""
        rng, eye, trunk = self.rng, self.eye, self.tree[0]
        where = rng.random()
        if where < 0.7:
            a = rng.uniform(-np.pi, np.pi, self.count((1, 3)))
            r = eye.disc_radius * rng.uniform(0.2, 1.1, (len(a), 1))
            centres = eye.disc + r * np.stack([np.cos(a), np.sin(a)], 1)
            self.fine_vessels(centres, (10, 20), (0.05, 0.16), "neovascularisation")
        if where > 0.4:
            rows = rng.integers(0, trunk.n, size=self.count((1, 3)))
            cols = np.minimum(rng.integers(30, 100, size=len(rows)), trunk.valid.sum(axis=1)[rows] - 1)
            self.fine_vessels(trunk.xy[rows, np.maximum(cols, 0)], (10, 20), (0.05, 0.14), "neovascularisation")

    def preretinal_haemorrhage(self) -> None:
        """A large dark boat-shaped clot in front of the retina (it hides the vessels)."""
        rng = self.rng
        c = self.place(1, spread=1.0)
        c = c[:1] if len(c) else self.eye.fovea[None, :]
        t = np.linspace(-1.0, 1.0, 7)[:, None] * np.array([rng.uniform(0.04, 0.1), 0.0])
        sig = rng.uniform(0.025, 0.05) * (1.0 - 0.5 * np.abs(np.linspace(-1.0, 1.0, 7)))
        self.add(c + t, sig, 0.95, "preretinal_haemorrhage")

    def laser_scars(self) -> None:
        """Pan-retinal photocoagulation: a jittered grid of pigmented scars sparing the posterior pole."""
        rng, eye = self.rng, self.eye
        step = rng.uniform(0.07, 0.1)
        g = np.arange(-1.0, 1.0 + step, step)
        xy = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2) + rng.normal(0.0, 0.18 * step, (g.size**2, 2))
        keep = (np.hypot(*xy.T) < 0.95) & (np.hypot(*(xy - eye.fovea).T) > 2.9 * eye.disc_diameter)
        keep &= np.hypot(*(xy - eye.disc).T) > 2.0 * eye.disc_diameter
        keep &= rng.random(len(xy)) < rng.uniform(0.5, 0.95)
        xy = xy[keep]
        sig = rng.uniform(0.011, 0.018, len(xy))
        self.add(xy, sig, rng.uniform(0.6, 1.0, len(xy)), "laser_scar")
        self.add(xy, 0.5 * sig, rng.uniform(0.3, 0.6, len(xy)), "laser_scar_pale")

    # -- not DR
    def confounders(self) -> None:
        """Findings at any grade that are not DR: drusen, nerve-fibre-layer sheen, choroidal naevus."""
        rng, eye, trunk = self.rng, self.eye, self.tree[0]
        u = rng.random(3)
        if u[0] < 0.12:
            c = eye.fovea + rng.normal(0.0, 0.12, (rng.integers(3, 16), 2))
            self.add(c, rng.uniform(0.004, 0.008, len(c)), rng.uniform(0.3, 0.55, len(c)), "drusen")
        if u[1] < 0.35:
            pts = trunk.xy[:4, 5:90:6][trunk.valid[:4, 5:90:6]]
            self.add(pts + rng.normal(0.0, 0.03, pts.shape), 0.03, rng.uniform(0.06, 0.14), "sheen")
        if u[2] < 0.04:
            c = eye.fovea + rng.normal(0.0, 0.35, (1, 2))
            c = c if np.hypot(*c[0]) < 0.85 else 0.5 * c
            self.add(c, rng.uniform(0.035, 0.07), rng.uniform(0.3, 0.5), "naevus")
