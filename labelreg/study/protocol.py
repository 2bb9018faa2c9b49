"""Study protocols: which arms, seeds, budget and scoring split (thesis §5.4, Tables 5.1/5.2).

Every path in a protocol file (``base``, ``autoencoder.config``) is relative to the protocol file;
``data.root`` and the output folder are relative to the working directory.

Pairing (the arms differ only in their overrides): every run of seed ``s`` gets ``train.seed=s``.
``labelreg.tasks.segmentation.train`` seeds everything with it, takes the first ``data.train_limit`` training images
(the same subset), builds the segmenter before the regularizer's own modules (the same initial
segmenter), and the engine reseeds the batch order and the augmentation from ``(seed, epoch)``
(the same data order and augmentation stream); ``tests/study/test_pairing.py`` checks all three.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from labelreg.config import ConfigError

PROTOCOL_KEYS = {"name", "description", "base", "autoencoder", "data", "budget", "arms", "seeds", "score_split",
                 "baseline", "jobs"}


@dataclass
class Protocol:
    name: str
    base: Path  # segmenter config every arm starts from
    autoencoder_config: Path  # phase one, trained once per study
    autoencoder_overrides: list[str]
    data: dict[str, Any]  # the study's own synthetic scenes: root, labeled, size, seed
    budget: dict[str, Any]  # dotted key → value, applied to every arm (epochs, train_limit, crop size …)
    arms: dict[str, list[str]]  # arm name → key=value overrides on the base
    seeds: list[int]
    score_split: str = "test"
    baseline: str = "baseline"
    jobs: int = 1
    description: str = ""
    source: Path | None = None

    def budget_overrides(self) -> list[str]:
        return [f"{key}={_yaml_value(value)}" for key, value in self.budget.items()]

    def data_overrides(self) -> list[str]:
        """The study's data set and scoring split, for the segmenters and the autoencoder alike.

        ``data.val_split`` is the scoring split and ``train.eval_every`` is set past the last epoch,
        so the only evaluation is the final epoch's (the engine always evaluates the last epoch):
        no model is selected on the split it is scored on (``best.pt`` is never used).
        """
        return [f"data.root={self.data['root']}", "data.synthesize_if_missing=false",
                f"data.val_split={self.score_split}", "train.eval_every=100000"]

    def run_name(self, arm: str, seed: int) -> str:
        return f"{arm}/seed{seed}"

    def needs_autoencoder(self) -> bool:
        return any(_uses_phase_one(overrides) for overrides in self.arms.values())


def _yaml_value(value: Any) -> str:
    if isinstance(value, (list, dict)):
        return yaml.safe_dump(value, default_flow_style=True).strip()
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _override_dict(overrides: list[str]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in overrides if "=" in item)


def _uses_phase_one(overrides: list[str]) -> bool:
    """A regularized arm that reads the phase-one checkpoint (not the random-decoder ablation)."""
    values = _override_dict(overrides)
    return (values.get("regularizer.kind", "none") != "none"
            and values.get("regularizer.random_init", "false").lower() != "true")


def arm_uses_phase_one(protocol: Protocol, arm: str) -> bool:
    return _uses_phase_one(protocol.arms[arm])


def arm_has_aux_output(protocol: Protocol, arm: str) -> bool:
    return _override_dict(protocol.arms[arm]).get("regularizer.kind") == "decoder"


STUDY_CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "study"


def protocol_path(text: str | Path) -> Path:
    """A protocol file; a bare name (``default``) means ``configs/study/<name>.yml``.

    Protocols end in ``.yml`` so that ``configs/**/*.yaml`` stays training configs only (every one of
    them loads as a ``Config``); a ``….yaml`` path that does not exist falls back to its ``.yml``.
    """
    path = Path(text)
    candidates = [path]
    if path.suffix == ".yaml":
        candidates.append(path.with_suffix(".yml"))
    if path.suffix == "" and len(path.parts) == 1:
        candidates.append(STUDY_CONFIGS / f"{path}.yml")
    return next((candidate for candidate in candidates if candidate.is_file()), path)


def load_protocol(path: str | Path) -> Protocol:
    path = protocol_path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as error:
        raise ConfigError(f"cannot read study protocol {path}: {error}") from error
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a study protocol is a YAML mapping")
    unknown = set(raw) - PROTOCOL_KEYS
    if unknown:
        raise ConfigError(f"{path}: unknown keys {sorted(unknown)}; valid: {sorted(PROTOCOL_KEYS)}")
    for key in ("base", "autoencoder", "data", "arms", "seeds"):
        if key not in raw:
            raise ConfigError(f"{path}: missing key {key!r}")
    here = path.parent
    autoencoder = raw["autoencoder"]
    if isinstance(autoencoder, str):
        autoencoder = {"config": autoencoder}
    arms = {str(name): [str(item) for item in (overrides or [])] for name, overrides in raw["arms"].items()}
    baseline = raw.get("baseline", "baseline")
    if baseline not in arms:
        raise ConfigError(f"{path}: the baseline arm {baseline!r} is not among the arms {list(arms)}")
    for name in arms:
        if "/" in name or name == "autoencoder":
            raise ConfigError(f"{path}: arm name {name!r} (no '/', not 'autoencoder')")
    data = dict(raw["data"])
    for key in ("root", "labeled", "size"):
        if key not in data:
            raise ConfigError(f"{path}: data.{key} missing (the study's synthetic scenes)")
    seeds = [int(seed) for seed in raw["seeds"]]
    if len(set(seeds)) != len(seeds) or not seeds:
        raise ConfigError(f"{path}: seeds must be distinct and at least one, got {seeds}")
    return Protocol(name=str(raw.get("name", path.stem)), base=(here / raw["base"]).resolve(),
                    autoencoder_config=(here / autoencoder["config"]).resolve(),
                    autoencoder_overrides=[str(item) for item in autoencoder.get("overrides", [])],
                    data=data, budget=dict(raw.get("budget") or {}), arms=arms, seeds=seeds,
                    score_split=str(raw.get("score_split", "test")), baseline=baseline,
                    jobs=int(raw.get("jobs", 1)), description=str(raw.get("description", "")), source=path)
