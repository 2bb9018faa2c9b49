"""Study protocols: which arms, seeds, budget, data and scoring (thesis §5.4, Tables 5.1/5.2).

Every path in a protocol file (``base``, an autoencoder's ``config``) is relative to the protocol file;
``data.root`` and the output folder are relative to the working directory.

Phase one: ``autoencoder: {config, overrides}`` is one autoencoder for every phase-one arm (run
``runs/autoencoder``); ``autoencoders: {name: {config, variant, overrides}}`` are several (runs
``runs/autoencoders/<name>``), and an arm names its own with ``{autoencoder: name, overrides: [...]}``
(Table 5.1 pairs each decoder width with its own loss). Each is trained once per study and shared by the
arms that name it.

Data: the study's own synthetic scenes (``data: {root, labeled, size, seed}``, written when missing) or
a real data set (``data: {dataset: camvid, root: ...}``: passed to every run as ``data.dataset`` /
``data.root``, never synthesized). ``score_subsets`` names parts of the scored split the evaluation also
scores on their own (CamVid test: ``Seq05VD``, its unseen drive; metric ``Seq05VD_miou``).

Pairing (the arms differ only in their overrides): every run of seed ``s`` gets ``train.seed=s``.
``labelreg.tasks.segmentation.train`` seeds everything with it, takes the first ``data.train_limit`` training images
(the same subset), builds the segmenter before the regularizer's own modules (the same initial
segmenter), and the engine reseeds the batch order and the augmentation from ``(seed, epoch)``
(the same data order and augmentation stream); ``tests/study/test_pairing.py`` checks all three.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from labelreg.config import ConfigError

PROTOCOL_KEYS = {"name", "description", "base", "autoencoder", "autoencoders", "data", "budget", "arms", "seeds",
                 "score_split", "score_subsets", "baseline", "jobs", "diagnostics"}
SYNTHETIC = "synthetic"
DATA_KEYS = {SYNTHETIC: {"dataset", "root", "labeled", "size", "seed", "depth_only"}, "real": {"dataset", "root"}}
SINGLE_AUTOENCODER = "autoencoder"  # run name of the single ``autoencoder:`` form (as before several existed)
RESERVED_ARM_NAMES = {"autoencoder", "autoencoders"}  # run folders of phase one


@dataclass
class PhaseOne:
    """One phase-one autoencoder: ``train-ae --config config`` with ``model.variant`` and ``overrides``."""
    name: str
    config: Path
    overrides: list[str]
    variant: str | None = None
    run_name: str = SINGLE_AUTOENCODER  # its run folder under <out>/runs

    def all_overrides(self) -> list[str]:
        return [*([f"model.variant={self.variant}"] if self.variant else []), *self.overrides]


@dataclass
class Protocol:
    name: str
    base: Path  # segmenter config every arm starts from
    autoencoders: dict[str, PhaseOne]  # phase one, each trained once per study
    data: dict[str, Any]  # synthetic scenes (root, labeled, size, seed) or a real set (dataset, root)
    budget: dict[str, Any]  # dotted key → value, applied to every arm (epochs, train_limit, crop size …)
    arms: dict[str, list[str]]  # arm name → key=value overrides on the base
    seeds: list[int]
    arm_autoencoders: dict[str, str] = field(default_factory=dict)  # arm → the autoencoder it names
    score_split: str = "test"
    score_subsets: list[str] = field(default_factory=list)  # parts of the split scored on their own too
    baseline: str = "baseline"
    jobs: int = 1
    diagnostics: bool = False  # regularizer.diagnostics=true on every regularized arm
    description: str = ""
    source: Path | None = None

    @property
    def dataset(self) -> str:
        return str(self.data.get("dataset", SYNTHETIC))

    @property
    def synthetic(self) -> bool:
        return self.dataset == SYNTHETIC

    def budget_overrides(self) -> list[str]:
        return [f"{key}={_yaml_value(value)}" for key, value in self.budget.items()]

    def data_overrides(self) -> list[str]:
        """The study's data set and scoring split, for the segmenters and the autoencoders alike.

        ``data.val_split`` is the scoring split and ``train.eval_every`` is set past the last epoch,
        so the only evaluation is the final epoch's (the engine always evaluates the last epoch):
        no model is selected on the split it is scored on (``best.pt`` is never used).
        """
        dataset = [] if self.synthetic else [f"data.dataset={self.dataset}"]
        return [*dataset, f"data.root={self.data['root']}", "data.synthesize_if_missing=false",
                f"data.val_split={self.score_split}", "train.eval_every=100000"]

    def arm_overrides(self, arm: str) -> list[str]:
        """The arm's own overrides, plus the diagnostics switch where the protocol asks for it."""
        overrides = self.arms[arm]
        if self.diagnostics and _override_dict(overrides).get("regularizer.kind", "none") != "none":
            overrides = [*overrides, "regularizer.diagnostics=true"]
        return overrides

    def run_name(self, arm: str, seed: int) -> str:
        return f"{arm}/seed{seed}"

    def autoencoder_for(self, arm: str) -> PhaseOne | None:
        """The phase-one autoencoder ``arm`` reads (None: it reads none); ``ConfigError`` if it is ambiguous."""
        named = self.arm_autoencoders.get(arm)
        if not _uses_phase_one(self.arms[arm]):
            if named is not None:
                raise ConfigError(f"{self.source}: arms.{arm}.autoencoder={named!r}, but the arm reads no phase-one "
                                  "checkpoint (regularizer.kind none, or regularizer.random_init=true)")
            return None
        if named is None:
            if len(self.autoencoders) != 1:
                raise ConfigError(f"{self.source}: arm {arm!r} uses phase one; name its autoencoder "
                                  f"(arms.{arm}.autoencoder: one of {sorted(self.autoencoders)})")
            return next(iter(self.autoencoders.values()))
        if named not in self.autoencoders:
            raise ConfigError(f"{self.source}: arms.{arm}.autoencoder={named!r} is not among the autoencoders "
                              f"{sorted(self.autoencoders)}")
        return self.autoencoders[named]

    def autoencoders_needed(self) -> list[PhaseOne]:
        """The autoencoders some arm reads, in the protocol's order."""
        needed = {phase_one.name for arm in self.arms if (phase_one := self.autoencoder_for(arm)) is not None}
        return [phase_one for name, phase_one in self.autoencoders.items() if name in needed]


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


