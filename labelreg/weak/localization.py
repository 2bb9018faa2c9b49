"""Per-class localization nets trained from image tags with a MIL loss (thesis §4.3.1, §4.4.1).

For a foreground class c the net maps every location i of the zoom-out features to
two scores: S(c, i) (foreground) and S̄(c, i) ("anything but c"). An image-level
probability p(c) is pooled from them, and the net is trained with the image-level
log-loss −[y log p(c) + (1 − y) log(1 − p(c))], y = 1 iff the image is tagged c.

- Per-pixel softmax, eq. 4.3.1: p(c) = max_i exp S(c,i) / (exp S(c,i) + exp S̄(c,i)).
  The softmax of two scores is σ(S − S̄) and σ is increasing, so this equals
  σ(max_i [S(c,i) − S̄(c,i)]) exactly; we compute it that way, in log space
  (log p = logσ(d*), log(1 − p) = logσ(−d*), d* = max_i d_i), and the gradient
  reaches one location, the argmax, as the thesis says.
- Global softmax, eq. 4.3.2: p(c) = max_i exp S(c,i) / (max_j exp S(c,j) + max_l exp S̄(c,l)).
  exp is increasing, so max_i exp S = exp max_i S and p(c) is the two-way softmax
  of (max S, max S̄): log p = m − logsumexp(m, m̄). The gradient reaches two
  locations per image (the argmax of S and of S̄).

Each class has its own net and its own file (``localization/class_XX.pt``) and is
trained from its own examples and seed, so adding or retraining a class never
touches the others (§4.3.1: "Adding another foreground class would require only
training one new localization model for that class").
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from labelreg.config import ConfigError, OptimConfig
from labelreg.engine import build_optimizer, build_scheduler, optimizer_step
from labelreg.storage import load_checkpoint, save_checkpoint, write_json
from labelreg.weak.train import PointHead

LOSSES = ("global_softmax", "pixel_softmax")


class LocalizationNet(PointHead):
    """1×1 conv D→hidden, ReLU, 1×1 conv hidden→2 (§4.4.1: hidden = 1024).

    ``forward``: B×D×h×w features → B×2×h×w scores; channel 0 is S (foreground),
    channel 1 is S̄ (background for this class). The segmentation head with two outputs,
    so both share layer names and stored state dicts.
    """

    def __init__(self, in_channels: int, *, hidden: int = 1024) -> None:
        super().__init__(in_channels, 2, hidden=hidden)


def image_log_probs(scores: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """B×2×h×w scores → (log p(c), log(1 − p(c))), each a B-vector, for eq. 4.3.1 or 4.3.2."""
    if scores.dim() != 4 or scores.shape[1] != 2:
        raise ValueError(f"scores must be B×2×h×w, got {tuple(scores.shape)}")
    fg, bg = scores[:, 0].flatten(1), scores[:, 1].flatten(1)
    if kind == "global_softmax":  # eq. 4.3.2: softmax of the two maxima
        both = F.log_softmax(torch.stack([fg.amax(dim=1), bg.amax(dim=1)], dim=1), dim=1)
        return both[:, 0], both[:, 1]
    if kind == "pixel_softmax":  # eq. 4.3.1: max over locations of the per-location softmax
        best = (fg - bg).amax(dim=1)
        return F.logsigmoid(best), F.logsigmoid(-best)
    raise ConfigError(f"weak.loc_loss={kind!r}; choose one of {', '.join(LOSSES)}")


def mil_loss(scores: torch.Tensor, present: torch.Tensor, kind: str) -> torch.Tensor:
    """Mean over the batch of the image-level log-loss; ``present``: B bools (image tagged with the class)."""
    log_p, log_not_p = image_log_probs(scores, kind)
    present = present.to(log_p.dtype)
    return -(present * log_p + (1 - present) * log_not_p).mean()


def sampling_scores(scores: torch.Tensor, kind: str) -> torch.Tensor:
    """B×2×h×w scores → B×h×w non-negative per-location scores for the samplers.

    Eqs. 4.3.4 multiply a score by a penalty in [0, 1], which only lowers a score
    if it is non-negative. Global softmax: exp S(c,i) — the quantity eq. 4.3.2
    max-pools — divided by its image maximum, i.e. exp(S − max S) ∈ (0, 1]; a
    per-image constant factor changes no argmax of eqs. 4.3.3–4.3.4. Per-pixel
    softmax: its per-location posterior σ(S − S̄) ∈ (0, 1).
    """
    fg, bg = scores[:, 0], scores[:, 1]
    if kind == "global_softmax":
        return torch.exp(fg - fg.flatten(1).amax(dim=1)[:, None, None])
    if kind == "pixel_softmax":
        return torch.sigmoid(fg - bg)
    raise ConfigError(f"weak.loc_loss={kind!r}; choose one of {', '.join(LOSSES)}")


def choose_examples(tags: np.ndarray, c: int, generator: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(positives, negatives): every image tagged c, and as many untagged images drawn without replacement
    (all of them if there are fewer, §4.4.1)."""
    positives = np.flatnonzero(tags[:, c])
    others = np.flatnonzero(~tags[:, c])
    negatives = np.sort(generator.choice(others, size=min(len(positives), len(others)), replace=False))
    return positives, negatives


