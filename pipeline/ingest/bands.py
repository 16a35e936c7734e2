"""Which bands a remote-sensing domain learns from: band names that mean something, and one band set per domain.

Real archives mix sensors in one folder: 4-band PlanetScope next to 13-band Sentinel-2, single-band SAR, RGB
quick-looks. A domain has one channel set, so ingest first reads every scene's header and chooses it:

* **Names that carry meaning.** A band description or band-file token is matched through :data:`BAND_ALIASES`
  (data, not code): Sentinel-2 tokens (``B04`` = red, ``B08`` = nir, ``B8A`` = nir08 …), Landsat Collection 2 names
  (``SR_B4`` = red …), common names (``Red``, ``NIR``, ``near infrared``), SAR polarisations (``VV``, ``VH``).
  Another non-generic description (``ndvi``, ``elevation``) is its own name. Generic descriptions (``band_1``,
  ``Band 1``, ``b1``, ``1``, empty) say nothing: they never make two scenes differ, and match only by position.
* **One band set.** With ``bands: null`` every scene's band set is a candidate: its canonical names when every
  data band is named (order does not matter), else just its band count. A named candidate is *given* by every
  scene that has those bands (in any order, with others besides: a 13-band Sentinel-2 scene gives its 4 of an
  RGBN set); an unnamed set of N bands by every scene of N data bands (a named one only in the band order the
  other named scenes of that size have). The candidate that keeps the most — scenes giving it × its bands —
  wins (ties: more scenes, then more scenes having it exactly, then named before unnamed, then the names), so
  the choice never depends on file order: one odd single-band file cannot shrink an RGBN archive to one band,
  and three RGB quick-looks do not cost the NIR band of a hundred scenes. The report lists every candidate with
  how many scenes have it and how many give it.
  Channels follow :data:`BAND_ORDER` (wavelength, then polarisation, then other names alphabetically). Every scene
  that does not share the set is rejected with a reason that lists its band set, how many scenes have it, and
  the key to set.
* **Requested bands** (``bands: [nir, red, green]`` or 1-based indexes) are matched by the same names.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

# name as written (lower case, separators as "_") → canonical name. Sentinel-2 band tokens follow the MSI
# band table; Landsat 8/9 Collection 2 surface reflectance / temperature product names; common spellings.
BAND_ALIASES: dict[str, str] = {
    "b01": "coastal", "b02": "blue", "b03": "green", "b04": "red", "b05": "rededge1", "b06": "rededge2",
    "b07": "rededge3", "b08": "nir", "b8a": "nir08", "b09": "water_vapour", "b10": "cirrus", "b11": "swir16",
    "b12": "swir22",
    "sr_b1": "coastal", "sr_b2": "blue", "sr_b3": "green", "sr_b4": "red", "sr_b5": "nir08", "sr_b6": "swir16",
    "sr_b7": "swir22", "st_b10": "lwir11",
    "red": "red", "green": "green", "blue": "blue", "nir": "nir", "near_infrared": "nir", "near_ir": "nir",
    "nir08": "nir08", "swir1": "swir16", "swir16": "swir16", "swir2": "swir22", "swir22": "swir22",
    "coastal": "coastal", "coastal_aerosol": "coastal", "rededge": "rededge1", "red_edge": "rededge1",
    "pan": "pan", "panchromatic": "pan",
    "vv": "vv", "vh": "vh", "hh": "hh", "hv": "hv",
}
GENERIC_BAND = re.compile(r"(band_?)?\d+|b\d|")  # band_1, band1, Band 1, b1, 1, empty: no meaning
# Sentinel-2 band names as Earth Engine and EuroSAT write them (upper-case B, no zero): B2 = B02. A lower-case
# "b1" (a GDAL default) stays generic.
SENTINEL2_SHORT = re.compile(r"B(\d{1,2})(A?)")
# SNAP / ESA SAR band names: Sigma0_VV, Gamma0_VH_db, Amplitude_HH, Intensity_HV
SAR_PRODUCT = re.compile(r"(?:sigma0|gamma0|beta0|amplitude|intensity)_(vv|vh|hh|hv)(?:_db)?")


def canonical_band(name: str) -> str | None:
    """The band's canonical name, or None for a generic description that says nothing about the band."""
    short = SENTINEL2_SHORT.fullmatch(str(name).strip())
    if short:
        return BAND_ALIASES.get(f"b{int(short.group(1)):02d}{short.group(2).lower()}".replace("b08a", "b8a"))
    key = re.sub(r"[^0-9a-z]+", "_", str(name).strip().lower()).strip("_")
    if key in BAND_ALIASES:
        return BAND_ALIASES[key]
    sar = SAR_PRODUCT.fullmatch(key)
    if sar:
        return sar.group(1)
    return None if GENERIC_BAND.fullmatch(key) else key


BAND_ORDER = ("coastal", "blue", "green", "red", "rededge1", "rededge2", "rededge3", "nir", "nir08",
              "water_vapour", "cirrus", "swir16", "swir22", "lwir11", "pan", "vv", "vh", "hh", "hv")
