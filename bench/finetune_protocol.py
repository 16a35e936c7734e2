"""Linear probe against fine-tuning on one ingested domain: the check behind docs/finetuning.md.

Runs the evaluate (classification), segment or detect stage's library code on a chip cache that ``stages.ingest``
wrote, for the chosen initialisations, label fractions and seeds, with ``--set`` overrides of params.yaml
(as ``dvc exp run -S`` would), and prints one JSON line per (init, protocol) plus the wall time. Nothing is
written into the repository. Usage::

    python -m stages.ingest --domain pneu --params /tmp/dev/params.yaml
    python bench/finetune_protocol.py --params /tmp/dev/params.yaml --domain pneu --inits imagenet random \\
        --fractions 0.1 1.0 --set evaluate.finetune.epochs=10
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import parse_config  # noqa: E402
from pipeline.data.chips import load_chipset  # noqa: E402
from pipeline.presets import PRESETS  # noqa: E402
from pipeline.seeding import configure_runtime  # noqa: E402


def apply_override(raw: dict, assignment: str) -> None:
    """``a.b.c=value`` (value parsed as YAML) into the nested params mapping."""
    key, _, value = assignment.partition("=")
    *parents, leaf = key.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = yaml.safe_load(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--domain", required=True, help="a key of data: whose chip cache ingest wrote")
    parser.add_argument("--task", choices=["cls", "seg", "det"], default="cls")
    parser.add_argument("--inits", nargs="+", default=["imagenet", "random"])
    parser.add_argument("--fractions", nargs="+", type=float, default=[0.1, 1.0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--set", action="append", default=[], help="params override, e.g. evaluate.finetune.lr=3e-4")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    raw = yaml.safe_load(args.params.read_text())
    for assignment in args.set:
        apply_override(raw, assignment)
    config = parse_config(raw, str(args.params))
    evaluate = config.evaluate.model_copy(update={
        "seeds": args.seeds, "linear_seed_count": len(args.seeds),  # probe and fine-tune on the same subsets
        "label_fraction": args.fractions[0], "label_fractions": args.fractions,
        "transfer_sweep": ["finetune", "seg", "det"]})
    configure_runtime(config.seed, config.runtime.torch_threads)
    from stages.training_common import BackboneFactory

    chips = load_chipset(Path(config.paths.ingest) / args.domain)
    preset = PRESETS[config.domain(args.domain).preset].augment
    for init in args.inits:
        started = time.perf_counter()
        factory = BackboneFactory(config, args.domain, init, chips.in_chans)
        if args.task == "cls":
            from pipeline.transfer.classification import evaluate_classification

            result = evaluate_classification(factory, chips, evaluate, preset, {"init": init})
        elif args.task == "seg":
            from pipeline.transfer.segmentation import evaluate_segmentation

            result = evaluate_segmentation(factory, config.model.backbone, chips, evaluate, preset, {"init": init})
        else:
            from pipeline.transfer.detection import evaluate_detection

            result = evaluate_detection(factory, config.model.backbone, chips, evaluate, preset, {"init": init})
        for protocol, summary in result["summary"].items():
            runs = result["per_seed"][protocol]
            training = [run["training"] for run in runs if "training" in run]
            print(json.dumps({"domain": args.domain, "init": init, "protocol": protocol,
                              **{k: round(v, 4) for k, v in summary.items() if not k.endswith("_ci95")},
                              "steps_run": [t["steps_run"] for t in training],
                              "best_step": [t["best_step"] for t in training],
                              "val_curve": training[0]["val_curve"] if training else []}), flush=True)
        print(json.dumps({"domain": args.domain, "init": init, "wall_s": round(time.perf_counter() - started, 1),
                          "overrides": args.set}), flush=True)


if __name__ == "__main__":
    main()
