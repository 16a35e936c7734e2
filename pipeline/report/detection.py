"""The report's detection section: mAP table, computed conclusion and a truth-vs-prediction box figure.

Drawn only from the detect stages' JSONs and the ingest chip cache; absent when ``grid.det_domains`` is
empty or a domain has no detection results.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.report import figures
from pipeline.data.chips import load_chipset
from pipeline.report.display import display_views
from pipeline.presets import DomainPreset
from pipeline.report.comparisons import Comparison
from pipeline.report.tables import INIT_ORDER, detection_table, trained_result
from pipeline.report.training import transfer_findings
from pipeline.report.document import Document, Figure, Heading, Paragraph


def detection_section(document: Document, ingest_dir: Path, figure_dir: Path, domain: str, preset: DomainPreset,
                      results: dict[str, dict], metrics: dict, comparisons: list[Comparison]) -> None:
    """Table, conclusion and example boxes of the detection transfer, when the detect stages ran."""
    if "det" not in metrics:
        return
    det, first = metrics["det"], trained_result(results)
    document.add(Heading(f"{domain}: detection", 2), Paragraph(
        f"{first['architecture']} with an FPN on the same backbone, fine-tuned at {first['label_fraction']:.0%} of "
        f"the annotated training chips; {first['n_test']} test chips with {first['n_test_boxes']} boxes "
        f"({', '.join(first['classes'])}); COCO mAP, best mean per column in bold."), detection_table(det))
    transfer_findings(document, comparisons, domain, "det", results, det, "Detection", "evaluate.detection")
    inits = [init for init in INIT_ORDER if init in results and results[init].get("examples", {}).get("chips")]
    if not inits:
        return
    chips = load_chipset(ingest_dir / domain)
    shown = results[inits[0]]["examples"]["chips"]
    images = [display_views(np.asarray(chips.images[i], dtype=np.float32), chips.channel_names, preset.display)[0]
              for i in shown]
    columns = {"truth": [chips.boxes[i] for i in shown],
               **{init: [np.asarray(b, np.float32).reshape(-1, 6) for b in results[init]["examples"]["predicted"]]
                  for init in inits}}
    document.add(Figure(figures.detection_boxes(
        images, columns, first["classes"], figure_dir / f"detection_{domain}.png",
        f"{domain}: detection (seed {first['seeds'][0]}, score ≥ 0.3)"),
        f"{domain}: test chips, true boxes and each initialisation's detections (first seed)"))
