"""Segmentation and depth metrics against values worked out by hand."""
import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from labelreg import metrics
from labelreg.metrics import DepthMetrics, SegMetrics, eigen_crop_mask

# --- segmentation ---------------------------------------------------------------

# One 2×3 image, 3 classes, one ignored pixel (whose prediction 2 must not count).
SEG_TARGET = torch.tensor([[[0, 0, 1], [1, 2, 255]]])
SEG_PRED = torch.tensor([[[0, 1, 1], [1, 0, 2]]])
# Counted pixels (gt, pred): (0,0) (0,1) (1,1) (1,1) (2,0), so rows = gt, cols = pred:
#   gt 0: [1, 1, 0]
#   gt 1: [0, 2, 0]
#   gt 2: [1, 0, 0]
# TP = [1, 2, 0]; gt counts = [2, 2, 1]; pred counts = [2, 3, 0]
# union = gt + pred − TP = [3, 3, 1] → IoU = [1/3, 2/3, 0], mIoU = 1/3
# pixel acc = 3/5; class recall = [1/2, 1, 0] → mean class acc = 1/2
SEG_CONFUSION = [[1, 1, 0], [0, 2, 0], [1, 0, 0]]


def test_seg_hand_example():
    m = SegMetrics(3)
    m.update(SEG_PRED, SEG_TARGET)
    assert m.confusion.dtype == torch.int64
    assert m.confusion.tolist() == SEG_CONFUSION
    r = m.compute()
    assert r["per_class_iou"] == pytest.approx([1 / 3, 2 / 3, 0.0])
    assert r["miou"] == pytest.approx(1 / 3)
    assert r["pixel_acc"] == pytest.approx(3 / 5)
    assert r["mean_class_acc"] == pytest.approx(1 / 2)
    assert all(isinstance(r[k], float) for k in ("miou", "pixel_acc", "mean_class_acc"))


def test_seg_absent_class_excluded():
    # Same data with 5 classes: classes 3 and 4 appear in neither gt nor pred,
    # so their IoU is NaN and mIoU stays (1/3 + 2/3 + 0) / 3 = 1/3.
    m = SegMetrics(5)
    m.update(SEG_PRED, SEG_TARGET)
    r = m.compute()
    assert math.isnan(r["per_class_iou"][3]) and math.isnan(r["per_class_iou"][4])
    assert r["miou"] == pytest.approx(1 / 3)
    assert r["mean_class_acc"] == pytest.approx(1 / 2)


def test_seg_class_only_in_prediction_counts():
    # gt all 0, pred [0, 1]: class 1 has union 1 and IoU 0, class 0 IoU 1/2 → mIoU 1/4.
    # Mean class acc only averages classes in gt: recall(0) = 1/2.
    m = SegMetrics(3)
    m.update(torch.tensor([[[0, 1]]]), torch.tensor([[[0, 0]]]))
    r = m.compute()
    assert r["miou"] == pytest.approx(0.25)
    assert r["mean_class_acc"] == pytest.approx(0.5)


def test_seg_all_ignored_contributes_nothing():
    m = SegMetrics(3, ignore_index=7)
    m.update(torch.tensor([[[0, 1]]]), torch.tensor([[[7, 7]]]))
    assert m.confusion.sum() == 0
    assert math.isnan(m.compute()["miou"])


def test_seg_logits_match_ids_and_accumulation_matches_one_update():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 6, 9, 11, generator=g)
    target = torch.randint(0, 6, (4, 9, 11), generator=g)
    target[:, :2] = 255
    by_logits, by_ids, in_two = SegMetrics(6), SegMetrics(6), SegMetrics(6)
    by_logits.update(logits, target)
    by_ids.update(logits.argmax(1), target)
    in_two.update(logits[:1], target[:1])
    in_two.update(logits[1:], target[1:])
    assert torch.equal(by_logits.confusion, by_ids.confusion)
    assert torch.equal(by_logits.confusion, in_two.confusion)
    assert by_logits.compute() == in_two.compute()
    in_two.reset()
    assert in_two.confusion.sum() == 0


def test_state_survives_inference_mode_switches():
    seg, depth = SegMetrics(3), DepthMetrics()
    with torch.inference_mode():
        seg.update(SEG_PRED, SEG_TARGET)
        depth.update(torch.ones(1, 2, 2), torch.ones(1, 2, 2))
    seg.update(SEG_PRED, SEG_TARGET)
    depth.update(torch.ones(1, 2, 2), torch.ones(1, 2, 2))
    assert seg.confusion.tolist() == [[2 * v for v in row] for row in SEG_CONFUSION]
    assert depth.compute()["num_pixels"] == 8


