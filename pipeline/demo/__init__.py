"""The embedded demo data set: real DICOM (a CT phantom) and GeoTIFF (a Sentinel-2-like scene set) files the
pipeline ingests as it would a user's folder. This module says which generator writes which preset's files."""

from __future__ import annotations

from pathlib import Path

from pipeline.config import DemoConfig
from pipeline.demo.medical import MedicalDemoSpec, write_medical_demo
from pipeline.demo.remote import RemoteDemoSpec, write_remote_demo


def write_demo(kind: str, cfg: DemoConfig, out_dir: Path, seed: int) -> None:
    """Write the demo of ``kind`` (a preset's ``demo`` field) into ``out_dir``."""
    writers = {
        "medical": lambda: write_medical_demo(out_dir, MedicalDemoSpec(**cfg.medical.model_dump()), seed),
        "remote": lambda: write_remote_demo(out_dir, RemoteDemoSpec(**cfg.remote.model_dump()), seed),
    }
    writers[kind]()
