"""Experiment configs: YAML files loaded into dataclasses.

- Unknown keys are errors that list the valid keys of that section.
- ``key=value`` overrides (``train.epochs=5``, ``data.crop_size=[64,80]``) are
  parsed as YAML scalars and type-checked against the field.
- A file may start from another with ``_base_: other.yaml`` (path relative to
  the file); its own keys then override the base's, section by section.
- The resolved config is plain data (``to_dict``) so it can be written to the
  run directory and stored in every checkpoint.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from labelreg.storage import write_text_atomic


class ConfigError(ValueError):
    """A config file or override that cannot be applied; the message names the key."""


@dataclass
class DataConfig:
    dataset: str = "voc"  # "voc" | "nyu" | "camvid"
    # VOC: folder holding VOC2012 (or VOCdevkit); NYU: folder of the .mat files; CamVid: the CamVid folder or its parent
    root: str = "data/synthetic"
    sbd_root: str | None = None  # SBD benchmark_RELEASE, needed for split "trainaug"
    mat_path: str | None = None  # NYU: defaults to <root>/nyu_depth_v2_labeled.mat
    splits_path: str | None = None  # NYU: defaults to <root>/splits.mat
    mapping_path: str | None = None  # NYU: defaults to <root>/classMapping40.mat
    train_split: str = "train"
    val_split: str = "val"
    synthesize_if_missing: bool = False  # write `labelreg synth` data at root when absent
    synth_labeled: int = 300
    synth_depth_only: int = 2000
    synth_size: list[int] = field(default_factory=lambda: [128, 160])
    synth_seed: int = 0
    canvas: list[int] | None = None  # CPU: fit-and-pad every sample to H×W so batches stack (VOC)
    crop_size: list[int] | None = None  # device: training output size H×W (None = keep)
    eval_size: list[int] | None = None  # device: evaluation resize H×W (None = keep)
    hflip: bool = True
    crop_area: list[float] | None = field(default_factory=lambda: [0.08, 1.0])
    crop_aspect: list[float] = field(default_factory=lambda: [0.75, 4.0 / 3.0])
    scale: list[float] | None = None  # scale jitter range, used when crop_area is None
    depth_interp: str = "nearest"  # "nearest" | "masked_bilinear"
    batch_size: int = 12
    eval_batch_size: int = 12
    num_workers: int = 2
    train_limit: int | None = None  # use only the first N training samples (small-data regimes, demos)
    val_limit: int | None = None


@dataclass
class ModelConfig:
    name: str = "label_autoencoder"  # "label_autoencoder" or a segmenter in labelreg.models.MODELS
    num_classes: int | None = None  # None: taken from the dataset
    variant: str = "128"  # autoencoder variant: "32" | "128" | "256"
    pretrained_backbone: str | None = None  # None, "imagenet" (torchvision download) or a local .pth path
    freeze_bn: bool = False  # backbone BatchNorm statistics frozen (§3.5.1)
    freeze_backbone: bool = False  # backbone parameters never trained
    freeze_backbone_epochs: int = 0  # backbone frozen for the first N epochs, then trained (pretrained recipe)
    calibration_batches: int = 10  # batches used to estimate zoom-out feature normalisation
    init_from: str | None = None  # start from this checkpoint's model weights (e.g. the previous stage of a recipe)
    options: dict[str, Any] = field(default_factory=dict)  # keyword options of the model builder


@dataclass
class OptimConfig:
    optimizer: str = "adam"  # "adam" | "sgd"
    lr: float = 1e-4
    weight_decay: float = 0.0
    momentum: float = 0.9
    group_lr: dict[str, float] = field(default_factory=dict)  # learning rate per named parameter group
    schedule: str = "step"  # "step" | "poly" | "constant"
    milestones: list[int] = field(default_factory=list)  # step schedule: epochs at which lr *= gamma
    gamma: float = 0.1
    poly_power: float = 0.9
    grad_clip: float | None = None  # max global grad norm


@dataclass
class RegularizerConfig:
    """Phase two (thesis §5.3.3, §5.4): an auxiliary branch through the phase-one autoencoder."""

    kind: str = "none"  # "none" | "decoder" | "encoder" (thesis Fig. 5.1 / Fig. 5.4)
    autoencoder: str | None = None  # phase-one checkpoint (runs/<ae>/checkpoints/best.pt)
    # ablation (Table 5.2): skip phase one, train a randomly initialised decoder; training requires frozen: false
    random_init: bool = False
    variant: str = "128"  # autoencoder variant when random_init (otherwise the checkpoint's)
    frozen: bool = True  # ablation: False trains the decoder too (refused for the encoder, a regression target)
    loss: str = "ce"  # decoder branch: "ce" against the labels, or "mse" between softmax and one-hot
    # weight of the auxiliary loss term "aux"; None: the loss's default (tasks.segmentation.DECODER_AUX_WEIGHTS:
    # CE 0.5, the thesis' best; "†" MSE 1.0, ours — the thesis' value is only in its Fig. 5.5)
    weight: float | None = None
    # feature the auxiliary 1×1 conv reads (None: automatic, see regularizer.choose_tap; the run's resolved.json
    # records the one it used)
    tap: str | None = None
    # decoder branch, training only: decode a random aux_crop×aux_crop-cell window of the predicted code
    # (1 cell = 16 px) instead of all of it — cost ∝ window area; None decodes everything (thesis)
    aux_crop: int | None = None
    # write <run>/diagnostics.json: gradient agreement at the backbone and code agreement (tasks/diagnostics.py);
    # measured on copies with the random generators restored, so the run's steps are unchanged
    diagnostics: bool = False


@dataclass
class DepthConfig:
    """Joint depth + segmentation on NYUv2 (thesis §5.5; the ``depth`` package, ``labelreg train-depth``)."""

    depth_only: str | None = None  # depth-only frames: HDF5 folder or RGB/16-bit-PNG list (None: none)
    depth_scale: float = 1000.0  # 16-bit depth PNG units per metre
    depth_only_limit: int | None = None  # use only the first N depth-only frames
    labeled_per_batch: int = 1  # at least this many fully labeled images in every mixed batch
    mixed_epochs: int = 0  # epochs on labeled + depth-only batches before the labeled-only phase
    inputs: str = "rgb"  # seg→depth model input: "seg" | "rgb" | "seg+rgb"
    supervision: str = "both_parts"  # two-part model: "both_parts" (§5.5.2) | "final" (single-part baseline)
    seg_loss: bool = True  # False: the "no seg loss" baseline
    depth_loss: bool = True  # False: the "no depth loss" baseline
    seg_weight: float = 1.0  # extra factor on segmentation terms (2.0: the "2x seg loss" baseline)
    balance: bool = True  # weight the terms so each contributes equally (running averages, §5.5.2.1)
    balance_window: int = 1  # epochs averaged for the balancing
    min_depth: float = 1e-3  # evaluation range (metres)
    max_depth: float | None = 10.0
    eigen_crop: bool = False  # evaluate inside Eigen's crop (rows 45:471, cols 41:601 of 480×640)
    eval_protocol: str = "train_size"  # "train_size": input resized to data.crop_size, predictions upsampled to
    # the ground truth for the metrics (§5.5.1 trains at 256×336) | "full": the model reads the evaluation image as is


@dataclass
class WeakConfig:
    """Weak supervision from image tags (thesis ch. 4; the ``labelreg.weak`` package, ``labelreg weak``)."""

    backbone: str = "vgg16"  # a name in labelreg.models.backbones.BACKBONES
    backbone_options: dict[str, Any] = field(default_factory=dict)  # keyword options of the backbone builder
    pretrained: str | None = None  # local weight file of the backbone (None: random init); never downloaded
    taps: list[str] | None = None  # backbone taps to concatenate (None: all; VGG-16: 13 conv layers, 4224)
    image_size: list[int] = field(default_factory=lambda: [256, 336])  # every image is resized to H×W (§4.4.1)
    grid_stride: int = 4  # taps resized to ⌈H/s⌉×⌈W/s⌉ (1/4: 64×84 for 256×336)
    global_feature: bool = True  # append the backbone's global (fc7) feature for the segmentation model
    cache: bool = True  # store features on disk; False: recompute them from the images when needed
    cache_dtype: str = "float16"  # "float16" | "float32"
    feature_batch_size: int = 8
    classes: list[int] | None = None  # foreground classes to localize (None: every class tagged in training)
    loc_loss: str = "global_softmax"  # "global_softmax" (eq. 4.3.2) | "pixel_softmax" (eq. 4.3.1)
    loc_hidden: int = 1024
    loc_lr: float = 1e-4
    loc_epochs: int = 3
    loc_milestones: list[int] = field(default_factory=lambda: [2])  # epochs after which loc_lr *= loc_gamma
    loc_gamma: float = 0.1
    loc_batch_size: int = 1  # images per step
    sampler: str = "diverse"  # "diverse" (eqs. 4.3.3-4.3.5) | "spatial" | "topk" | "dense" (Table 4.3)
    k: int = 20  # points per present class
    background_k: int | None = None  # background points per image (None: k)
    spatial_sigma: float = 0.1  # "spatial": Gaussian proximity width, fraction of the grid diagonal
    dense_threshold: float = 0.2  # "dense": background where every present class' normalised score is below
    seg_hidden: int = 512
    seg_optimizer: str = "adam"  # "adam" | "sgd"
    seg_lr: float = 1e-6
    seg_epochs: int = 2
    seg_batch_size: int = 100  # points per step (point supervision), pooled over all training images
    dense_baseline: bool = True  # also train the same head on dense ground truth, for comparison
    dense_lr: float | None = None  # None: seg_lr
    dense_epochs: int | None = None  # None: seg_epochs
    dense_batch_size: int = 4  # images per step of the dense baseline
    # Tags-only pretraining of the backbone (``labelreg weak pretrain``; docs/weak.md): a stand-in for ImageNet
    # weights offline. The backbone is trained as a multi-label tag classifier on the training split and
    # <run>/pretrain/backbone.pt then replaces it in every later step. 0 = off (the thesis setup).
    pretrain_epochs: int = 0
    pretrain_lr: float = 3e-3  # AdamW peak learning rate (one-cycle: warm-up, then cosine decay)
    pretrain_weight_decay: float = 1e-4
    pretrain_batch_size: int = 16  # images per step
    pretrain_head: str = "zoomout"  # "zoomout": linear on the pooled zoom-out map + global feature | "global"
    pretrain_pool: str = "avg"  # pooling of the zoomout head's per-location scores: "avg" | "lse" (log-sum-exp)
    pretrain_crop_area: list[float] = field(default_factory=lambda: [0.6, 1.0])  # random crop area fraction


@dataclass
class EvalConfig:
    scales: list[float] = field(default_factory=lambda: [1.0])  # relative input scales
    short_sides: list[int] = field(default_factory=list)  # absolute shorter-side lengths (e.g. [256, 384])
    flip: bool = False  # also average the horizontally flipped prediction


@dataclass
class TrainConfig:
    epochs: int = 100
    max_steps: int | None = None  # stop early after this many optimizer steps
    eval_every: int = 1  # epochs
    log_every: int = 10  # steps
    seed: int = 0
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"
    amp: str = "none"  # "none" | "bf16" | "fp16" | "auto" (bf16 where native, else none: engine/precision.py)
    channels_last: bool = False
    compile: bool = False  # torch.compile the training forward (GPU; the first steps compile)
    sync_bn: bool = False  # torchrun on GPUs: BatchNorm statistics over the global batch
    find_unused_parameters: bool = False  # DDP: for models with parameters some steps do not use
    ddp_timeout: float = 1800.0  # DDP: seconds a rank waits in a collective for the others before the run ends
    best_metric: str = "miou"
    best_mode: str = "max"  # "max" | "min"
    # weight per named loss term, over the task's defaults (1, or e.g. the regularizer's "aux" weight); the
    # weights a run used are in its resolved.json
    loss_weights: dict[str, float] = field(default_factory=dict)
    # segmentation: "ce" | "asymmetric" (1/f_c-weighted, divided by the valid pixels, eq. 3.3.1)
    # | "asymmetric_weighted_mean" (divided by the summed weights, as torch's weighted mean) | "median_frequency" (SegNet)
    loss: str = "ce"
    images_to_log: int = 4  # example rows in TensorBoard's val/examples per evaluation; 0: none


@dataclass
class Config:
    name: str = "experiment"
    task: str = "autoencoder"
    output_dir: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    regularizer: RegularizerConfig = field(default_factory=RegularizerConfig)
    depth: DepthConfig = field(default_factory=DepthConfig)
    weak: WeakConfig = field(default_factory=WeakConfig)

    @property
    def run_dir(self) -> Path:
        # '..' cancels lexically, as check_run_name read it: 'link/../x' is output_dir/x even when link is a symlink
        return Path(self.output_dir) / os.path.normpath(self.name)


def check_run_name(name: str, output_dir: str) -> None:
    """``name`` is a folder inside ``output_dir`` (``--overwrite`` empties it): not empty, ``.``, absolute, led by
    ``..``, nor resolving to ``output_dir`` or above it. Sub-folders (``study/arm_seed0``) are fine."""
    output, run = Path(output_dir).resolve(), (Path(output_dir) / os.path.normpath(name)).resolve()
    parts = Path(os.path.normpath(name)).parts if name.strip() else ()
    if parts and parts[0] != ".." and not Path(name).is_absolute() and run != output and run not in output.parents:
        return
    raise ConfigError(f"name={name!r} does not name a folder inside output_dir={output_dir!r} (it is empty, '.', "
                      "absolute, leads out with '..' or resolves to the output folder); give a run name: name=my_run")


def _type_name(kind: Any) -> str:
    return getattr(kind, "__name__", None) or str(kind).replace("typing.", "")


def _coerce(value: Any, kind: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``kind``; return it converted (int → float, list → tuple…)."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: expected {_type_name(kind)}, got {value!r}")
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {kind.__name__} keys, got {value!r}")
        return _build(kind, value, key)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item_kind,) = typing.get_args(kind)
        return [_coerce(item, item_kind, f"{key}[{index}]") for index, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        key_kind, value_kind = typing.get_args(kind)
        return {_coerce(k, key_kind, key): _coerce(v, value_kind, f"{key}.{k}") for k, v in value.items()}
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind is float and isinstance(value, str):
        try:  # PyYAML reads "1e-4" (no dot) as a string; accept it where a float is expected
            return float(value)
        except ValueError:
            pass
    if kind is int and isinstance(value, bool):
        raise ConfigError(f"{key}: expected int, got {value!r}")
    if kind is str and isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # YAML reads variant=32 as a number; a name field wants the text
    if kind is Any or isinstance(value, kind):
        return value
    raise ConfigError(f"{key}: expected {_type_name(kind)}, got {value!r} ({type(value).__name__})")


def _build(cls: type, values: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        where = f"in section '{prefix}'" if prefix else "at the top level"
        raise ConfigError(f"unknown key(s) {unknown} {where}; valid keys: {', '.join(names)}")
    kwargs = {name: _coerce(value, hints[name], f"{prefix}.{name}" if prefix else name) for name, value in values.items()}
    return cls(**kwargs)


def _merge(base: dict, update: dict) -> dict:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: _base_ chain loops back to itself")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text (byte {error.start}); save the config as UTF-8") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from error
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    base = values.pop("_base_", None)
    if base is None:
        return values
    return _merge(_read_yaml(path.parent / base, seen + (path,)), values)


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    dotted, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as error:
        raise ConfigError(f"override {text!r}: cannot parse value: {error}") from error
    return dotted.strip().split("."), value


def apply_overrides(values: dict, overrides: list[str]) -> dict:
    values = dict(values)
    for text in overrides:
        path, value = parse_override(text)
        values = _merge(values, functools.reduce(lambda nested, part: {part: nested}, reversed(path), value))
    return values


def _check(condition: bool, key: str, value: Any, requirement: str) -> None:
    if not condition:
        raise ConfigError(f"{key}={value!r}: {requirement}")


def _check_pair(key: str, value: list | None, *, integer: bool = False, ordered: bool = False) -> None:
    """``value`` is None or two positive numbers (``ordered``: a range, low ≤ high)."""
    if value is None:
        return
    kind = "integers" if integer else "numbers"
    _check(len(value) == 2, key, value, f"give two {kind}, [height, width]" if integer else f"give two {kind}, [low, high]")
    _check(all(item > 0 for item in value), key, value, f"both values must be positive {kind}")
    if ordered:
        _check(value[0] <= value[1], key, value, "the range must be [low, high] with low ≤ high")


def validate(cfg: Config) -> Config:
    """Value ranges and shapes the types alone do not catch (e.g. ``train.epochs=0``, ``crop_size=[64]``)."""
    check_run_name(cfg.name, cfg.output_dir)
    train, data, optim = cfg.train, cfg.data, cfg.optim
    _check(train.max_steps is None or train.max_steps >= 1, "train.max_steps", train.max_steps, "must be at least 1 or null")
    for key in ("epochs", "eval_every", "log_every"):
        _check(getattr(train, key) >= 1, f"train.{key}", getattr(train, key), "must be at least 1")
    _check(train.images_to_log >= 0, "train.images_to_log", train.images_to_log, "must not be negative")
    _check(train.best_mode in ("max", "min"), "train.best_mode", train.best_mode, "choose 'max' or 'min'")
    _check(0 <= train.seed < 2**32, "train.seed", train.seed, "must lie in 0..2**32-1")
    _check(train.device in ("auto", "cpu", "cuda") or train.device.startswith("cuda:") and train.device[5:].isdigit(),
           "train.device", train.device, "choose auto, cpu, cuda or cuda:N")
    _check(0 < train.ddp_timeout < float("inf"), "train.ddp_timeout", train.ddp_timeout, "must be positive seconds")
    weights = train.loss_weights
    _check(all(0 <= v < float("inf") for v in weights.values()), "train.loss_weights", weights, "must be finite, ≥ 0")
    _check(train.amp in ("none", "bf16", "fp16", "auto"), "train.amp", train.amp, "choose none, bf16, fp16 or auto")
    for key in ("batch_size", "eval_batch_size"):
        _check(getattr(data, key) >= 1, f"data.{key}", getattr(data, key), "must be at least 1")
    _check(data.num_workers >= 0, "data.num_workers", data.num_workers, "must not be negative")
    for key, value in (("train_limit", data.train_limit), ("val_limit", data.val_limit)):
        _check(value is None or value >= 1, f"data.{key}", value, "must be at least 1, or null for all samples")
    for key in ("crop_size", "eval_size", "canvas", "synth_size"):
        _check_pair(f"data.{key}", getattr(data, key), integer=True)
    for key in ("crop_area", "crop_aspect", "scale"):
        _check_pair(f"data.{key}", getattr(data, key), ordered=True)
    if data.crop_area is not None:  # above 1 only as the upper bound (thesis §3.5.1: 0.5 to 2.0, zooming out)
        _check(data.crop_area[0] <= 1, "data.crop_area", data.crop_area, "area fractions: low bound must lie in (0, 1]")
    _check(0 < optim.lr <= 10, "optim.lr", optim.lr, "must be a learning rate in (0, 10]")  # NaN fails too
    _check(all(0 <= v <= 10 for v in optim.group_lr.values()), "optim.group_lr", optim.group_lr, "must be in [0, 10]")
    _check(optim.weight_decay >= 0, "optim.weight_decay", optim.weight_decay, "must not be negative")
    _check(0 <= optim.momentum < 1, "optim.momentum", optim.momentum, "must lie in [0, 1)")
    _check(optim.gamma > 0, "optim.gamma", optim.gamma, "must be positive")
    _check(optim.poly_power > 0, "optim.poly_power", optim.poly_power, "must be positive")
    _check(optim.grad_clip is None or optim.grad_clip > 0, "optim.grad_clip", optim.grad_clip, "must be > 0 or null")
    _check(all(epoch >= 0 for epoch in optim.milestones), "optim.milestones", optim.milestones, "must not be negative")
    return cfg


def config_from_dict(values: dict, overrides: list[str] = ()) -> Config:
    """A validated ``Config`` from plain data and ``key=value`` overrides."""
    return validate(_build(Config, apply_overrides(values, list(overrides))))


def load_config(path: str | Path, overrides: list[str] = ()) -> Config:
    """Read a YAML config (following ``_base_``), apply ``key=value`` overrides, validate."""
    return config_from_dict(_read_yaml(Path(path)), overrides)


def to_dict(config: Any) -> dict:
    return dataclasses.asdict(config)


def save_config(config: Config, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, yaml.safe_dump(to_dict(config), sort_keys=False))
