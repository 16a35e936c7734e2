"""params.yaml validation: one-line errors that name the key."""


import pytest

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
