"""What the report says about how long the transfer tasks trained, and where that was too short.

A fine-tuned network that scores below a linear probe on its own frozen features, or a segmenter or detector
below the trivial floor, was not trained long enough to say anything about its initialisation; the report says
so next to the numbers, with the params key to raise, instead of letting the table suggest a verdict.
"""

from __future__ import annotations

import numpy as np

from pipeline.protocols import PRIMARY_METRIC
from pipeline.report.tables import HEADLINE_METRIC, INIT_ORDER, fraction_title, metric_name, trained_result
from pipeline.report.verdict import comparison_sentence
from pipeline.report.comparisons import Comparison
from pipeline.report.document import Bullets, Document, Paragraph
from pipeline.protocols import fraction_key

FLAGGED_INITS = ("random", "imagenet", "simclr")
# a fine-tune that kept its LP-FT start scores the probe's own predictions through a float32 head instead of
# scikit-learn's float64: equal up to ~1e-4, which is not under-training
PROBE_TOLERANCE = 0.005


def budget_sentence(results: dict[str, dict], what: str) -> str:
    """The budget a task's stages ran with and what the runs did with it (steps, best step, early stops)."""
    trained = {init: result for init, result in results.items() if "finetune_budget" in result}
    if not trained:
        return ""
    budget = next(iter(trained.values()))["finetune_budget"]
    epochs = f"{budget['epochs']:g} epoch{'' if budget['epochs'] == 1 else 's'}"
    length = f"{budget['steps']} steps" if budget.get("steps") else (
        f"{epochs} over the labelled subset, at least {budget['min_steps']} steps")
    records = [run["training"] for result in trained.values() for runs in result["per_seed"].values()
               for run in runs if "training" in run]
    validated = [record for record in records if record["val_curve"]]
    if records and not validated:
        choice = "the last weights scored (one validation would have had nothing to choose between)"
    else:
        stop = (f"early stop after {budget['patience']} validations without gain" if budget["patience"]
                else "no early stop")
        choice = f"the weights with the best validation score kept, {stop}"
    ran = ""
    if records:
        ran = (f" Runs took {np.mean([r['steps_run'] for r in records]):.0f} of "
               f"{np.mean([r['steps_planned'] for r in records]):.0f} planned steps on average; "
               f"{sum(r['stopped_early'] for r in records)} of {len(records)} stopped early.")
        started = [r for r in validated if r["val_curve"][0][0] == 0]
        if started:
            kept = sum(r["best_step"] == 0 for r in started)
            ran += f" In {kept} of {len(started)} the starting point (the linear probe) stayed the best on validation."
    return f"{what} budget ({budget['key']}): {length}, batch {budget['batch_size']}, lr {budget['lr']:g}, {choice}.{ran}"


def finetune_flags(cls: dict, label_fraction: float, fractions: list[float],
                   key: str = "evaluate.finetune") -> list[str]:
    """One line per init and label fraction where fine-tuning scored below the linear probe on the same
    backbone by more than :data:`PROBE_TOLERANCE` (means over seeds of the headline metric)."""
    pairs = {f: (fraction_key("finetune", f), fraction_key("linear", f)) for f in fractions}
    pairs.setdefault(label_fraction, ("finetune", "linear"))  # the headline, when the sweep does not hold it
    flags = []
    for init in (i for i in INIT_ORDER if i in FLAGGED_INITS and i in cls):
        for fraction, (finetuned, probed) in sorted(pairs.items()):
            tuned, probe = cls[init].get(finetuned), cls[init].get(probed)
            if tuned and probe and tuned[HEADLINE_METRIC] < probe[HEADLINE_METRIC] - PROBE_TOLERANCE:
                flags.append(f"{init}, {fraction_title(fraction)} labels: fine-tuned {metric_name(HEADLINE_METRIC)} "
                             f"{tuned[HEADLINE_METRIC]:.3f} < linear probe {probe[HEADLINE_METRIC]:.3f} on the same "
                             f"backbone: under-trained, raise {key}.epochs")
    return flags


def below_floor_flags(by_init: dict, protocol: str, metric: str, key: str) -> list[str]:
    """One line per network whose transfer result is below the trivial floor's (means over seeds)."""
    floor = by_init.get("floor", {}).get(protocol)
    if not floor:
        return []
    return [f"{init}: {metric_name(metric)} {by_init[init][protocol][metric]:.3f} ≤ the trivial floor's "
            f"{floor[metric]:.3f}: under-trained, raise {key}.epochs"
            for init in INIT_ORDER if init in FLAGGED_INITS and protocol in by_init.get(init, {})
            and by_init[init][protocol][metric] <= floor[metric]]


def training_block(document: Document, budget: str, flags: list[str]) -> None:
    """The training budget a table's numbers came from, and the results it left under-trained."""
    if budget:
        document.add(Paragraph(budget))
    if flags:
        document.add(Paragraph("Under-trained (these numbers say nothing about the initialisation):"), Bullets(flags))


def transfer_findings(document: Document, comparisons: list[Comparison], domain: str, task: str,
                      results: dict[str, dict], by_init: dict, what: str, key: str) -> None:
    """Under a segmentation or detection table: SimCLR's comparisons, the training budget, under-training flags."""
    fraction = trained_result(results)["label_fraction"]
    sentence = comparison_sentence(comparisons, domain, task, "finetune", fraction,
                                   f"{what}, {fraction_title(fraction)} labels: ")
    if sentence:
        document.add(Bullets([sentence]))
    training_block(document, budget_sentence(results, what),
                   below_floor_flags(by_init, "finetune", PRIMARY_METRIC[task], key))
