"""Check a preset by eye on a folder of your own: ingest it as the pipeline would, draw the report's gallery.

The report's augmentation gallery (one training chip per class and two SimCLR views, drawn as the preset's
display spec says) for any source folder and preset, without running the pipeline. Ingest runs into a
temporary folder with ``params.yaml``'s section for the preset's kind of data, ``chip_size`` and ``image_size``
as given. For example, on real chest X-rays written as DICOM by ``bench/realdata_as_dicom.py``::

    python bench/preset_gallery.py /tmp/cxr_dicom medical_xray docs/figures/gallery_medical_xray.png
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from pipeline.report.tables import figures
from pipeline.config_data import DomainDataConfig
from pipeline.data.chips import load_chipset
from pipeline.ingest.folder import ingest_folder
from pipeline.presets import PRESETS
from pipeline.report.build import gallery_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path)
    parser.add_argument("preset", choices=sorted(PRESETS))
    parser.add_argument("out", type=Path, help="the PNG to write")
    parser.add_argument("--chip-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--chips", type=int, default=6, help="rows: one chip per class, at most this many")
    args = parser.parse_args()
    cfg = DomainDataConfig(preset=args.preset, source=str(args.source), chip_size=args.chip_size)
    with tempfile.TemporaryDirectory() as cache:
        report = ingest_folder(args.source, cfg, PRESETS[args.preset], 0, Path(cache))
        chips = load_chipset(cache)
        rows, titles = gallery_rows(chips, PRESETS[args.preset], args.image_size, 0, args.chips)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        figures.augmentation_gallery(rows, titles, args.out, f"{args.source.name}: {args.preset}")
    print(json.dumps({"files": report["files"], "intensity": report["intensity"], "figure": str(args.out)}))


if __name__ == "__main__":
    main()