def _phase_one(path: Path, key: str, name: str, entry: Any, run_name: str) -> PhaseOne:
    if isinstance(entry, str):
        entry = {"config": entry}
    if not isinstance(entry, dict) or "config" not in entry:
        raise ConfigError(f"{path}: {key} needs a config (a train-ae config file, relative to the protocol)")
    unknown = set(entry) - {"config", "variant", "overrides"}
    if unknown:
        raise ConfigError(f"{path}: {key} has unknown keys {sorted(unknown)}; valid: config, variant, overrides")
    variant = entry.get("variant")
    return PhaseOne(name=name, config=(path.parent / entry["config"]).resolve(),
                    overrides=[str(item) for item in entry.get("overrides") or []],
                    variant=None if variant is None else str(variant), run_name=run_name)


def _autoencoders(path: Path, raw: dict) -> dict[str, PhaseOne]:
    if "autoencoder" in raw and "autoencoders" in raw:
        raise ConfigError(f"{path}: give either autoencoder (one for every arm) or autoencoders (named), not both")
    if "autoencoder" in raw:
        return {SINGLE_AUTOENCODER: _phase_one(path, "autoencoder", SINGLE_AUTOENCODER, raw["autoencoder"],
                                               SINGLE_AUTOENCODER)}
    named = raw.get("autoencoders") or {}
    if not isinstance(named, dict):
        raise ConfigError(f"{path}: autoencoders is a mapping name → {{config, variant, overrides}}")
    for name in named:
        if not str(name) or "/" in str(name):
            raise ConfigError(f"{path}: autoencoder name {name!r} (not empty, no '/')")
    return {str(name): _phase_one(path, f"autoencoders.{name}", str(name), entry, f"autoencoders/{name}")
            for name, entry in named.items()}


