from pathlib import Path

import pytest
import torch
import yaml

from depth.task import build_model as build_depth_model
from depth.task import DEPTH_TASK, loss_terms
from labelreg.cli import main
from labelreg.config import Config, ConfigError, config_from_dict, load_config, save_config, to_dict
from labelreg.tasks import TASKS
from labelreg.tasks.checks import check_training_config
from labelreg.tasks.segmentation import build_model

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_defaults_and_overrides_with_types():
    cfg = config_from_dict({}, ["train.epochs=7", "optim.lr=1e-3", "data.crop_size=[64,80]", "data.sbd_root=null",
                                "optim.group_lr={head: 0.01}", "train.amp=bf16"])
    assert cfg.train.epochs == 7 and cfg.optim.lr == pytest.approx(1e-3)
    assert cfg.data.crop_size == [64, 80] and cfg.data.sbd_root is None
    assert cfg.optim.group_lr == {"head": 0.01} and cfg.train.amp == "bf16"


def test_int_is_accepted_for_float_but_not_the_reverse():
    assert isinstance(config_from_dict({"optim": {"lr": 1}}).optim.lr, float)
    with pytest.raises(ConfigError, match=r"train\.epochs: expected int"):
        config_from_dict({}, ["train.epochs=2.5"])
    with pytest.raises(ConfigError, match=r"train\.epochs: expected int"):
        config_from_dict({}, ["train.epochs=true"])


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['batch_sise'\] in section 'data'.*batch_size"):
        config_from_dict({"data": {"batch_sise": 3}})
    with pytest.raises(ConfigError, match=r"at the top level; valid keys: name, task"):
        config_from_dict({}, ["trian.epochs=3"])


def test_bad_override_syntax_and_list_items():
    with pytest.raises(ConfigError, match="section.key=value"):
        config_from_dict({}, ["train.epochs"])
    with pytest.raises(ConfigError, match=r"data\.crop_size"):
        config_from_dict({}, ["data.crop_size=[1, a]"])


def test_base_inheritance_and_round_trip(tmp_path):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({"name": "base", "train": {"epochs": 3, "seed": 5}}))
    (tmp_path / "child.yaml").write_text(yaml.safe_dump({"_base_": "base.yaml", "name": "child",
                                                         "train": {"epochs": 4}}))
    cfg = load_config(tmp_path / "child.yaml", ["train.log_every=2"])
    assert (cfg.name, cfg.train.epochs, cfg.train.seed, cfg.train.log_every) == ("child", 4, 5, 2)
    save_config(cfg, tmp_path / "resolved.yaml")
    assert load_config(tmp_path / "resolved.yaml") == cfg
    assert config_from_dict(to_dict(cfg)) == cfg


def test_missing_and_looping_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "a.yaml").write_text("_base_: b.yaml\n")
    (tmp_path / "b.yaml").write_text("_base_: a.yaml\n")
    with pytest.raises(ConfigError, match="loops"):
        load_config(tmp_path / "a.yaml")


@pytest.mark.parametrize("path", sorted(CONFIGS.rglob("*.yaml")), ids=lambda p: str(p.relative_to(CONFIGS)))
def test_shipped_configs_load(path):
    assert isinstance(load_config(path), Config)


SEGMENTATION_CONFIGS = [path for path in sorted(CONFIGS.rglob("*.yaml"))
                        if load_config(path).task == "segmentation" and "_base_" not in path.parts]