def test_seg_errors():
    m = SegMetrics(3)
    with pytest.raises(ValueError, match=r"\(1, 2, 3\).*\(1, 2, 2\)"):
        m.update(torch.zeros(1, 2, 3, dtype=torch.long), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="channels"):
        m.update(torch.zeros(1, 4, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="outside"):
        m.update(torch.zeros(1, 1, 2, dtype=torch.long), torch.tensor([[[0, 3]]]))
    with pytest.raises(ValueError, match="outside"):
        m.update(torch.zeros(1, 1, 2, dtype=torch.long), torch.tensor([[[-1, 0]]]))


def test_seg_invalid_ids_deferred_off_cpu(monkeypatch):
    # Off the CPU the check is counted on the device and raised by compute().
    monkeypatch.setattr(metrics, "_check_eagerly", lambda device: False)
    m = SegMetrics(3)
    m.update(torch.tensor([[[0, 1, 2]]]), torch.tensor([[[0, 5, 255]]]))
    assert m.confusion.sum() == 1  # only the valid pixel (0, 0) is counted
    with pytest.raises(ValueError, match="1 pixels"):
        m.compute()


# --- depth ----------------------------------------------------------------------

def test_depth_hand_example():
    # gt [[1, 2], [4, 0]] (0 invalid), pred [[1, 1], [6, 3]] → valid pairs (1,1) (2,1) (4,6)
    # err g−p: 0, 1, −2 → squared 0, 1, 4 → RMSE = √(5/3)
    # abs rel |g−p|/g: 0, 1/2, 2/4 → 1/3;  sq rel (g−p)²/g: 0, 1/2, 4/4 → 1/2
    # log err: 0, ln 2, ln(4/6) → RMSE(log) = √((ln²2 + ln²(2/3)) / 3)
    # ratio max(g/p, p/g): 1, 2, 1.5 → δ1 (<1.25) 1/3, δ2 (<1.5625) 2/3, δ3 (<1.953) 2/3
    m = DepthMetrics()
    m.update(torch.tensor([[[1.0, 1.0], [6.0, 3.0]]]), torch.tensor([[[1.0, 2.0], [4.0, 0.0]]]))
    r = m.compute()
    expected = {
        "rmse": math.sqrt(5 / 3),
        "rmse_log": math.sqrt((math.log(2) ** 2 + math.log(2 / 3) ** 2) / 3),
        "abs_rel": 1 / 3, "sq_rel": 1 / 2, "delta1": 1 / 3, "delta2": 2 / 3, "delta3": 2 / 3,
    }
    assert r["pixel"] == pytest.approx(expected)
    assert r["image"] == pytest.approx(expected)  # one image: both aggregations agree
    assert r["num_pixels"] == 3 and r["num_images"] == 1 and r["eigen_crop"] is False


def test_depth_invalid_pixels_excluded_and_shapes():
    # Extra NaN / inf / negative gt columns with wild predictions change nothing.
    gt = torch.tensor([[[1.0, 2.0, math.nan], [4.0, 0.0, math.inf]], [[1.0, 2.0, -1.0], [4.0, 0.0, 0.0]]])
    pred = torch.tensor([[[1.0, 1.0, 100.0], [6.0, 3.0, 100.0]], [[1.0, 1.0, 100.0], [6.0, 3.0, 100.0]]])
    m = DepthMetrics()
    m.update(pred[:, None], gt[:, None])  # B×1×H×W accepted too
    r = m.compute()
    assert r["num_pixels"] == 6
    assert r["pixel"]["abs_rel"] == pytest.approx(1 / 3)
    assert r["pixel"]["rmse"] == pytest.approx(math.sqrt(5 / 3))
    with pytest.raises(ValueError, match=r"\(1, 2, 2\).*\(1, 2, 3\)"):
        m.update(torch.ones(1, 2, 2), torch.ones(1, 2, 3))


def test_depth_range_and_clamping():
    # max_depth 5 drops gt 8; pred −1 is clamped to min_depth 0.5: |1 − 0.5|/1 = 0.5.
    # Remaining pixels: (gt 1, pred 0.5) and (gt 2, pred 2) → abs rel (0.5 + 0)/2 = 0.25
    m = DepthMetrics(min_depth=0.5, max_depth=5.0)
    m.update(torch.tensor([[[-1.0, 2.0, 8.0]]]), torch.tensor([[[1.0, 2.0, 8.0]]]))
    r = m.compute()
    assert r["num_pixels"] == 2
    assert r["pixel"]["abs_rel"] == pytest.approx(0.25)


def test_depth_per_image_vs_pixel_aggregation():
    # Image A: one valid pixel, gt 1, pred 3 → err 2, abs rel 2, ratio 3 (δ1 miss).
    # Image B: two valid pixels, gt 1, pred 1 → all perfect.
    # Image C: no valid pixel → skipped.
    # pixel: n = 3, RMSE = √(4/3), abs rel = 2/3, δ1 = 2/3
    # image: RMSE = (2 + 0)/2 = 1, abs rel = (2 + 0)/2 = 1, δ1 = (0 + 1)/2 = 1/2
    gt = torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])
    pred = torch.tensor([[[3.0, 3.0], [3.0, 3.0]], [[1.0, 1.0], [1.0, 1.0]], [[1.0, 1.0], [1.0, 1.0]]])
    m = DepthMetrics()
    m.update(pred, gt)
    r = m.compute()
    assert r["pixel"]["rmse"] == pytest.approx(math.sqrt(4 / 3))
    assert r["pixel"]["abs_rel"] == pytest.approx(2 / 3)
    assert r["pixel"]["delta1"] == pytest.approx(2 / 3)
    assert r["image"]["rmse"] == pytest.approx(1.0)
    assert r["image"]["abs_rel"] == pytest.approx(1.0)
    assert r["image"]["delta1"] == pytest.approx(0.5)
    assert r["num_images"] == 3 and r["skipped_images"] == 1 and m.skipped_images == 1
    # Accumulating image by image gives the same numbers.
    m2 = DepthMetrics()
    for i in range(3):
        m2.update(pred[i:i + 1], gt[i:i + 1])
    r2 = m2.compute()
    assert r2["image"] == pytest.approx(r["image"]) and r2["pixel"] == pytest.approx(r["pixel"])


