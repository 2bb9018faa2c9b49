"""Optimizers and learning-rate schedules from the ``optim`` section of a config, and one optimizer step.

``build_optimizer`` gives each of the model's named parameter groups (``model.param_groups()``, e.g.
backbone and head) its own learning rate (``optim.group_lr``); ``build_scheduler`` multiplies every
group's rate by ``lr_factor`` (step decay at epoch milestones, poly decay over steps, or constant).
``optimizer_step`` is the update every training loop makes: backward (scaled for fp16), optional
gradient clipping, step.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from labelreg.config import ConfigError, OptimConfig


def parameter_groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Named trainable parameter groups: the model's own ``param_groups()`` if it has one, else one group."""
    if hasattr(model, "param_groups"):
        groups = {name: [p for p in params if p.requires_grad] for name, params in model.param_groups().items()}
    else:
        groups = {"all": [p for p in model.parameters() if p.requires_grad]}
    return {name: params for name, params in groups.items() if params}


def build_optimizer(cfg: OptimConfig, model: nn.Module) -> torch.optim.Optimizer:
    groups = parameter_groups(model)
    known = set(model.param_groups()) if hasattr(model, "param_groups") else set(groups)
    unknown = sorted(set(cfg.group_lr) - known)  # a frozen (empty) group is known but has nothing to train
    if unknown:
        raise ConfigError(f"optim.group_lr names unknown group(s) {unknown}; this model's groups: {sorted(groups)}")
    param_groups = [{"params": params, "lr": cfg.group_lr.get(name, cfg.lr), "name": name} for name, params in groups.items()]
    if not param_groups:
        raise ConfigError("the model has no trainable parameters")
    if cfg.optimizer == "adam":
        return torch.optim.Adam(param_groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(param_groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise ConfigError(f"optim.optimizer={cfg.optimizer!r}; choose 'adam' or 'sgd'")


def lr_factor(cfg: OptimConfig, step: int, epoch: int, total_steps: int) -> float:
    """Multiplier of every group's base learning rate for optimizer step ``step`` in epoch ``epoch`` (0-based).

    The step schedule follows epochs (so epochs of different lengths, e.g. a mixed phase then a
    labeled-only phase, keep their milestones); poly follows steps.
    """
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "step":
        return cfg.gamma ** sum(1 for milestone in cfg.milestones if epoch >= milestone)
    if cfg.schedule == "poly":
        return max(0.0, 1.0 - step / max(total_steps, 1)) ** cfg.poly_power
    raise ConfigError(f"optim.schedule={cfg.schedule!r}; choose 'step', 'poly' or 'constant'")


class EpochAwareLR(torch.optim.lr_scheduler.LambdaLR):
    """LambdaLR over ``lr_factor`` that also knows the current epoch (set by ``fit`` via ``set_epoch``)."""

    def __init__(self, cfg: OptimConfig, optimizer: torch.optim.Optimizer, total_steps: int) -> None:
        lr_factor(cfg, 0, 0, total_steps)  # validate the schedule name now, not mid-training
        self.epoch = 0
        super().__init__(optimizer, lambda step: lr_factor(cfg, step, self.epoch, total_steps))

    def set_epoch(self, epoch: int) -> None:
        """Enter ``epoch`` and apply its rate at once (LambdaLR would only update after the next step)."""
        self.epoch = epoch
        for group, base, factor in zip(self.optimizer.param_groups, self.base_lrs, self.lr_lambdas):
            group["lr"] = base * factor(self.last_epoch)


def build_scheduler(cfg: OptimConfig, optimizer: torch.optim.Optimizer, total_steps: int) -> EpochAwareLR:
    return EpochAwareLR(cfg, optimizer, total_steps)


def optimizer_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, *,
                   scaler: torch.amp.GradScaler | None = None, grad_clip: float | None = None,
                   parameters: Iterable[nn.Parameter] | None = None) -> None:
    """Clear the gradients, backpropagate ``loss`` and step ``optimizer``.

    ``scaler``: fp16 loss scaling (a disabled scaler is a plain backward and step); ``grad_clip``: clip the
    global gradient norm of ``parameters`` (default: every parameter of the optimizer) to it first.
    """
    optimizer.zero_grad(set_to_none=True)
    if grad_clip is not None and parameters is None:
        parameters = [p for group in optimizer.param_groups for p in group["params"]]
    if scaler is None:
        loss.backward()
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(parameters, grad_clip)
        optimizer.step()
        return
    scaler.scale(loss).backward()
    if grad_clip is not None:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(parameters, grad_clip)
    scaler.step(optimizer)
    scaler.update()
