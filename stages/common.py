"""Shared start-up of every stage: parse ``--domain``/``--init``, load and validate params.yaml, seed.

Kept free of torch: the data stages (demo, ingest) start with this module alone. What the training stages
share beyond it (backbone factory, device and precision) is in :mod:`stages.training_common`.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

from pipeline.atomic import write_json
from pipeline.config import Config, ConfigError, load_config
from pipeline.seeding import configure_runtime


def start_stage(description: str, with_init: bool = False, uses_torch: bool = True,
                tasks: list[str] | None = None,
                options: Callable[[argparse.ArgumentParser], None] | None = None) -> tuple[Config, argparse.Namespace]:
    """Parsed arguments (``--domain``, ``--init`` with ``with_init``, ``--task`` one of ``tasks``, a stage's own
    ``options``) and the validated config, with every generator seeded, torch's too if ``uses_torch``.

    Objects alive after the stage's imports, and all objects at exit, are frozen (``gc.freeze``): neither the
    collector during the run nor the interpreter's final collection walks torch's and timm's objects again
    (that final collection alone took ~2 s of each training stage on a 2-core CPU).
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--domain", help="a key of data: in params.yaml (e.g. medical, remote)")
    if with_init:
        parser.add_argument("--init", required=True, choices=["simclr", "imagenet", "random"])
    if tasks:
        parser.add_argument("--task", required=True, choices=tasks)
    parser.add_argument("--params", default="params.yaml")
    if options:
        options(parser)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        config = load_config(args.params)
        if args.domain is not None:
            config.domain(args.domain)
    except ConfigError as error:
        sys.exit(f"error: {error}")
    configure_runtime(config.seed, config.runtime.torch_threads, uses_torch)
    gc.freeze()
    atexit.register(gc.freeze)
    return config, args


def write_result(config: Config, domain: str, name: str, result: dict, started: float) -> None:
    """The stage's JSON, with its wall time (provenance only; never part of metrics.json)."""
    result["wall_s"] = round(time.perf_counter() - started, 1)
    write_json(Path(config.paths.evaluate) / domain / f"{name}.json", result)
