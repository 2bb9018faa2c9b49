"""`labelreg train-seg` (the command line's own ``main``), recording what each rank's task got;
run by test_distributed_trainers.py under torchrun (or alone).

    python tests/engine/ddp_seg_worker.py RECORD_DIR CONFIG [key=value ...]

Writes ``RECORD_DIR/rank<R>.json``: the class weights handed to the task (``train.loss=asymmetric``)
and, for every training step, the first three numbers the augmentation generator is about to draw
(equal numbers on two ranks would mean equal crops and flips).
"""
import json
import os
import sys
from pathlib import Path

import torch

from labelreg.tasks import segmentation
from labelreg.cli import main as labelreg_main
from labelreg.runtime import cleanup


def main(record_dir: str, config: str, overrides: list[str]) -> int:
    record = {"class_weights": None, "next_draws": []}
    loop_spec = segmentation.loop_spec

    def recording_task(cfg, model, class_names, class_weights=None, *args, **kwargs):
        task = loop_spec(cfg, model, class_names, class_weights, *args, **kwargs)
        record["class_weights"] = None if class_weights is None else class_weights.tolist()
        augment = task.augment

        def peeking_augment(batch):
            peek = torch.Generator()
            peek.set_state(augment.generator.get_state())
            record["next_draws"].append(torch.rand(3, generator=peek, dtype=torch.float64).tolist())
            return augment(batch)

        task.augment = peeking_augment
        return task

    segmentation.loop_spec = recording_task  # segmentation.train looks it up when it runs
    code = labelreg_main(["train-seg", "--config", config, *overrides])
    Path(record_dir).mkdir(parents=True, exist_ok=True)
    rank = os.environ.get("RANK", "0")  # main has left the process group by now
    (Path(record_dir) / f"rank{rank}.json").write_text(json.dumps(record))
    return code


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
    finally:
        cleanup()
