"""Shared start-up of every stage: parse ``--domain``/``--init``, load and validate params.yaml."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from torch import nn

from pipeline.atomic import write_json
from pipeline.config import Config, ConfigError, load_config
from pipeline.models.backbone import create_backbone, provenance_dict
from pipeline.runtime import Compute, configure_runtime, resolve_compute


def start_stage(description: str, with_init: bool = False) -> tuple[Config, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--domain", help="a key of data: in params.yaml (e.g. medical, remote)")
    if with_init:
        parser.add_argument("--init", required=True, choices=["simclr", "imagenet", "random", "floor"])
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        config = load_config(args.params)
        if args.domain is not None:
            config.domain(args.domain)
    except ConfigError as error:
        sys.exit(f"error: {error}")
    configure_runtime(config.seed, config.runtime.torch_threads)
    return config, args


def stage_compute(config: Config) -> Compute:
    """Device and precision from ``runtime.*``; under torchrun each rank takes GPU ``LOCAL_RANK``."""
    try:
        return resolve_compute(
            config.runtime.device, config.runtime.precision, int(os.environ.get("LOCAL_RANK", "0")), config.runtime.compile
        )
    except ValueError as error:
        sys.exit(f"error: params.yaml: {error}")


class BackboneFactory:
    """Fresh weights of one initialisation on every call (each seed and fraction starts from the same
    weights); remembers where they came from, for the result's provenance."""

    def __init__(self, config: Config, domain: str, init: str, in_chans: int):
        self.config, self.domain, self.init, self.in_chans = config, domain, init, in_chans
        self.provenance: dict = {}

    def __call__(self) -> nn.Module:
        model, weights = create_backbone(
            self.config.model.backbone, self.init, self.in_chans, seed=self.config.seed,
            imagenet_weights=self.config.model.imagenet_weights,
            simclr_export=Path(self.config.paths.pretrain) / self.domain,
        )
        self.provenance = provenance_dict(weights)
        return model


def write_result(config: Config, domain: str, name: str, result: dict, started: float) -> None:
    """The stage's JSON, with its wall time (provenance only; never part of metrics.json)."""
    result["wall_s"] = round(time.perf_counter() - started, 1)
    write_json(Path(config.paths.evaluate) / domain / f"{name}.json", result)