def class_seed(seed: int, c: int) -> int:
    """A class's own seed, so its net does not depend on which other classes are trained with it."""
    return seed * 1009 + c


def train_localizer(features: Callable[[Sequence[int]], torch.Tensor], tags: np.ndarray, c: int, *, in_channels: int,
                    hidden: int, loss: str, epochs: int, lr: float, milestones: Sequence[int] = (), gamma: float = 0.1,
                    batch_size: int = 1, seed: int = 0, device: torch.device | None = None,
                    progress: bool = False) -> tuple[LocalizationNet, dict]:
    """Train class c's net with Adam (β1 = 0.9: the thesis' "momentum 0.9"), lr × gamma after each milestone epoch
    (the engine's optimizer and step schedule).

    ``features(indices)`` returns B×D×h×w standardised features; ``tags`` is the N×C
    tag matrix. Returns the net (on CPU, eval mode) and a record of its training.
    """
    device = device or torch.device("cpu")
    generator = np.random.default_rng(class_seed(seed, c))
    torch.manual_seed(class_seed(seed, c))
    positives, negatives = choose_examples(tags, c, generator)
    if len(positives) == 0:
        raise ValueError(f"class {c}: no training image is tagged with it, so it cannot be localized")
    examples = np.concatenate([positives, negatives])
    net = LocalizationNet(in_channels, hidden=hidden).to(device)
    steps = -(-len(examples) // batch_size)
    settings = OptimConfig(optimizer="adam", lr=lr, weight_decay=0.0, schedule="step", milestones=list(milestones),
                           gamma=gamma)
    optimizer = build_optimizer(settings, net)
    schedule = build_scheduler(settings, optimizer, epochs * steps)
    history = []
    bar = tqdm(total=epochs * steps, desc=f"localize class {c}", disable=not progress, leave=False)
    for epoch in range(epochs):
        schedule.set_epoch(epoch)  # lr × gamma^(milestones reached by this epoch)
        order = generator.permutation(examples)
        total, correct = 0.0, 0
        for start in range(0, len(order), batch_size):
            bar.update()
            batch = order[start:start + batch_size]
            present = torch.from_numpy(tags[batch, c]).to(device)
            scores = net(features(batch.tolist()).to(device))
            value = mil_loss(scores, present, loss)
            optimizer_step(value, optimizer)
            schedule.step()
            total += value.item() * len(batch)
            with torch.no_grad():
                correct += int(((image_log_probs(scores, loss)[0] > np.log(0.5)) == present).sum())
        history.append({"epoch": epoch + 1, "loss": total / len(order), "accuracy": correct / len(order)})
    bar.close()
    record = {"class": c, "positives": len(positives), "negatives": len(negatives), "loss": loss, "hidden": hidden,
              "in_channels": in_channels, "epochs": epochs, "lr": lr, "seed": class_seed(seed, c), "history": history}
    return net.cpu().eval(), record


def net_path(folder: Path, c: int) -> Path:
    return Path(folder) / f"class_{c:02d}.pt"


def save_localizer(folder: Path, net: LocalizationNet, record: dict) -> Path:
    path = net_path(folder, record["class"])
    state = {key: value.detach().cpu() for key, value in net.state_dict().items()}  # loadable without a GPU
    save_checkpoint(path, {"state_dict": state, "record": record})
    return path


def load_localizers(folder: Path, *, in_channels: int | None = None) -> dict[int, tuple[LocalizationNet, dict]]:
    """Every ``class_XX.pt`` in ``folder`` → {class: (net in eval mode, record)}."""
    folder = Path(folder)
    paths = sorted(folder.glob("class_*.pt"))
    if not paths:
        raise FileNotFoundError(f"no localization nets (class_XX.pt) in {folder}: run `labelreg weak localize` first")
    nets = {}
    for path in paths:
        stored = load_checkpoint(path)
        record = stored["record"]
        if in_channels is not None and record["in_channels"] != in_channels:
            raise ValueError(f"{path} was trained on {record['in_channels']}-d features, the features now have "
                             f"{in_channels}; run `labelreg weak localize` again")
        net = LocalizationNet(record["in_channels"], hidden=record["hidden"])
        net.load_state_dict(stored["state_dict"])
        nets[record["class"]] = (net.eval(), record)
    return nets


def write_summary(folder: Path, records: dict[int, dict]) -> Path:
    """``summary.json``: one line of numbers per class net present in the folder."""
    path = Path(folder) / "summary.json"
    write_json(path, {str(c): r for c, r in sorted(records.items())})
    return path
