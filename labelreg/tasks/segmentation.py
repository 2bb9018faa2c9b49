"""Train a segmenter from ``labelreg.models.MODELS`` (``labelreg train-seg``), optionally with the
phase-two label-structure regularizer (``regularizer`` config section; thesis §5.3.3, §5.4); score
its checkpoints (single scale, or multi-scale and flipped, thesis §3.5.1); rebuild it from them.

torchvision's segmenters train too, as ``model.name: tv:deeplabv3_resnet50`` … (``models.tvseg``;
``model.options: {aux_loss: true}`` adds their auxiliary classifier as the ``psp_aux`` term); with
``regularizer.kind: decoder`` they are wrapped by the drop-in ``models.dropin.RegularizedOutputs``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from labelreg.config import Config, ConfigError, config_from_dict
from labelreg.data.build import build_augmentations, dataset_class_names, dataset_num_classes
from labelreg.data.transforms import denormalize
from labelreg.data.loader import Batch, to_device
from labelreg.engine import LoopSpec, claim_for_training, fit
from labelreg.losses import masked_cross_entropy, masked_one_hot_mse
from labelreg.models import MODELS, TORCHVISION_SEGMENTERS, LabelAutoencoder, build_segmenter
from labelreg.models.autoencoder import autoencoder_from_checkpoint, variant_from_weights
from labelreg.models.dropin import RegularizedOutputs
from labelreg.models.regularizer import DecoderRegularized, EncoderRegularized, aux_target, plain_segmenter_state
from labelreg.models.tvseg import TV_PREFIX, TV_TAPS, is_torchvision_name
from labelreg.runtime import current, resolve_device
from labelreg.storage import load_run_checkpoint
from labelreg.tasks.diagnostics import DiagnosticsRecord, finish_diagnostics, fixed_batch, with_diagnostics
from labelreg.tasks.class_weights import WEIGHTED_LOSSES, loss_class_weights, training_frequencies
from labelreg.tasks.evaluate import evaluate_segmentation, evaluation_loader, predict_at_size
from labelreg.tasks.inference import inference_sizes, predict_probabilities
from labelreg.tasks.resolved import write_resolved
from labelreg.tasks.start import start_label_map_run
from labelreg.viz import class_colours, image_grid, label_image, segmentation_figure, to_uint8_image

REGULARIZERS = ("none", "decoder", "encoder")
SEGMENTATION_LOSSES = ("ce", *WEIGHTED_LOSSES)  # tasks.class_weights: the weighted ones
# Default weight of the regularizer's term "aux" when regularizer.weight is null. Decoder branch, per
# auxiliary loss: CE 0.5, the thesis' best (§5.4.2: "relative weighting of 0.5 achieves the highest
# accuracy"); "†" MSE 1.0, our choice: the thesis swept this weight separately (Fig. 5.5; §5.4.2: "the
# weight parameter range is changed due to the difference in the dynamic range of values between MSE loss
# and cross-entropy loss") but its text gives no value. The summed-over-classes MSE's gradient with
# respect to logit k, 2p_k[(p_k − y_k) − Σ_c (p_c − y_c) p_c], is between a half and once CE's (p_k − y_k)
# on a pixel whose true class has probability 1/2 (and 2/C of it at a uniform softmax), so at weight 1 it
# pulls about as hard as CE at 0.5 once the branch is roughly right.
DECODER_AUX_WEIGHTS = {"ce": 0.5, "mse": 1.0}
ENCODER_AUX_WEIGHT = 0.5  # Fig. 5.4's feature regression: the thesis gives no value either


def segmenter_forward(model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
    return model(batch["image"])


def make_losses(cfg: Config, model: nn.Module, class_weights: torch.Tensor | None):
    """Named loss terms: ``ce`` (primary), ``psp_aux`` (PSPNet's stage-3 head), ``aux`` (regularizer).

    With ``class_weights`` (``train.loss: asymmetric``) the primary terms are eq. 3.3.1 (thesis §3.3.2),
    divided by the number of valid pixels; ``asymmetric_weighted_mean`` divides by the summed weights.
    """
    weighted_mean = cfg.train.loss == "asymmetric_weighted_mean"

    def losses(outputs: dict[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        label = batch["label"]
        weight = class_weights.to(label.device) if class_weights is not None else None
        terms = {"ce": masked_cross_entropy(outputs["seg"], label, weight=weight, weighted_mean=weighted_mean)}
        if "psp_aux_seg" in outputs:
            terms["psp_aux"] = masked_cross_entropy(outputs["psp_aux_seg"], label, weight=weight,
                                                    weighted_mean=weighted_mean)
        if "aux_seg" in outputs:
            aux_label = aux_target(outputs, label)
            terms["aux"] = (masked_cross_entropy(outputs["aux_seg"], aux_label) if cfg.regularizer.loss == "ce"
                            else masked_one_hot_mse(outputs["aux_seg"], aux_label))
        if "aux_features" in outputs:
            target = model.encoder_targets(label, tuple(outputs["aux_features"].shape[-2:]))
            terms["aux"] = F.mse_loss(outputs["aux_features"].float(), target.float())
        return terms

    return losses


def load_autoencoder(cfg: Config, num_classes: int, *, weights_from_checkpoint: bool = False,
                     variant: str | None = None) -> LabelAutoencoder:
    """The phase-one autoencoder named by ``regularizer.autoencoder`` (or a random one for the ablation).

    ``weights_from_checkpoint``: a random autoencoder of ``variant`` whose weights the caller loads
    from a segmentation checkpoint (the phase-one file is not read).
    """
    reg = cfg.regularizer
    if weights_from_checkpoint or reg.random_init:
        return LabelAutoencoder(num_classes, variant or reg.variant)
    if not reg.autoencoder:
        raise ConfigError("regularizer.autoencoder must name a phase-one checkpoint (or set regularizer.random_init)")
    phase_one = load_run_checkpoint(reg.autoencoder, purpose="regularizer.autoencoder", tasks=("autoencoder",))
    return autoencoder_from_checkpoint(phase_one, f"regularizer.autoencoder {reg.autoencoder}", num_classes, reg.variant)


def build_model(cfg: Config, num_classes: int, *, with_regularizer: bool = True, weights_from_checkpoint: bool = False,
                resolved: dict[str, Any] | None = None) -> nn.Module:
    """The configured segmenter, wrapped in its regularizer unless ``with_regularizer`` is False.

    ``weights_from_checkpoint``: every weight will be loaded from a checkpoint of this config, so no
    pretrained backbone, ``model.init_from`` or phase-one file is read. ``resolved``: the run's resolved
    record (``autoencoder_variant``, ``tap``), so the branch is rebuilt as it was trained.
    """
    resolved = resolved or {}
    torchvision = is_torchvision_name(cfg.model.name)
    if cfg.model.name not in MODELS and not (torchvision and cfg.model.name[len(TV_PREFIX):] in TORCHVISION_SEGMENTERS):
        raise ConfigError(f"model.name={cfg.model.name!r}; available segmenters: {', '.join(sorted(MODELS))}, and "
                          f"torchvision's {', '.join(TV_PREFIX + name for name in TORCHVISION_SEGMENTERS)}")
    if cfg.model.num_classes is not None and cfg.model.num_classes != num_classes:
        raise ConfigError(f"model.num_classes={cfg.model.num_classes} but the dataset has {num_classes} classes")
    if cfg.regularizer.kind not in REGULARIZERS:
        raise ConfigError(f"regularizer.kind={cfg.regularizer.kind!r}; choose one of {REGULARIZERS}")
    if cfg.regularizer.loss not in ("ce", "mse"):
        raise ConfigError(f"regularizer.loss={cfg.regularizer.loss!r}; choose 'ce' or 'mse'")
    if cfg.regularizer.aux_crop is not None and (cfg.regularizer.kind != "decoder" or cfg.regularizer.aux_crop < 1):
        raise ConfigError(f"regularizer.aux_crop={cfg.regularizer.aux_crop!r}: a positive number of code cells, "
                          "for regularizer.kind=decoder only (or null: decode the whole code)")
    if torchvision and cfg.regularizer.kind == "encoder":
        raise ConfigError("regularizer.kind=encoder needs a zoom-out segmenter; torchvision's take kind=decoder")
    if torchvision and cfg.regularizer.aux_crop is not None:
        raise ConfigError("regularizer.aux_crop is not available for torchvision's segmenters (tv:…)")
    try:
        model = build_segmenter(cfg.model.name, num_classes=num_classes,
                                pretrained_backbone=None if weights_from_checkpoint else cfg.model.pretrained_backbone,
                                freeze_bn=cfg.model.freeze_bn, **cfg.model.options)
    except TypeError as error:  # an unknown builder keyword in model.options
        raise ConfigError(f"model.options for {cfg.model.name}: {error}") from error
    except ValueError as error:  # tv: models: an option torchvision refuses, a backbone file that does not fit
        if not torchvision:
            raise
        raise ConfigError(f"model {cfg.model.name}: {error}") from error
    if cfg.model.init_from and not weights_from_checkpoint:
        start = load_run_checkpoint(cfg.model.init_from, purpose="model.init_from", tasks=("segmentation",))
        model.load_state_dict(plain_segmenter_state(start["model"]))
    if cfg.model.freeze_backbone:
        for parameter in model.backbone.parameters():
            parameter.requires_grad_(False)
    if not with_regularizer or cfg.regularizer.kind == "none":
        return model
    autoencoder = load_autoencoder(cfg, num_classes, weights_from_checkpoint=weights_from_checkpoint,
                                   variant=resolved.get("autoencoder_variant"))
    tap = resolved.get("tap") or cfg.regularizer.tap
    if torchvision:  # torchvision's models through the drop-in wrapper (a forward hook on the tap)
        tap = tap or TV_TAPS[cfg.model.name.removeprefix(TV_PREFIX)]
        try:
            return RegularizedOutputs(model, autoencoder, tap=tap, frozen=cfg.regularizer.frozen)
        except ValueError as error:
            raise ConfigError(f"regularizer.tap for {cfg.model.name}: {error}") from error
    if cfg.regularizer.kind == "decoder":
        return DecoderRegularized(model, autoencoder, tap=tap, frozen=cfg.regularizer.frozen,
                                  aux_crop=cfg.regularizer.aux_crop)
    return EncoderRegularized(model, autoencoder, frozen=cfg.regularizer.frozen)


def loop_spec(cfg: Config, model: nn.Module, class_names: list[str],
                      class_weights: torch.Tensor | None = None, save_predictions: str | Path | None = None,
                      loss_weights: dict[str, float] | None = None) -> LoopSpec:
    """The engine's view of segmentation. ``loss_weights`` (default: ``default_loss_weights``) weight the
    loss terms every epoch; the engine records them as ``weight/<term>``."""
    train_augment, eval_augment = build_augmentations(cfg.data)
    loss_weights = default_loss_weights(cfg, model) if loss_weights is None else dict(loss_weights)
    has_aux_output = isinstance(model, (DecoderRegularized, RegularizedOutputs))
    colours = class_colours(class_names, cfg.data.dataset)  # TensorBoard's examples in the figures' colours

    def predict(model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        sizes = inference_sizes(*batch["image"].shape[-2:], cfg.eval.scales, cfg.eval.short_sides)
        if len(sizes) == 1 and not cfg.eval.flip:  # one forward (at one size) gives the primary and auxiliary output
            outputs = predict_at_size(model, batch["image"], sizes[0])
            result = {"seg": outputs["seg"].float().softmax(dim=1)}
        else:
            result = {"seg": predict_probabilities(model, batch["image"], scales=cfg.eval.scales,
                                                   short_sides=cfg.eval.short_sides, flip=cfg.eval.flip)}
            outputs = model(batch["image"]) if has_aux_output else {}
        if has_aux_output:  # the decoder's view, single scale (thesis Fig. 5.6)
            result["aux_seg"] = outputs["aux_seg"]
        return result

    def evaluate(model: nn.Module, loader, device: torch.device) -> dict[str, float]:
        return evaluate_segmentation(model, loader, device, num_classes=len(class_names), preprocess=eval_augment,
                                     forward=predict, amp=cfg.train.amp, class_names=class_names,
                                     save_predictions=save_predictions,
                                     extra_outputs={"aux_seg": "aux_"} if has_aux_output else None)

    def visualize(model: nn.Module, batch: Batch) -> torch.Tensor:
        outputs = predict(model, batch)
        rows = []
        for i in range(min(cfg.train.images_to_log, len(batch["image"]))):
            row = [to_uint8_image(denormalize(batch["image"][i:i + 1])[0]), label_image(batch["label"][i], colours),
                   label_image(outputs["seg"][i].argmax(0), colours)]
            if "aux_seg" in outputs:
                row.append(label_image(outputs["aux_seg"][i].argmax(0), colours))
            rows.append(row)
        return torch.from_numpy(image_grid(rows)).permute(2, 0, 1).float() / 255

    def before_epoch(epoch: int) -> None:
        """Pretrained recipe: the backbone stays frozen for the first ``model.freeze_backbone_epochs``."""
        if cfg.model.freeze_backbone_epochs and not cfg.model.freeze_backbone:
            for parameter in model.backbone.parameters():
                parameter.requires_grad_(epoch >= cfg.model.freeze_backbone_epochs)

    return LoopSpec(model=model, augment=train_augment, eval_augment=eval_augment, forward=segmenter_forward,
                losses=make_losses(cfg, model, class_weights), evaluate=evaluate, visualize=visualize,
                rank_generators=[train_augment.generator], before_epoch=before_epoch,
                dynamic_loss_weights=lambda history: loss_weights)


def calibrate_feature_normalisation(cfg: Config, model: nn.Module, loader, spec: LoopSpec, device: torch.device) -> None:
    """Zoom-out models with ``normalize``: estimate per-channel mean/std from a few training batches."""
    segmenter = getattr(model, "segmenter", model)
    if not getattr(getattr(segmenter, "head", None), "normalize", False):
        return
    batches = []
    for index, batch in enumerate(loader):
        if index >= cfg.model.calibration_batches:
            break
        batches.append(spec.eval_augment(to_device(batch, device))["image"])
    segmenter.calibrate(batches)
    print(f"[{cfg.name}] zoom-out feature normalisation estimated from {len(batches)} batches")


def aux_weight(cfg: Config) -> float:
    """``regularizer.weight``, or the default of the configured auxiliary loss when it is null."""
    reg = cfg.regularizer
    if reg.weight is not None:
        return reg.weight
    return ENCODER_AUX_WEIGHT if reg.kind == "encoder" else DECODER_AUX_WEIGHTS[reg.loss]


def default_loss_weights(cfg: Config, model: nn.Module) -> dict[str, float]:
    """Loss weights with the defaults of each term the model produces, overridden by the config."""
    defaults = {}
    segmenter = getattr(model, "segmenter", model)
    if getattr(segmenter, "aux_head", None) is not None:  # PSPNet's auxiliary head (torchvision's: 0.5)
        defaults["psp_aux"] = getattr(segmenter, "aux_head_weight", 0.4)
    if cfg.regularizer.kind != "none":
        defaults["aux"] = aux_weight(cfg)
    return {**defaults, **cfg.train.loss_weights}


def check_training_settings(cfg: Config) -> None:
    """Settings that would train something other than the thesis describes, refused before any work.

    A random decoder (``regularizer.random_init``) is the Table 5.2 ablation, which the thesis trains
    unfrozen (§5.4.2: "train from scratch with an unfrozen, randomly initialized decoder"); frozen, it
    would be a fixed random projection, not an ablation of phase one. Only training checks this:
    evaluation rebuilds a checkpoint's branch with ``weights_from_checkpoint`` whatever ``frozen`` says.
    """
    reg = cfg.regularizer
    if reg.kind != "none" and reg.random_init and reg.frozen:
        raise ConfigError("regularizer.random_init=true needs regularizer.frozen=false: the thesis' random-decoder "
                          "ablation trains the decoder (§5.4.2)")


def train(cfg: Config, resume: str | Path | None = None) -> dict:
    check_training_settings(cfg)
    # claimed before resolved.json / class_frequencies.json are written: a refused run leaves a finished one as it was
    with claim_for_training(cfg.run_dir, resume, cfg=cfg):
        return _train(cfg, resume)


def _train(cfg: Config, resume: str | Path | None) -> dict:
    run = start_label_map_run(cfg, build_model)
    model = run.model
    loss_weights = default_loss_weights(cfg, model)
    if cfg.train.loss not in SEGMENTATION_LOSSES:
        raise ConfigError(f"train.loss={cfg.train.loss!r}; choose one of {SEGMENTATION_LOSSES}")
    weights, frequencies = loss_class_weights(cfg, run.train_set, run.num_classes)
    write_resolved(cfg.run_dir, resolved_record(cfg, model, loss_weights, frequencies))
    spec = loop_spec(cfg, model, dataset_class_names(run.train_set), weights, loss_weights=loss_weights)
    if resume is None and cfg.model.init_from is None:  # a started model keeps its statistics
        calibrate_feature_normalisation(cfg, model, run.train_loader, spec, run.device)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    regularizer = "" if cfg.regularizer.kind == "none" else f" + {cfg.regularizer.kind} regularizer"
    print(f"[{cfg.name}] {cfg.model.name}{regularizer} on {cfg.data.dataset} ({run.num_classes} classes): "
          f"{len(run.train_set)} train / {len(run.val_set)} val, {sum(p.numel() for p in model.parameters()):,} "
          f"parameters ({trainable:,} trainable), device {run.device}")
    if not measure_diagnostics(cfg):
        return fit(cfg, spec, run.train_loader, run.val_loader, device=run.device, resume=resume).as_dict()
    batch = fixed_batch(run.train_set, spec.eval_augment, run.device)
    record = DiagnosticsRecord(cfg.run_dir, cfg.train.epochs, resume=resume is not None)
    spec = with_diagnostics(spec, record, batch, loss_weights)
    state = fit(cfg, spec, run.train_loader, run.val_loader, device=run.device, resume=resume)
    # code agreement compares the decoder branch's predicted code with phase one's encoder: none for a random
    # decoder (no phase one) or the encoder regularizer (it predicts encoder activations, not a code)
    has_code = cfg.regularizer.kind == "decoder" and not cfg.regularizer.random_init
    encoder = load_autoencoder(cfg, run.num_classes).encoder.to(run.device) if has_code else None
    finish_diagnostics(spec, record, batch, loss_weights, state.epoch, encoder, run.val_loader, run.device,
                       run.num_classes)
    return state.as_dict()


def measure_diagnostics(cfg: Config) -> bool:
    """``regularizer.diagnostics`` on a regularized run, on the process that writes (rank 0)."""
    if not cfg.regularizer.diagnostics or cfg.regularizer.kind == "none":
        return False
    if cfg.train.sync_bn:  # the model copy's SyncBatchNorm would wait for ranks that do not measure
        raise ConfigError("regularizer.diagnostics=true cannot run with train.sync_bn=true")
    return current().is_main


def resolved_record(cfg: Config, model: nn.Module, loss_weights: dict[str, float],
                    frequencies: torch.Tensor | None) -> dict[str, Any]:
    """What this run derived from its config (see ``labelreg.tasks.resolved``)."""
    record: dict[str, Any] = {"loss_weights": loss_weights}
    if cfg.regularizer.kind != "none":  # the wrapper's own decoder.* (or encoder.*) weights give the variant
        record["autoencoder_variant"] = variant_from_weights(model.state_dict())
        if getattr(model, "tap", None) is not None:
            record["tap"] = model.tap
    if frequencies is not None:
        record["class_frequencies"] = frequencies.tolist()
    return record


def model_from_checkpoint(checkpoint: dict, *, with_regularizer: bool = False, num_classes: int | None = None,
                          cfg: Config | None = None, resolved: dict[str, Any] | None = None) -> nn.Module:
    """The segmenter of a ``train-seg`` checkpoint with its weights loaded.

    ``with_regularizer`` keeps the auxiliary branch (the decoder's weights come from the checkpoint, so
    the phase-one file is not needed); otherwise the plain segmenter. ``cfg``: the checkpoint's config
    (default: the stored one); ``num_classes``: default ``model.num_classes``; ``resolved``: the run's
    resolved record (default: the autoencoder variant read from the weights).
    """
    cfg = config_from_dict(checkpoint["config"]) if cfg is None else cfg
    num_classes = num_classes or cfg.model.num_classes
    if num_classes is None:
        raise ConfigError(f"{cfg.name}: give num_classes (model.num_classes is null: it came from the data set)")
    regularized = any(key.startswith("segmenter.") for key in checkpoint["model"])
    if with_regularizer and not regularized:
        raise ConfigError("this needs a checkpoint trained with a regularizer (regularizer.kind decoder/encoder); "
                          f"{cfg.name} was trained without one")
    resolved = dict(resolved or {})
    if with_regularizer and not resolved.get("autoencoder_variant"):
        resolved["autoencoder_variant"] = variant_from_weights(checkpoint["model"])
    model = build_model(cfg, num_classes, with_regularizer=with_regularizer, weights_from_checkpoint=True,
                        resolved=resolved)
    model.load_state_dict(checkpoint["model"] if with_regularizer else plain_segmenter_state(checkpoint["model"]))
    return model


def evaluate_checkpoint(cfg: Config, checkpoint: dict, split: str, *, save_predictions: str | Path | None = None,
                        aux: bool = False, figure: str | Path | None = None,
                        resolved: dict[str, Any] | None = None) -> dict[str, float]:
    """Score a ``train-seg`` checkpoint on ``split`` with the ``eval`` settings of ``cfg``.

    A regularized segmenter is evaluated as the plain segmenter (its auxiliary branch is dropped, so no
    autoencoder is needed) unless ``aux``: then the auxiliary output through the decoder is scored as
    well (``aux_miou``…). ``save_predictions``: a folder for one palette PNG per image. ``figure``: a PNG
    of the first images with their predictions (and auxiliary outputs).
    """
    if aux and not any(key.startswith("segmenter.") for key in checkpoint["model"]):
        raise ConfigError("--aux needs a checkpoint trained with a regularizer (regularizer.kind decoder/encoder)")
    device = resolve_device(cfg.train.device)
    dataset, loader = evaluation_loader(cfg, split, device)
    model = model_from_checkpoint(checkpoint, with_regularizer=aux, num_classes=dataset_num_classes(dataset), cfg=cfg,
                                  resolved=resolved).to(device)
    spec = loop_spec(cfg, model, dataset_class_names(dataset), save_predictions=save_predictions)
    metrics = spec.evaluate(model, loader, device)
    if figure is not None:
        batch = spec.eval_augment(to_device(next(iter(loader)), device))
        with torch.inference_mode():
            # the first evaluation size (CamVid: the short side it was trained at), upsampled to the labels
            size = inference_sizes(*batch["image"].shape[-2:], cfg.eval.scales, cfg.eval.short_sides)[0]
            outputs = predict_at_size(model.eval(), batch["image"], size)
        columns = [("prediction", outputs["seg"].argmax(1))]
        if "aux_seg" in outputs:
            columns.append(("auxiliary (decoder)", outputs["aux_seg"].argmax(1)))
        segmentation_figure(batch["image"], batch["label"], columns, figure,
                            colours=class_colours(dataset_class_names(dataset), cfg.data.dataset),
                            title=f"{cfg.name} on {cfg.data.dataset} {split}: image, ground truth, predictions")
    return metrics
