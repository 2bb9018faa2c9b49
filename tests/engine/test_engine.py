"""The training engine on a tiny regression task: resume, checkpoints, schedules, failure handling."""
import json

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.data import Dataset

from labelreg.config import ConfigError, OptimConfig, config_from_dict
from labelreg.data.loader import make_loader
from labelreg.engine import LoopSpec, NonFiniteLossError, build_optimizer, fit, lr_factor, optimizer_step
from labelreg.storage import load_checkpoint, save_checkpoint


class Points(Dataset):
    def __init__(self, n=24):
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(n, 3, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5]) + 0.1

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i], "index": i}


class Regressor(nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(3, 8)
        self.drop = nn.Dropout(0.2)  # uses the global torch RNG, which resume must restore
        self.out = nn.Linear(8, 1)

    def param_groups(self):
        return {"hidden": list(self.hidden.parameters()), "head": list(self.out.parameters())}

    def forward(self, x):
        return self.out(self.drop(torch.relu(self.hidden(x)))).squeeze(-1)


def make_task(model, poison_after=None):
    generator = torch.Generator().manual_seed(0)
    calls = {"n": 0}

    def augment(batch):
        noise = torch.randn(batch["x"].shape, generator=generator) * 0.01
        return {**batch, "x": batch["x"] + noise}

    def losses(outputs, batch):
        calls["n"] += 1
        error = ((outputs["y"] - batch["y"]) ** 2).mean()
        if poison_after is not None and calls["n"] > poison_after:
            error = error * float("nan")
        return {"mse": error}

    def evaluate(model, loader, device):
        with torch.no_grad():
            errors = [((model(b["x"]) - b["y"]) ** 2).mean() for b in loader]
        return {"mse": float(torch.stack(errors).mean())}

    return LoopSpec(model=model, augment=augment, eval_augment=lambda b: b, forward=lambda m, b: {"y": m(b["x"])},
                losses=losses, evaluate=evaluate, generators=[generator])


def run(tmp_path, name, epochs, resume=None, poison_after=None, on_model=None, visualize=None, **train):
    """Train the regressor for ``epochs`` in ``tmp_path/name``; ``on_model(model)`` runs before training."""
    cfg = config_from_dict({"name": name, "output_dir": str(tmp_path),
                            "optim": {"lr": 0.05, "schedule": "step", "milestones": [2], "gamma": 0.5},
                            "train": {"epochs": epochs, "log_every": 1, "best_metric": "mse", "best_mode": "min",
                                      **train}})
    torch.manual_seed(0)
    model = Regressor()
    if on_model is not None:
        on_model(model)
    task = make_task(model, poison_after)
    task.visualize = visualize
    data = Points()
    loader = make_loader(data, batch_size=5, shuffle=True, num_workers=0, seed=0)
    val = make_loader(data, batch_size=8, shuffle=False, num_workers=0)
    state = fit(cfg, task, loader, val, device=torch.device("cpu"), resume=resume)
    return cfg, model, state


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    _, straight, _ = run(tmp_path, "straight", epochs=3)
    cfg, _, _ = run(tmp_path, "split", epochs=1)
    _, resumed, state = run(tmp_path, "split", epochs=3, resume=cfg.run_dir / "checkpoints" / "last.pt")
    assert state.epoch == 3 and state.step == 3 * 5
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_checkpoints_metrics_and_best(tmp_path):
    cfg, model, state = run(tmp_path, "best", epochs=4)
    last = load_checkpoint(cfg.run_dir / "checkpoints" / "last.pt")
    best = load_checkpoint(cfg.run_dir / "checkpoints" / "best.pt")
    assert last["epoch"] == 4 and last["config"]["name"] == "best"
    values = [entry["val/mse"] for entry in state.history]
    assert best["epoch"] == 1 + values.index(min(values)) == state.best_epoch
    summary = json.loads((cfg.run_dir / "metrics.json").read_text())
    assert summary["best"]["val/mse"] == pytest.approx(min(values)) and len(summary["history"]) == 4
    assert (cfg.run_dir / "config.yaml").is_file() and any((cfg.run_dir / "tb").iterdir())
    # step schedule: lr halves from epoch 2 on
    assert last["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.025)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg, _, _ = run(tmp_path, "nan", epochs=1)
    good = (cfg.run_dir / "checkpoints" / "last.pt").read_bytes()
    with pytest.raises(NonFiniteLossError, match="non-finite training loss at epoch 2"):
        run(tmp_path, "nan", epochs=3, resume=cfg.run_dir / "checkpoints" / "last.pt", poison_after=2)
    assert (cfg.run_dir / "checkpoints" / "last.pt").read_bytes() == good


def test_bf16_autocast_computes_the_training_forward_in_bf16(tmp_path):
    """train.amp=bf16: the layers of the training forward compute in bf16 (fp32 without it); weights stay fp32."""
    seen = {}

    def record(amp):
        def hook(module, inputs, output):
            if torch.is_grad_enabled():  # the training step (the task's evaluation runs under no_grad)
                seen.setdefault(amp, set()).add(output.dtype)

        return lambda model: model.hidden.register_forward_hook(hook)

    cfg, model, state = run(tmp_path, "bf16", epochs=2, amp="bf16", on_model=record("bf16"))
    run(tmp_path, "fp32", epochs=1, on_model=record("none"))
    assert seen == {"bf16": {torch.bfloat16}, "none": {torch.float32}}
    assert {parameter.dtype for parameter in model.parameters()} == {torch.float32}
    assert len(state.history) == 2 and len((cfg.run_dir / "train.log").read_text().splitlines()) == 2


# the scaler skips the first step when its initial scale overflows fp16; torch then warns that the schedule stepped first
@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before `optimizer.step\\(\\)`")
def test_fp16_trains_with_a_loss_scaler_on_the_cpu_too_and_resumes_it(tmp_path):
    """train.amp=fp16: a GradScaler on any device (fp16 gradients underflow on a CPU as on a GPU); its state is
    checkpointed and restored; a checkpoint saved by a disabled scaler still resumes, with a fresh scale."""
    seen = set()

    def record(model):
        model.hidden.register_forward_hook(lambda module, inputs, output: seen.add(output.dtype)
                                           if torch.is_grad_enabled() else None)

    cfg, model, state = run(tmp_path, "fp16", epochs=1, amp="fp16", on_model=record)
    last = cfg.run_dir / "checkpoints" / "last.pt"
    scaler = load_checkpoint(last)["scaler"]
    assert seen == {torch.float16} and scaler["scale"] > 0
    assert all(torch.isfinite(p).all() for p in model.parameters())
    _, _, resumed = run(tmp_path, "fp16", epochs=2, amp="fp16", resume=last)
    assert resumed.epoch == 2
    checkpoint = load_checkpoint(last)
    checkpoint["scaler"] = {}  # as a disabled scaler saves it
    save_checkpoint(last, checkpoint)
    _, _, resumed = run(tmp_path, "fp16", epochs=3, amp="fp16", resume=last)
    assert resumed.epoch == 3 and load_checkpoint(last)["scaler"]["scale"] > 0


def test_step_schedule_applies_at_the_first_step_of_the_milestone_epoch(tmp_path):
    cfg, _, _ = run(tmp_path, "lr", epochs=3)
    events = EventAccumulator(str(cfg.run_dir / "tb"))
    events.Reload()
    per_step = {event.step: event.value for event in events.Scalars("lr/hidden")}
    # 5 steps per epoch, milestone at epoch 2: steps 1..10 at 0.05, from step 11 on 0.025
    assert per_step[10] == pytest.approx(0.05) and per_step[11] == pytest.approx(0.025)


@pytest.mark.parametrize("images_to_log, logged", [(2, 2), (0, 0)])
def test_example_images_follow_images_to_log(tmp_path, images_to_log, logged):
    """train.images_to_log=0 logs no example images (the visualizer, which tiles at least one row, is not run)."""
    calls = []

    def visualize(model, batch):
        calls.append(len(batch["x"]))
        return torch.zeros(3, 4, 4)

    cfg, _, _ = run(tmp_path, f"images{images_to_log}", epochs=2, visualize=visualize, images_to_log=images_to_log)
    events = EventAccumulator(str(cfg.run_dir / "tb"))
    events.Reload()
    assert len(calls) == logged and len(events.Tags()["images"]) == min(logged, 1)
    if logged:
        assert len(events.Images("val/examples")) == logged


def test_dynamic_loss_weights_follow_the_history(tmp_path):
    cfg = config_from_dict({"name": "dyn", "output_dir": str(tmp_path),
                            "train": {"epochs": 2, "best_metric": "mse", "best_mode": "min"}})
    torch.manual_seed(0)
    task = make_task(Regressor())
    seen = []
    task.dynamic_loss_weights = lambda history: seen.append(len(history)) or {"mse": 1.0 + len(history)}
    data = Points()
    fit(cfg, task, make_loader(data, batch_size=5, shuffle=True, num_workers=0),
        make_loader(data, batch_size=8, shuffle=False, num_workers=0), device=torch.device("cpu"))
    history = load_checkpoint(cfg.run_dir / "checkpoints" / "last.pt")["history"]
    assert seen == [0, 1] and [entry["weight/mse"] for entry in history] == [1.0, 2.0]


def test_max_steps_stops_early(tmp_path):
    _, _, state = run(tmp_path, "short", epochs=5, max_steps=7)
    assert state.step == 7 and state.epoch == 2


def test_unknown_loss_weight_and_best_metric_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"loss_weights names \['ce'\].*\['mse'\]"):
        run(tmp_path, "w", epochs=1, loss_weights={"ce": 1.0})
    with pytest.raises(ConfigError, match="best_metric='miou' is not among"):
        run(tmp_path, "m", epochs=1, best_metric="miou")


def test_lr_factor_known_values():
    step = OptimConfig(schedule="step", milestones=[2, 4], gamma=0.1)
    assert [lr_factor(step, 0, epoch, 60) for epoch in (0, 1, 2, 3, 4)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])
    poly = OptimConfig(schedule="poly", poly_power=2.0)
    assert lr_factor(poly, 50, 3, 100) == pytest.approx(0.25)
    assert lr_factor(OptimConfig(schedule="constant"), 99, 10, 100) == 1.0
    with pytest.raises(ConfigError, match="optim.schedule"):
        lr_factor(OptimConfig(schedule="cosine"), 0, 1, 1)


