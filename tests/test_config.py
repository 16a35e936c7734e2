"""params.yaml validation: one-line errors that name the key."""

import re

import pytest
import yaml

from pipeline.config import ConfigError, load_config, parse_config
from tests.fixtures.params import repo_params as _params
from tests.fixtures.paths import REPO


def test_repository_params_are_valid():
    config = load_config(REPO / "params.yaml")
    assert set(config.grid.domains) <= set(config.data)
    assert config.simclr.temperature > 0


def test_unknown_key_is_named():
    raw = _params()
    raw["simclr"]["temprature"] = 0.1
    with pytest.raises(ConfigError, match=r"simclr\.temprature: unknown key"):
        parse_config(raw)


def test_bad_value_is_named_in_one_line():
    raw = _params()
    raw["simclr"]["temperature"] = -1
    with pytest.raises(ConfigError) as error:
        parse_config(raw)
    assert "simclr.temperature" in str(error.value) and "\n" not in str(error.value)


def test_nested_domain_key_is_named():
    raw = _params()
    raw["data"]["medical"]["dicom"]["hu_windows"][0]["width"] = 0
    with pytest.raises(ConfigError, match=r"data\.medical\.dicom\.hu_windows\.0\.width"):
        parse_config(raw)


def test_split_fractions_must_sum_to_one():
    raw = _params()
    raw["data"]["remote"]["split_fractions"] = [0.5, 0.2, 0.2]
    with pytest.raises(ConfigError, match=r"data\.remote\.split_fractions"):
        parse_config(raw)


def test_grid_domain_without_data_section():
    raw = _params()
    raw["grid"]["domains"] = ["medical", "xray"]
    with pytest.raises(ConfigError, match="xray"):
        parse_config(raw)


def test_unknown_preset_is_named():
    raw = _params()
    raw["data"]["medical"]["preset"] = "ultrasound"
    with pytest.raises(ConfigError, match=r"data\.medical\.preset.*ultrasound"):
        parse_config(raw)


def test_unreadable_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_pretrain_launcher_must_be_python_or_torchrun():
    raw = _params()
    raw["runtime"]["pretrain_launcher"] = "torchrun --standalone --nproc_per_node=4"
    assert parse_config(raw).runtime.pretrain_launcher.startswith("torchrun")
    raw["runtime"]["pretrain_launcher"] = "rm -rf /"
    with pytest.raises(ConfigError, match=r"runtime\.pretrain_launcher: must start with"):
        parse_config(raw)


def test_resolve_compute_cpu_defaults_to_fp32_and_rejects_missing_cuda():
    import torch

    from pipeline.runtime import resolve_compute

    compute = resolve_compute("cpu", "auto")
    assert compute.device.type == "cpu" and compute.precision == "fp32"
    assert resolve_compute("cpu", "bf16").autocast().fast_dtype == torch.bfloat16
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="runtime.device: cuda"):
            resolve_compute("cuda", "auto")


def _documented_gpu_run() -> dict:
    """params.yaml with the ``-S key=value`` overrides of docs/scaling.md's GPU-scale block applied, as DVC
    applies them (each value read as YAML)."""
    block = (REPO / "docs" / "scaling.md").read_text().split("dvc exp run -n gpu-resnet50", 1)[1].split("```")[0]
    params = _params()
    for quoted, plain in re.findall(r"-S (?:'([^']*)'|(\S+))", block):
        key, value = (quoted or plain).split("=", 1)
        *parents, leaf = key.split(".")
        node = params
        for name in parents:
            node = node[name]
        node[leaf] = yaml.safe_load(value)
    return params


def test_the_documented_gpu_scale_run_is_valid_and_decouples_view_from_chip_size():
    config = parse_config(_documented_gpu_run())
    assert config.model.backbone == "resnet50" and config.runtime.precision == "bf16"
    assert config.simclr.image_size == 224 < config.data["medical"].chip_size == 256
    assert config.evaluate.finetune.image_size == 224 and config.runtime.pretrain_launcher.startswith("torchrun")


@pytest.mark.parametrize("key, value, match", [
    ("crop_scale", [0.8, 0.4], r"simclr\.crop_scale: .*low <= high"),
    ("crop_scale", [0.0, 1.0], r"simclr\.crop_scale\.0"),
    ("cls_domains", None, None),
])
def test_simclr_levers_and_task_domains_are_validated(key, value, match):
    raw = _params()
    if key == "cls_domains":
        raw["grid"]["cls_domains"] = ["xray"]
        with pytest.raises(ConfigError, match=r"grid\.cls_domains lists 'xray'"):
            parse_config(raw)
        return
    raw["simclr"][key] = value
    with pytest.raises(ConfigError, match=match):
        parse_config(raw)


def test_the_recipe_line_names_the_levers_only_when_set():
    config = parse_config(_params())
    assert "frozen" not in config.simclr.describe() and "crop scale" not in config.simclr.describe()
    raw = _params()
    raw["simclr"].update(crop_scale=[0.5, 1.0], freeze_stages=2, recalibrate_batchnorm=True)
    line = parse_config(raw).simclr.describe()
    assert "crop scale [0.5, 1.0], stem + 2 stages frozen, BatchNorm recalibrated" in line
