"""Which bands a remote-sensing domain learns from: band names that mean something, and one band set per domain.

Real archives mix sensors in one folder: 4-band PlanetScope next to 13-band Sentinel-2, single-band SAR, RGB
quick-looks. A domain has one channel set, so ingest first reads every scene's header and chooses it:

* **Names that carry meaning.** A band description or band-file token is matched through :data:`BAND_ALIASES`
  (data, not code): Sentinel-2 tokens (``B04`` = red, ``B08`` = nir, ``B8A`` = nir08 …), Landsat Collection 2 names
  (``SR_B4`` = red …), common names (``Red``, ``NIR``, ``near infrared``), SAR polarisations (``VV``, ``VH``).
  Another non-generic description (``ndvi``, ``elevation``) is its own name. Generic descriptions (``band_1``,
  ``Band 1``, ``b1``, ``1``, empty) say nothing: they never make two scenes differ, and match only by position.
* **One band set.** With ``bands: null`` the set is the one most scenes have. Each scene's band set is its
  canonical names when every data band is named (order does not matter), else just its band count. The set
  the most scenes have exactly wins (ties: the one more scenes can give, then named before unnamed, then more
  bands, then the names), so the choice never depends on file order. A named set is then given by every scene
  that has those bands (in any order, with others besides: a 13-band Sentinel-2 scene gives its 4 of an RGBN
  set); an unnamed set of N bands by every scene of N data bands.
  Channels follow :data:`BAND_ORDER` (wavelength, then polarisation, then other names alphabetically). Every scene
  that does not share the set is rejected with a reason that lists its band set, how many scenes have it, and
  the key to set.
* **Requested bands** (``bands: [nir, red, green]`` or 1-based indexes) are matched by the same names.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

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


def canonical_band(name: str) -> str | None:
    """The band's canonical name, or None for a generic description that says nothing about the band."""
    key = re.sub(r"[^0-9a-z]+", "_", str(name).strip().lower()).strip("_")
    if key in BAND_ALIASES:
        return BAND_ALIASES[key]
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


def choose_band_set(scene_bands: dict[str, Sequence[str]], key: str) -> BandChoice:
    """The band set most scenes of ``scene_bands`` ({scene: its data bands' names}) have, and each scene's part.

    Args:
        scene_bands: every readable scene's data-band names, in band order.
        key: the config key named in reasons (``data.<domain>.geotiff.bands``).
    """
    sets = {scene: band_set(names) for scene, names in scene_bands.items()}
    having = Counter(sets.values())
    shared = {candidate: sum(_pick(candidate, bands) is not None for bands in scene_bands.values())
              for candidate in having}
    chosen = min(shared, key=lambda c: (-having[c], -shared[c], isinstance(c, int), -_size(c), describe(c)))
    channels = tuple(f"band_{i}" for i in range(1, chosen + 1)) if isinstance(chosen, int) else ordered(chosen)
    selection, rejected = {}, {}
    for scene, bands in scene_bands.items():
        picked = _pick(chosen, bands)
        if picked is None:
            rejected[scene] = (f"{describe(sets[scene])} ({having[sets[scene]]} scene(s) have this set) lack the "
                               f"domain's {describe(chosen)}, which {shared[chosen]} of {len(sets)} scenes share; "
                               f"set {key} to choose the bands")
        else:
            selection[scene] = picked
    return BandChoice(chosen, channels, selection, rejected)


def _size(bands: BandSet) -> int:
    return bands if isinstance(bands, int) else len(bands)


def _pick(chosen: BandSet, bands: Sequence[str]) -> tuple[int, ...] | None:
    """1-based positions of ``chosen`` among ``bands`` in channel order, or None when it lacks them."""
    if isinstance(chosen, int):
        return tuple(range(1, chosen + 1)) if len(bands) == chosen else None
    canonical = [canonical_band(name) for name in bands]
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