def test_group_learning_rates():
    optimizer = build_optimizer(OptimConfig(lr=1e-3, group_lr={"hidden": 1e-5}), Regressor())
    assert {g["name"]: g["lr"] for g in optimizer.param_groups} == {"hidden": 1e-5, "head": 1e-3}
    with pytest.raises(ConfigError, match=r"unknown group\(s\) \['backbone'\]"):
        build_optimizer(OptimConfig(group_lr={"backbone": 1e-5}), Regressor())


def test_optimizer_step_clips_the_global_gradient_norm_before_stepping():
    """What the loop's step does, for loops outside ``fit``: zeroed grads, backward, clip, step (SGD, lr 1)."""
    torch.manual_seed(0)
    for scaler in (None, torch.amp.GradScaler("cpu", enabled=False)):
        model = nn.Linear(3, 1, bias=False)
        before = model.weight.detach().clone()
        model.weight.grad = torch.tensor([[100.0, 0.0, 0.0]])  # stale: must be cleared, not accumulated
        optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
        loss = (model(torch.ones(1, 3)) * 30).sum()  # gradient 30 per weight, norm 30·√3
        optimizer_step(loss, optimizer, scaler=scaler, grad_clip=1.0)
        assert model.weight.grad.norm() == pytest.approx(1.0)
        torch.testing.assert_close(before - model.weight.detach(), torch.full_like(before, 3 ** -0.5))


def test_atomic_save_and_clear_load_errors(tmp_path):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, {"w": torch.ones(2), "epoch": 3})
    assert load_checkpoint(path)["epoch"] == 3
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]  # no temp file left behind
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="cannot read checkpoint .*junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")
