"""Shared start-up of every stage: parse ``--domain``/``--init``, load and validate params.yaml."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from pipeline.config import Config, ConfigError, load_config
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