@pytest.mark.parametrize("path", SEGMENTATION_CONFIGS, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_segmentation_configs_build_their_model(path):
    # Offline and without earlier stages: no weight is read (no pretrained backbone, model.init_from or phase-one
    # file), only the architecture the config asks for
    model = build_model(load_config(path), 21, weights_from_checkpoint=True)
    assert sum(p.numel() for p in model.parameters()) > 0


DEPTH_CONFIGS = [path for path in sorted(CONFIGS.rglob("*.yaml"))
                 if load_config(path).task == "depth" and "_base_" not in path.parts]


@pytest.mark.parametrize("path", DEPTH_CONFIGS, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_depth_configs_build_their_model(path):
    cfg = load_config(path, ["model.pretrained_backbone=null"])
    assert loss_terms(cfg)
    with torch.device("meta"):  # architecture only: no memory, no arithmetic
        model = build_depth_model(cfg, 40)
    assert sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.parametrize("override, message", [
    ("train.epochs=0", r"train\.epochs=0: must be at least 1"),
    ("train.epochs=-2", r"train\.epochs=-2: must be at least 1"),
    ("train.max_steps=0", r"train\.max_steps=0: must be at least 1"),
    ("train.eval_every=0", r"train\.eval_every=0: must be at least 1"),
    ("train.log_every=0", r"train\.log_every=0: must be at least 1"),
    ("data.crop_area=[2, 3]", r"data\.crop_area=\[2\.0, 3\.0\]: .*low bound must lie in \(0, 1\]"),
    ("data.crop_area=[0.9, 0.1]", r"data\.crop_area=.*low ≤ high"),
    ("data.crop_size=[64]", r"data\.crop_size=\[64\]: give two integers"),
    ("data.eval_size=[64, 0]", r"data\.eval_size=\[64, 0\]: both values must be positive"),
    ("data.batch_size=0", r"data\.batch_size=0"),
    ("data.num_workers=-1", r"data\.num_workers=-1"),
    ("optim.lr=0", r"optim\.lr=0\.0: must be a learning rate in \(0, 10\]"),
    ("optim.lr=.inf", r"optim\.lr=inf: must be a learning rate in \(0, 10\]"),
    ("optim.lr=.nan", r"optim\.lr=nan: must be a learning rate"),
    ("optim.lr=1e30", r"optim\.lr=1e\+30: must be a learning rate in \(0, 10\]"),
    ("optim.group_lr={head: -1}", r"optim\.group_lr=\{'head': -1\.0\}: must be in \[0, 10\]"),
    ("train.best_mode=best", r"train\.best_mode='best'"),
    ("train.loss_weights={ce: -1}", r"train\.loss_weights=\{'ce': -1\.0\}: must be finite, ≥ 0"),
    ("train.loss_weights={aux: .inf}", r"train\.loss_weights=\{'aux': inf\}: must be finite, ≥ 0"),
    ("train.seed=4294967296", r"train\.seed=4294967296: must lie in 0\.\.2\*\*32-1"),
    ("train.seed=-1", r"train\.seed=-1: must lie in 0\.\.2\*\*32-1"),
    ("train.device=banana", r"train\.device='banana': choose auto, cpu, cuda or cuda:N"),
    ("train.device=cuda:x", r"train\.device='cuda:x': choose auto, cpu, cuda or cuda:N"),
    ("train.ddp_timeout=0", r"train\.ddp_timeout=0\.0: must be positive seconds"),
])
def test_value_ranges_and_shapes_are_checked_at_load_time(override, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict({}, [override])


def test_the_thesis_zoom_out_crop_area_is_valid():
    assert config_from_dict({}, ["data.crop_area=[0.5, 2.0]"]).data.crop_area == [0.5, 2.0]


def test_the_largest_seed_and_every_device_form_are_accepted():
    cfg = config_from_dict({}, ["train.seed=4294967295", "train.device=cuda:1", "train.ddp_timeout=60"])
    assert (cfg.train.seed, cfg.train.device, cfg.train.ddp_timeout) == (2**32 - 1, "cuda:1", 60.0)
    assert config_from_dict({}).train.ddp_timeout == 1800.0  # torch's own default for NCCL and gloo


def test_a_config_that_is_not_utf8_names_its_file(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=rf"^{path}: not UTF-8 text \(byte 9\); save the config as UTF-8$"):
        load_config(path)


SEGMENTER_DEMO = CONFIGS / "demo" / "zoomout-densenet67-tiny_synth-nyu40.yaml"


@pytest.mark.parametrize("task, overrides, message", [
    ("segmentation", ["train.best_metric=accuracy"],
     r"^train\.best_metric='accuracy' is not a metric task=segmentation reports; choose miou, pixel_acc, "
     r"mean_class_acc or iou/<class name>$"),
    ("segmentation", ["regularizer.kind=decoder", "train.best_metric=aux_iou"],
     r"choose miou, pixel_acc, mean_class_acc, aux_miou, aux_pixel_acc, aux_mean_class_acc or iou/<class name>$"),
    ("classification", ["train.best_metric=miou_typo"], r"choose top1, top2, top3, top4, top5, loss$"),
    ("depth", ["train.best_metric=rmse"], r"task=depth reports; choose pixel_rmse, pixel_rmse_log, .* image_delta3, miou"),
    ("segmentation", ["data.dataset=nyu", "data.val_split=nosuch"],
     r"^data\.val_split='nosuch' is not a split of nyu; choose train, test, all$"),
    ("autoencoder", ["data.dataset=voc", "data.train_split=test"],
     r"^data\.train_split='test' is not a split of voc; choose train, val, trainval, trainaug$"),
    ("segmentation", ["model.options={hidden: -5}"], r"^model\.options\.hidden=-5: sizes must be positive integers$"),
    ("segmentation", ["model.options={backbone_options: {block_config: [2, 0]}}"],
     r"^model\.options\.backbone_options\.block_config=\[2, 0\]: sizes must be positive integers$"),
])
def test_values_only_the_task_can_judge_are_checked_at_load(task, overrides, message):
    cfg = config_from_dict({"task": task}, overrides)
    with pytest.raises(ConfigError, match=message):
        check_training_config(cfg, {**TASKS, "depth": DEPTH_TASK}[task].best_metrics)


@pytest.mark.parametrize("task, metric", [("segmentation", "miou"), ("segmentation", "iou/chair"),
                                          ("classification", "miou"), ("classification", "top5"),
                                          ("depth", "pixel_rmse"), ("autoencoder", "mean_class_acc")])
def test_every_metric_a_task_reports_is_a_valid_best_metric(task, metric):
    check_training_config(config_from_dict({"task": task}, [f"train.best_metric={metric}"]),
                          {**TASKS, "depth": DEPTH_TASK}[task].best_metrics)


def test_train_refuses_a_best_metric_before_reading_data_or_writing_the_run(tmp_path, capsys):
    """It used to be refused only after a whole epoch, with a list of every per-class score."""
    assert main(["train-seg", "--config", str(SEGMENTER_DEMO), "train.best_metric=accuracy"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("labelreg train-seg: error: train.best_metric='accuracy' is not a metric") and "\n" not in err
    assert not (tmp_path / "runs").exists()