def _arms(path: Path, raw_arms: Any) -> tuple[dict[str, list[str]], dict[str, str]]:
    """``{arm: [overrides]}`` or ``{arm: {overrides: [...], autoencoder: name}}`` → overrides, named autoencoders."""
    if not isinstance(raw_arms, dict) or not raw_arms:
        raise ConfigError(f"{path}: arms is a mapping arm name → overrides")
    arms, named = {}, {}
    for name, entry in raw_arms.items():
        name = str(name)
        if "/" in name or name in RESERVED_ARM_NAMES:
            raise ConfigError(f"{path}: arm name {name!r} (no '/', not {sorted(RESERVED_ARM_NAMES)})")
        if isinstance(entry, dict):
            unknown = set(entry) - {"overrides", "autoencoder"}
            if unknown:
                raise ConfigError(f"{path}: arms.{name} has unknown keys {sorted(unknown)}; valid: overrides, "
                                  "autoencoder")
            if entry.get("autoencoder") is not None:
                named[name] = str(entry["autoencoder"])
            entry = entry.get("overrides")
        arms[name] = [str(item) for item in (entry or [])]
    return arms, named


def _data(path: Path, raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: data is a mapping (synthetic: root, labeled, size; real: dataset, root)")
    data = dict(raw)
    kind = SYNTHETIC if data.get("dataset", SYNTHETIC) == SYNTHETIC else "real"
    required = ("root", "labeled", "size") if kind == SYNTHETIC else ("root",)
    what = "the study's synthetic scenes" if kind == SYNTHETIC else f"data.dataset={data['dataset']}"
    for key in required:
        if key not in data:
            raise ConfigError(f"{path}: data.{key} missing ({what})")
    unknown = set(data) - DATA_KEYS[kind]
    if unknown:
        raise ConfigError(f"{path}: data has unknown keys {sorted(unknown)} for "
                          f"{what}; valid: "
                          f"{sorted(DATA_KEYS[kind])} (other data.* settings go in budget)")
    return data


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
    for key in ("base", "data", "arms", "seeds"):
        if key not in raw:
            raise ConfigError(f"{path}: missing key {key!r}")
    arms, arm_autoencoders = _arms(path, raw["arms"])
    baseline = raw.get("baseline", "baseline")
    if baseline not in arms:
        raise ConfigError(f"{path}: the baseline arm {baseline!r} is not among the arms {list(arms)}")
    seeds = [int(seed) for seed in raw["seeds"]]
    if len(set(seeds)) != len(seeds) or not seeds:
        raise ConfigError(f"{path}: seeds must be distinct and at least one, got {seeds}")
    subsets = raw.get("score_subsets") or []
    if not isinstance(subsets, list) or not all(isinstance(name, str) and name for name in subsets):
        raise ConfigError(f"{path}: score_subsets is a list of subset names (e.g. [Seq05VD]), got {subsets!r}")
    protocol = Protocol(name=str(raw.get("name", path.stem)), base=(path.parent / raw["base"]).resolve(),
                        autoencoders=_autoencoders(path, raw), data=_data(path, raw["data"]),
                        budget=dict(raw.get("budget") or {}), arms=arms, seeds=seeds,
                        arm_autoencoders=arm_autoencoders, score_split=str(raw.get("score_split", "test")),
                        score_subsets=list(subsets), baseline=baseline, jobs=int(raw.get("jobs", 1)),
                        diagnostics=bool(raw.get("diagnostics", False)),
                        description=str(raw.get("description", "")), source=path)
    protocol.autoencoders_needed()  # every phase-one arm names an autoencoder that exists
    return protocol