def test_depth_eigen_crop():
    # gt 1 everywhere; pred 1 inside rows 45:471, cols 41:601, 2 outside.
    gt = torch.ones(1, 480, 640)
    pred = torch.full((1, 480, 640), 2.0)
    pred[:, 45:471, 41:601] = 1.0
    cropped, full = DepthMetrics(eigen_crop=True), DepthMetrics()
    cropped.update(pred, gt)
    full.update(pred, gt)
    rc, rf = cropped.compute(), full.compute()
    assert rc["num_pixels"] == 426 * 560 and rc["eigen_crop"] is True
    assert rc["pixel"]["abs_rel"] == 0.0 and rc["pixel"]["delta1"] == 1.0
    # outside the crop: 480·640 − 426·560 pixels with abs rel 1
    assert rf["pixel"]["abs_rel"] == pytest.approx((480 * 640 - 426 * 560) / (480 * 640))
    # Other sizes keep the same fractions: 240×320 → rows 22:236, cols 20:300 (rounded).
    mask = eigen_crop_mask(240, 320)
    rows, cols = mask.any(1).nonzero()[:, 0], mask.any(0).nonzero()[:, 0]
    assert (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) == (22, 236, 20, 300)


def test_depth_empty_is_nan():
    r = DepthMetrics().compute()
    assert math.isnan(r["pixel"]["rmse"]) and math.isnan(r["image"]["rmse"]) and r["num_pixels"] == 0


# --- distributed ----------------------------------------------------------------

def _ddp_data():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 5, 6, 7, generator=g)
    target = torch.randint(0, 5, (4, 6, 7), generator=g)
    target[:, 0] = 255
    gt = torch.rand(4, 6, 7, generator=g) * 4
    gt[:, :, 0] = 0
    pred = torch.rand(4, 6, 7, generator=g) * 4
    return logits, target, pred, gt


def _ddp_worker(rank: int, world_size: int, init_file: str, out_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        logits, target, pred, gt = _ddp_data()
        shard = slice(rank * 2, rank * 2 + 2)
        seg, depth = SegMetrics(5), DepthMetrics()
        seg.update(logits[shard], target[shard])
        depth.update(pred[shard], gt[shard])
        results = (seg.compute(), seg.compute(), depth.compute(), depth.compute())  # twice: no double count
        if rank == 0:
            torch.save(results, out_file)
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")
def test_ddp_all_reduce_matches_single_process(tmp_path):
    out_file = tmp_path / "results.pt"
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(out_file)), nprocs=2, join=True)
    seg1, seg2, depth1, depth2 = torch.load(out_file, weights_only=False)

    logits, target, pred, gt = _ddp_data()
    seg, depth = SegMetrics(5), DepthMetrics()
    seg.update(logits, target)
    depth.update(pred, gt)
    assert seg1 == seg2 == seg.compute()
    single = depth.compute()
    for r in (depth1, depth2):
        assert r["num_pixels"] == single["num_pixels"] and r["num_images"] == 4
        assert r["pixel"] == pytest.approx(single["pixel"])
        assert r["image"] == pytest.approx(single["image"])