BandSet = frozenset[str] | int


def band_set(names: Sequence[str]) -> BandSet:
    """A scene's band set: its canonical names when every band is named (and no two alike), else its count."""
    canonical = [canonical_band(name) for name in names]
    if None in canonical or len(set(canonical)) < len(canonical):
        return len(names)
    return frozenset(canonical)  # type: ignore[arg-type]


def ordered(names: frozenset[str]) -> tuple[str, ...]:
    """Channel order: :data:`BAND_ORDER`, then other names alphabetically."""
    return tuple(sorted(names, key=lambda n: (BAND_ORDER.index(n) if n in BAND_ORDER else len(BAND_ORDER), n)))


def describe(bands: BandSet) -> str:
    return f"{bands} unnamed band(s)" if isinstance(bands, int) else f"bands [{', '.join(ordered(bands))}]"


@dataclass(frozen=True)
class BandChoice:
    """The domain's band set and, per scene, which of its bands give it (1-based) or why it is rejected."""

    bands: BandSet
    channel_names: tuple[str, ...]
    selection: dict[str, tuple[int, ...]]  # scene → 1-based positions among its data bands, in channel order
    rejected: dict[str, str]  # scene → reason (without the path)
    candidates: list[dict[str, object]] = field(default_factory=list)  # every set, for the report


def choose_band_set(scene_bands: dict[str, Sequence[str]], key: str) -> BandChoice:
    """The band set that keeps the most of ``scene_bands`` ({scene: its data bands' names}), and each scene's part.

    Args:
        scene_bands: every readable scene's data-band names, in band order.
        key: the config key named in reasons (``data.<domain>.geotiff.bands``).
    """
    sets = {scene: band_set(names) for scene, names in scene_bands.items()}
    having = Counter(sets.values())
    order = _named_order(scene_bands, sets)
    givers = {candidate: [scene for scene, bands in scene_bands.items() if _pick(candidate, bands, order) is not None]
              for candidate in having}
    chosen = min(givers, key=lambda c: (-len(givers[c]) * _size(c), -len(givers[c]), -having[c],
                                         isinstance(c, int), describe(c)))
    channels = tuple(f"band_{i}" for i in range(1, chosen + 1)) if isinstance(chosen, int) else ordered(chosen)
    selection, rejected = {}, {}
    for scene, bands in scene_bands.items():
        picked = _pick(chosen, bands, order)
        if picked is None:
            rejected[scene] = (f"{describe(sets[scene])} ({having[sets[scene]]} scene(s) have this set) lack the "
                               f"domain's {describe(chosen)}, which {len(givers[chosen])} of {len(sets)} scenes "
                               f"give; set {key} to choose the bands")
        else:
            selection[scene] = picked
    candidates = [{"bands": describe(c), "scenes_with_it": having[c], "scenes_giving_it": len(givers[c])}
                  for c in sorted(givers, key=lambda c: (-len(givers[c]) * _size(c), describe(c)))]
    return BandChoice(chosen, channels, selection, rejected, candidates)


def _named_order(scene_bands: dict[str, Sequence[str]], sets: dict[str, BandSet]) -> dict[int, tuple[str, ...]]:
    """Per band count, the most common order of canonical names among named scenes of that count: a named scene
    joins an unnamed set of its size only in that order (an RGB and a BGR file are not the same three bands)."""
    orders: dict[int, Counter] = {}
    for scene, names in scene_bands.items():
        if not isinstance(sets[scene], int):
            orders.setdefault(len(names), Counter())[tuple(canonical_band(n) for n in names)] += 1
    return {size: min(counter, key=lambda o: (-counter[o], o)) for size, counter in orders.items()}


def _size(bands: BandSet) -> int:
    return bands if isinstance(bands, int) else len(bands)


def _pick(chosen: BandSet, bands: Sequence[str],
          named_order: dict[int, tuple[str, ...]] | None = None) -> tuple[int, ...] | None:
    """1-based positions of ``chosen`` among ``bands`` in channel order, or None when it lacks them."""
    canonical = [canonical_band(name) for name in bands]
    if isinstance(chosen, int):
        if len(bands) != chosen:
            return None
        named = None not in canonical and len(set(canonical)) == len(canonical)
        if named and named_order and tuple(canonical) != named_order.get(chosen, tuple(canonical)):
            return None  # the same count, another band order than the other named scenes of this size
        return tuple(range(1, chosen + 1))
    if not all(name in canonical for name in chosen):
        return None
    return tuple(canonical.index(name) + 1 for name in ordered(chosen))


def match_band(requested: str, names: Sequence[str]) -> list[int]:
    """1-based positions of the bands ``requested`` names (canonical names compared; a generic request such as
    ``band_2`` matches that position)."""
    wanted = canonical_band(requested)
    if wanted is None:
        digits = re.findall(r"\d+", str(requested))
        position = int(digits[0]) if digits else 0
        return [position] if 1 <= position <= len(names) else []
    return [i for i, name in enumerate(names, start=1) if canonical_band(name) == wanted]
