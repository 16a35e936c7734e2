"""Names shared by the stages that write results and the report that reads them: protocol keys and each task's
primary metric. Kept apart (no torch, no scikit-learn) so the report names a column without importing a trainer."""

from __future__ import annotations

CLASSIFICATION_METRICS = ("acc", "balanced_acc", "macro_f1", "auroc")
PRIMARY_METRIC = {"cls": "auroc", "seg": "miou", "det": "map50"}
TASK_NAMES = {"cls": "classification", "seg": "segmentation", "det": "detection"}


def fraction_key(protocol: str, fraction: float) -> str:
    """Protocol name of a label-efficiency run, safe as a DVC column: ``linear_1pct``, ``linear_2_5pct``."""
    percent = f"{fraction * 100:g}".replace(".", "_")
    return f"{protocol}_{percent}pct"


def fraction_of(protocol: str, result: dict) -> float:
    """The label fraction a protocol of ``result`` ran at: the headline for ``linear`` / ``finetune``."""
    kind = protocol.split("_")[0]
    if protocol == kind:
        return float(result["label_fraction"])
    return next(float(f) for f in result["label_fractions"] if fraction_key(kind, f) == protocol)


def partner_protocol(task: str, protocol: str, other: str) -> str:
    """The protocol of ``other`` a protocol is compared with: the same one, except that nothing fine-tunes the
    classification floor (image statistics), whose linear probe is the trivial classifier at every fraction."""
    if task == "cls" and other == "floor":
        return protocol.replace("finetune", "linear", 1)
    return protocol
