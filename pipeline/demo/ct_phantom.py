"""The medical demo's CT phantom: abdominal slices in HU, their organ masks and lesions, drawn deterministically.

The demo exists so the whole pipeline runs without patient data, and so the comparison it makes
(SimCLR vs ImageNet vs random init) is not decided by a trivial cue. Three slice classes:
``normal``, ``cyst`` (smooth, homogeneous) and ``tumour`` (lobulated, spiculated, heterogeneous).
Lesion size, count, host organ and contrast (hypo- and hyper-dense, 20-80 HU) are drawn from the
SAME distribution for both lesion classes, and round distractors (bowel loops, gallbladder,
vessels, ribs) appear in every class, so a classifier has to use shape and texture, not an
intensity statistic.

Anatomy is drawn in normalised coordinates (the field of view spans [-1, 1]) so any
``image_size`` shows the whole abdomen; ``pixel_spacing_mm`` only sets the DICOM geometry.
Everything is drawn from one ``numpy.random.Generator`` seeded by the caller and UIDs are
hashes of the seed, so one seed always gives byte-identical files.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

IMAGE_CLASSES = ("normal", "cyst", "tumour")
LESION_CATEGORIES = ("cyst", "tumour")  # COCO category ids are 1-based in this order
MASK_CLASSES = {0: "background", 1: "body", 2: "liver", 3: "other_organ", 4: "bone", 5: "lesion"}
BACKGROUND, BODY, LIVER, OTHER_ORGAN, BONE, LESION = range(6)
RESCALE_INTERCEPT = -1024  # stored value = HU + 1024
WINDOW_CENTER, WINDOW_WIDTH = 40, 400
LESION_RADIUS = (0.2, 0.3)  # half-FOV units: 6-10 px radius once a slice is resized to 64 px
LESION_CONTRAST_HU = (40.0, 100.0)


@dataclass(frozen=True)
class MedicalDemoSpec:
    """Size of the medical demo (the pipeline resizes slices to its own ``chip_size`` later)."""

    patients: int = 80
    slices_per_patient: int = 8
    image_size: int = 128  # pixels per side of each slice
    pixel_spacing_mm: float = 3.0


@dataclass(frozen=True)
class _Patient:
    """Per-patient anatomy and acquisition (drawn once, so slices of one patient look alike)."""

    body_axes: tuple[float, float]
    fat: float  # subcutaneous fat thickness, half-FOV units
    liver: tuple[float, float, float, float, float]  # cx, cy, ax, ay, angle
    liver_harmonics: np.ndarray  # (3, 3) rows of (k, amplitude, phase)
    spleen_x: float
    hu: dict[str, float]
    vertebra: tuple[float, float]  # centre y, radius
    noise_hu: float


def _window(x, y, centre, reach) -> tuple[slice, slice]:
    """Rows and columns of the pixel grid within ``reach`` of ``centre``: shapes are drawn only there."""
    cols = np.searchsorted(x[0], [centre[0] - reach, centre[0] + reach])
    rows = np.searchsorted(y[:, 0], [centre[1] - reach, centre[1] + reach])
    return slice(int(rows[0]), int(rows[1])), slice(int(cols[0]), int(cols[1]))


def _ellipse(x, y, centre, axes, angle=0.0, reach=None) -> np.ndarray:
    """Elliptical radius of each pixel: (H, W), < 1 inside; +inf beyond ``reach`` (default: major axis)."""
    out = np.full(x.shape, np.inf, np.float32)
    window = _window(x, y, centre, 1.01 * max(axes) if reach is None else reach)
    c, s = np.cos(angle), np.sin(angle)
    dx, dy = x[window] - centre[0], y[window] - centre[1]
    out[window] = np.hypot((dx * c + dy * s) / axes[0], (-dx * s + dy * c) / axes[1])
    return out


def _blob(x, y, centre, axes, angle, harmonics, reach=None) -> np.ndarray:
    """An ellipse whose boundary is modulated by angular harmonics (k, amplitude, phase): < 1 inside."""
    reach = reach or 1.01 * max(axes) * (1.0 + sum(abs(a) for _, a, _ in harmonics))
    rho = _ellipse(x, y, centre, axes, angle, reach)
    window = _window(x, y, centre, reach)
    theta = np.arctan2(y[window] - centre[1], x[window] - centre[0])
    rho[window] /= 1.0 + sum(a * np.cos(k * theta + p) for k, a, p in harmonics)
    return rho


def _smooth_noise(rng: np.random.Generator, n: int, sigma_px: float) -> np.ndarray:
    """Unit-variance Gaussian-correlated noise (n, n); correlation length ``sigma_px`` pixels."""
    field = cv2.GaussianBlur(rng.standard_normal((n, n)).astype(np.float32), (0, 0), max(sigma_px, 0.3))
    return field / (field.std() + 1e-6)


def draw_patient(rng: np.random.Generator) -> _Patient:
    """Body habitus, organ placement and contrast phase of one synthetic patient."""
    aorta = rng.uniform(40, 200)  # non-contrast ... arterial phase
    hu = {"fat": rng.uniform(-110, -85), "muscle": rng.uniform(40, 60), "aorta": aorta,
          "liver": rng.uniform(48, 62) + 0.1 * (aorta - 40), "spleen": rng.uniform(40, 50),
          "kidney": 30 + 0.3 * (aorta - 40),
          "cancellous": rng.uniform(220, 400), "cortex": rng.uniform(700, 1000)}
    harmonics = np.stack([np.arange(2, 5), rng.uniform(0.02, 0.08, 3), rng.uniform(0, 2 * np.pi, 3)], axis=1)
    return _Patient(body_axes=(rng.uniform(0.82, 0.95), rng.uniform(0.6, 0.72)), fat=rng.uniform(0.04, 0.12),
                    liver=(rng.uniform(-0.42, -0.3), rng.uniform(-0.15, -0.02), rng.uniform(0.36, 0.44),
                           rng.uniform(0.27, 0.33), rng.uniform(-0.3, 0.3)),
                    liver_harmonics=harmonics, spleen_x=rng.uniform(0.42, 0.55), hu=hu,
                    vertebra=(rng.uniform(0.3, 0.38), rng.uniform(0.1, 0.12)), noise_hu=rng.uniform(10, 20))


def _paint(hu, mask, region, value, code=None) -> None:
    """Set ``hu`` (and ``mask`` when ``code`` is given) inside a boolean region, in place."""
    hu[region] = value if np.isscalar(value) else value[region]
    if code is not None:
        mask[region] = code


def _body_and_wall(x, y, p: _Patient, rng, hu, mask) -> np.ndarray:
    """Body outline (fat, muscle wall, visceral fat with strands) and table; returns the cavity."""
    n = hu.shape[0]
    a, b = p.body_axes
    hu[(y > b + 0.06) & (y < b + 0.1) & (np.abs(x) < 0.95)] = -250  # scanner table
    body = (_blob(x, y, (0, 0), (a, b), 0, [(3, 0.015, 1.0), (5, 0.01, 2.0)]) < 1) & (y < 0.92 * b)
    _paint(hu, mask, body, p.hu["fat"], BODY)
    inner = (a - p.fat, b - p.fat)
    _paint(hu, mask, body & (_ellipse(x, y, (0, 0), inner) < 1), p.hu["muscle"])
    cavity = _ellipse(x, y, (0, 0), (inner[0] - 0.05, inner[1] - 0.05)) < 1
    strands = _smooth_noise(rng, n, 2.0 * n / 128)
    visceral = p.hu["fat"] + 120 / (1 + np.exp(-4 * (strands - 1.0)))
    _paint(hu, mask, cavity, visceral)
    for side in (-1, 1):  # paraspinal muscles
        muscle = _ellipse(x, y, (side * 0.2, p.vertebra[0] + 0.15), (0.14, 0.12)) < 1
        _paint(hu, mask, body & muscle, p.hu["muscle"])
    return cavity


def _bowel(x, y, cavity, rng, hu, mask) -> None:
    """Bowel loops (wall + fluid, gas, faeces or oral contrast): small round distractors in every class."""
    for _ in range(rng.integers(3, 8)):
        centre = (rng.uniform(-0.2, 0.6), rng.uniform(-0.5, 0.05))
        radius = rng.uniform(0.04, 0.08)
        rho = _ellipse(x, y, centre, (radius, radius * rng.uniform(0.7, 1.0)), rng.uniform(0, np.pi))
        loop = cavity & (rho < 1)
        content = rng.choice([rng.uniform(0, 30), -850.0, rng.uniform(-200, 10), rng.uniform(150, 350)])
        _paint(hu, mask, loop, 40.0)
        _paint(hu, mask, loop & (rho < 0.8), content)


def _liver(x, y, t, p: _Patient, rng, hu, mask) -> np.ndarray:
    """Liver with enhancing vessels and, sometimes, a gallbladder at depth ``t``; returns the liver."""
    n = hu.shape[0]
    cx, cy, ax, ay, angle = p.liver
    scale = 1.0 - 0.3 * t
    centre, axes = (cx + 0.05 * t, cy + 0.04 * t), (ax * scale, ay * scale)
    liver = _blob(x, y, centre, axes, angle, p.liver_harmonics) < 1
    _paint(hu, mask, liver, p.hu["liver"] + 4 * _smooth_noise(rng, n, 1.5 * n / 128), LIVER)
    vessel_hu = 40 + (p.hu["aorta"] - 40) * rng.uniform(0.6, 1.0)
    for _ in range(rng.integers(3, 8)):
        centre = (cx + rng.uniform(-0.6, 0.6) * ax * scale, cy + rng.uniform(-0.6, 0.6) * ay * scale)
        axes = (rng.uniform(0.015, 0.04), rng.uniform(0.015, 0.08))
        _paint(hu, mask, liver & (_ellipse(x, y, centre, axes, rng.uniform(0, np.pi)) < 1), vessel_hu)
    if 0.3 < t < 0.8 and rng.random() < 0.4:  # gallbladder at the liver's medial-anterior edge
        radius = rng.uniform(0.06, 0.1)
        rho = _ellipse(x, y, (cx + 0.6 * ax * scale, cy - 0.5 * ay * scale), (radius, 1.3 * radius),
                       rng.uniform(-0.5, 0.5))
        _paint(hu, mask, rho < 1, rng.uniform(0, 20), OTHER_ORGAN)
    return liver


def _upper_abdomen(x, y, t, p: _Patient, rng, hu, mask) -> dict[str, np.ndarray]:
    """Spleen (upper slices), kidneys (lower slices), aorta and IVC; returns lesion host regions."""
    n = hu.shape[0]
    hosts = {}
    spleen_scale = 1.0 - 0.6 * t
    if spleen_scale > 0.45:
        spleen = _ellipse(x, y, (p.spleen_x, 0.05), (0.2 * spleen_scale, 0.13 * spleen_scale), 0.7) < 1
        _paint(hu, mask, spleen, p.hu["spleen"] + 3 * _smooth_noise(rng, n, 1.5 * n / 128), OTHER_ORGAN)
        hosts["spleen"] = spleen
    kidney_scale = np.sqrt(np.clip((t - 0.2) / 0.4, 0, 1))
    if kidney_scale > 0.4:
        hosts["kidney"] = np.zeros_like(mask, dtype=bool)
        for side in (-1, 1):
            centre = (side * 0.3, p.vertebra[0] - 0.02)
            kidney = _ellipse(x, y, centre, (0.11 * kidney_scale, 0.15 * kidney_scale), side * 0.35) < 1
            _paint(hu, mask, kidney, p.hu["kidney"], OTHER_ORGAN)
            _paint(hu, mask, _ellipse(x, y, (centre[0] - side * 0.04, centre[1]), (0.04, 0.06)) < 1, -60.0)
            hosts["kidney"] |= kidney
    vy, vr = p.vertebra
    _paint(hu, mask, _ellipse(x, y, (0.06, vy - vr - 0.07), (0.06, 0.06)) < 1, p.hu["aorta"], OTHER_ORGAN)
    ivc = _ellipse(x, y, (-0.14, vy - vr - 0.09), (0.07, 0.05)) < 1
    _paint(hu, mask, ivc, 0.7 * p.hu["aorta"] + 15, OTHER_ORGAN)
    return hosts


def _bones(x, y, p: _Patient, rng, hu, mask) -> None:
    """Vertebra (cortex + trabecular body), posterior elements, spinal canal and ribs."""
    n = hu.shape[0]
    vy, vr = p.vertebra
    rho = _ellipse(x, y, (0, vy), (vr, 0.9 * vr))
    trabecular = p.hu["cancellous"] + 60 * _smooth_noise(rng, n, 0.8)
    _paint(hu, mask, rho < 1, p.hu["cortex"], BONE)
    _paint(hu, mask, rho < 0.8, trabecular)
    for side in (-1, 1):
        lamina = _ellipse(x, y, (side * 0.08, vy + vr + 0.06), (0.08, 0.028), side * -0.6) < 1
        _paint(hu, mask, lamina, p.hu["cortex"] * 0.8, BONE)
    _paint(hu, mask, _ellipse(x, y, (0, vy + vr + 0.14), (0.03, 0.08)) < 1, p.hu["cortex"] * 0.8, BONE)
    _paint(hu, mask, _ellipse(x, y, (0, vy + vr + 0.05), (0.055, 0.05)) < 1, 15.0, BODY)
    a, b = p.body_axes
    for phi in rng.uniform(-0.6, np.pi + 0.6, rng.integers(4, 9)):  # along the wall, not behind the spine
        if abs(phi - np.pi / 2) < 0.4:
            continue
        centre = ((a - p.fat - 0.03) * np.cos(phi), (b - p.fat - 0.03) * np.sin(phi))
        rib = _ellipse(x, y, centre, (0.05, 0.028), phi + np.pi / 2) < 1
        _paint(hu, mask, rib, rng.uniform(400, 800), BONE)


def _lesion_rho(x, y, centre, radius, kind, rng) -> np.ndarray:
    """Normalised radius of one lesion; cysts are smooth ellipses, tumours lobulated and spiculated."""
    axes = (radius * rng.uniform(0.85, 1.15), radius * rng.uniform(0.85, 1.15))
    angle = rng.uniform(0, np.pi)
    if kind == "cyst":
        return _ellipse(x, y, centre, axes, angle)
    lobes = [(k, rng.uniform(0.1, 0.18), rng.uniform(0, 2 * np.pi)) for k in 2 + rng.choice(4, 3, False)]
    reach = 2.0 * max(axes) * (1.0 + sum(a for _, a, _ in lobes))
    rho = _blob(x, y, centre, axes, angle, lobes, reach)
    window = _window(x, y, centre, reach)
    theta = np.arctan2(y[window] - centre[1], x[window] - centre[0])
    for direction in rng.uniform(0, 2 * np.pi, rng.integers(3, 7)):  # spicules: thin radial spikes
        gap = np.abs(np.angle(np.exp(1j * (theta - direction))))
        spike = np.where(gap < 0.25, rho[window] / (1 + rng.uniform(0.6, 1.0) * (1 - gap / 0.25)), np.inf)
        rho[window] = np.minimum(rho[window], spike)
    return rho


def _tumour_texture(rho: np.ndarray, n: int, rng) -> np.ndarray:
    """Heterogeneous interior (mottled, enhancing rim around a necrotic core) of a tumour, in HU."""
    mottle = rng.uniform(35, 55) * _smooth_noise(rng, n, rng.uniform(1.5, 2.5) * n / 128)
    return mottle + rng.uniform(20, 40) * np.where(rho < 0.6, -1.0, 1.0)


def _lesion_centre(host: np.ndarray, taken: np.ndarray, radius: float, rng) -> tuple[int, int] | None:
    """A pixel deep enough inside ``host`` and a lesion radius away from lesions already painted."""
    n = host.shape[0]
    depth = cv2.distanceTransform(host.astype(np.uint8), cv2.DIST_L2, 3) * 2 / n  # half-FOV units
    depth[cv2.dilate(taken.astype(np.uint8), np.ones((3, 3)), iterations=int(radius * n / 2)) > 0] = 0
    if depth.max() == 0:
        return None
    candidates = np.flatnonzero(depth >= min(0.6 * radius, depth.max()))
    row, col = np.unravel_index(rng.choice(candidates), depth.shape)
    return int(row), int(col)


def _lesions(x, y, kind, hosts, paintable, p: _Patient, rng, hu, mask) -> list[tuple[str, np.ndarray]]:
    """Paint 1-3 lesions of ``kind`` into host organs; returns (kind, lesion pixels) per lesion.

    Size, count, host and contrast are drawn identically for cysts and tumours; only the outline
    (:func:`_lesion_rho`) and the zero-mean interior texture differ.
    """
    n = hu.shape[0]
    names = list(hosts)
    weights = np.array([6.0 if name == "liver" else 1.0 for name in names])
    taken = np.zeros_like(paintable)
    painted: list[tuple[str, np.ndarray]] = []
    for _ in range(rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1])):
        host = names[rng.choice(len(names), p=weights / weights.sum())]
        radius = rng.uniform(*LESION_RADIUS)
        region = hosts[host] & (mask == (LIVER if host == "liver" else OTHER_ORGAN))  # still visible
        centre = _lesion_centre(region, taken, radius, rng)
        if centre is None:
            continue
        rho = _lesion_rho(x, y, (x[0, centre[1]], y[centre[0], 0]), radius, kind, rng)
        value = p.hu[host] + rng.choice([-1.0, 1.0]) * rng.uniform(*LESION_CONTRAST_HU)
        if kind == "cyst":
            weight = (rho < 1).astype(np.float32)
        else:
            weight = np.clip((1.0 - rho) / 0.15, 0, 1)  # infiltrative margin
            texture = _tumour_texture(rho, n, rng)
            value = value + texture - texture[rho < 1].mean()  # zero-mean: the mean contrast is unchanged
        weight = weight * paintable
        hu[:] = hu * (1 - weight) + value * weight
        lesion = weight > 0.5
        mask[lesion] = LESION
        taken |= lesion
        painted.append((kind, lesion))
    return painted


def render_slice(p: _Patient, t: float, kind: str, n: int, rng) -> tuple[np.ndarray, np.ndarray, list]:
    """One axial slice at depth ``t`` in [0, 1]: HU (n, n) float32, mask (n, n) uint8, lesion list."""
    coords = (np.arange(n, dtype=np.float32) + 0.5) * 2 / n - 1
    x, y = np.meshgrid(coords, coords)
    hu = np.full((n, n), -1000.0, np.float32)
    mask = np.zeros((n, n), np.uint8)
    cavity = _body_and_wall(x, y, p, rng, hu, mask)
    _bowel(x, y, cavity, rng, hu, mask)
    hosts = {"liver": _liver(x, y, t, p, rng, hu, mask), **_upper_abdomen(x, y, t, p, rng, hu, mask)}
    _bones(x, y, p, rng, hu, mask)
    paintable = cavity & (mask != BONE)
    lesions = _lesions(x, y, kind, hosts, paintable, p, rng, hu, mask) if kind != "normal" else []
    hu = cv2.GaussianBlur(hu, (0, 0), 0.7 * n / 128) + rng.normal(0, p.noise_hu, (n, n)).astype(np.float32)
    return np.clip(hu, -1024, 3071), mask, lesions
