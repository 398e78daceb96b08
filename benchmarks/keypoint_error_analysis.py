"""Where does a model's keypoint AP go? Error analysis of a checkpoint on a COCO-format keypoint set.

    python benchmarks/keypoint_error_analysis.py --weights OUT/model_final.pt --data ANN.json --images DIR
                                                 [--json FILE] [--size S]

Detections are matched to the ground-truth person of highest box IoU (>= 0.5); for matched people: pixel errors,
gross errors (> one stride-8 cell) that are left/right swaps or another person's keypoint, and the keypoint AP
of "what if" copies (:func:`what_if_ap`); :func:`offsets_at_truth`. The fields: benchmarks/README.md.
Writes JSON (default ``benchmarks/results/keypoint_error_analysis.json``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from pycocotools.mask import iou as box_iou_xywh  # IoU of COCO (xywh) boxes

from fcpose.bench.people import write_json
from fcpose.cli import add_model_options
from fcpose.config import KeypointSetConfig
from fcpose.data.images import read_image
from fcpose.data.transforms import batch_images, resize_shape
from fcpose.engine.evaluate import predict_dataset
from fcpose.engine.evaluation import evaluate_keypoints, load_gt
from fcpose.inference.predictor import Predictor
from fcpose.targets.keypoints import decode_offsets, gather_offsets
from fcpose.targets.locations import flat_to_locations
from fcpose.weights.checkpoint import load_model

REPO = Path(__file__).resolve().parents[1]

GROSS_PX = 8.0  # one cell of the stride-8 heatmap


def match_detections(results: list[dict], gt_by_image: dict[int, list[dict]], min_iou: float = 0.5) -> list:
    """For each detection, the ground-truth person with the highest box IoU (>= min_iou) or None."""
    dets_by_image: dict[int, list[int]] = {}
    for i, r in enumerate(results):
        dets_by_image.setdefault(r["image_id"], []).append(i)
    out: list = [None] * len(results)
    for image_id, idx in dets_by_image.items():
        cands = gt_by_image.get(image_id, [])
        if not cands:
            continue
        iou = box_iou_xywh([results[i]["bbox"] for i in idx], [g["bbox"] for g in cands], [0] * len(cands))
        for i, ok, j in zip(idx, (iou.max(1) >= min_iou).tolist(), iou.argmax(1).tolist()):
            out[i] = cands[j] if ok else None
    return out


def people_by_image(gt: dict, labelled: bool = False) -> dict[int, list[dict]]:
    """Image id -> its non-crowd people (``labelled``: only those with a labelled keypoint)."""
    out: dict[int, list[dict]] = {}
    for a in gt["annotations"]:
        if not a.get("iscrowd", 0) and (not labelled or a.get("num_keypoints", 1) > 0):
            out.setdefault(a["image_id"], []).append(a)
    return out


def _kpts(d: dict) -> np.ndarray:
    return np.asarray(d["keypoints"], dtype=np.float64).reshape(-1, 3)


def replaced(results, matches, choose) -> list[dict]:
    """Copy of ``results`` where ``choose(pred, truth) -> new xy (K, 2)`` rewrites matched people."""
    out = []
    for r, g in zip(results, matches):
        r = dict(r)
        if g is not None:
            p, t = _kpts(r), _kpts(g)
            p[:, :2] = choose(p, t)
            r["keypoints"] = p.reshape(-1).tolist()
        out.append(r)
    return out


def snap_to_cell(xy: np.ndarray, scale: np.ndarray, stride: int) -> np.ndarray:
    """COCO image points ``[N, 2]`` (pixel indices) -> the centres of the stride-``stride`` cells that hold them in
    the network input (image x ``scale`` per axis), as COCO points: the model's coordinates are the indices + 0.5."""
    return (np.floor((xy + 0.5) * scale / stride) * stride + stride / 2) / scale - 0.5


def error_counts(results, matches, ann_by_image, flip: list[int], min_score: float) -> dict:
    """Pixel errors of the labelled keypoints of matched people (by visibility and keypoint), and the gross
    errors (> ``GROSS_PX``), those that hit the other side's keypoint and those that hit another person's."""
    num_k = len(flip)
    out = {"errors": {1: [], 2: []}, "per_kpt": [[] for _ in range(num_k)], "gross": 0, "swaps": 0, "other": 0}
    for r, g in zip(results, matches):
        if g is None or r["score"] < min_score:
            continue
        p, t = _kpts(r), _kpts(g)
        others = None  # the other people's keypoints, read at the first gross error
        for k in range(num_k):
            if t[k, 2] <= 0:
                continue
            e = float(np.linalg.norm(p[k, :2] - t[k, :2]))
            out["errors"][int(t[k, 2])].append(e)
            out["per_kpt"][k].append(e)
            if e <= GROSS_PX:
                continue
            out["gross"] += 1
            if t[flip[k], 2] > 0 and np.linalg.norm(p[k, :2] - t[flip[k], :2]) <= GROSS_PX:
                out["swaps"] += 1
                continue
            if others is None:
                others = [_kpts(o) for o in ann_by_image[r["image_id"]] if o is not g]
            if any(o[k, 2] > 0 and np.linalg.norm(p[k, :2] - o[k, :2]) <= GROSS_PX for o in others):
                out["other"] += 1
    return out


def _fixed(p: np.ndarray, t: np.ndarray, gross_only: bool) -> np.ndarray:
    """Matched keypoints moved onto the truth: only the gross errors, or only those within a cell."""
    e = np.linalg.norm(p[:, :2] - t[:, :2], axis=1)
    take = (t[:, 2] > 0) & ((e > GROSS_PX) if gross_only else (e <= GROSS_PX))
    return np.where(take[:, None], t[:, :2], p[:, :2])


def _unswapped(p: np.ndarray, t: np.ndarray, flip_pairs: list[list[int]]) -> np.ndarray:
    """Left/right pairs exchanged where that brings both closer to the truth."""
    q = p[:, :2].copy()
    for a, b in flip_pairs:
        if t[a, 2] > 0 and t[b, 2] > 0:
            straight = np.linalg.norm(p[a, :2] - t[a, :2]) + np.linalg.norm(p[b, :2] - t[b, :2])
            crossed = np.linalg.norm(p[a, :2] - t[b, :2]) + np.linalg.norm(p[b, :2] - t[a, :2])
            if crossed < straight:
                q[a], q[b] = p[b, :2], p[a, :2]
    return q


def what_if_ap(results, matches, gt: dict, flip_pairs, *, sigmas, seed: int, input_scale, stride: int) -> dict:
    """Keypoint AP of ``actual`` and of copies: ``oracle_keypoints`` (the truth: the ceiling the detections set),
    ``oracle_keypoints_noise_S`` (the truth + S px of Gaussian noise), ``fix_gross`` / ``fix_fine``,
    ``unswap_pairs`` and, with ``input_scale``, ``snap_to_cell`` (every keypoint at the centre of the stride-8
    cell of the network input that holds the truth: a perfect heatmap with zero offsets)."""
    coco_gt = load_gt(gt)  # indexed once for the seven evaluations
    rng = np.random.default_rng(seed)

    def ap(res: list[dict]) -> float:
        return round(float(evaluate_keypoints(coco_gt, res, sigmas=sigmas, iou_types=("keypoints",))
                           ["keypoints"]["AP"]), 4)

    out = {"actual": ap(results), "oracle_keypoints": ap(replaced(results, matches, lambda p, t: t[:, :2]))}
    for sd in (1, 2, 3):
        noisy = replaced(results, matches, lambda p, t, sd=sd: t[:, :2] + rng.normal(0.0, sd, t[:, :2].shape))
        out[f"oracle_keypoints_noise_{sd}px"] = ap(noisy)
    out["fix_gross"] = ap(replaced(results, matches, lambda p, t: _fixed(p, t, gross_only=True)))
    out["fix_fine"] = ap(replaced(results, matches, lambda p, t: _fixed(p, t, gross_only=False)))
    out["unswap_pairs"] = ap(replaced(results, matches, lambda p, t: _unswapped(p, t, flip_pairs)))
    if input_scale is not None:  # the scale differs per image, so each result is rewritten with its own
        out["snap_to_cell"] = ap([replaced([r], [g], lambda p, t, s=np.array(input_scale[r["image_id"]]):
                                           snap_to_cell(t[:, :2], s, stride))[0] for r, g in zip(results, matches)])
    return out


def analyse(results: list[dict], gt: dict, flip_pairs: list[list[int]], *, min_score: float = 0.3,
            seed: int = 0, sigmas=None, input_scale: dict[int, tuple[float, float]] | None = None,
            stride: int = 8) -> dict:
    """``input_scale``: image id -> (x, y) factor from image to network-input pixels (adds ``snap_to_cell``)."""
    ann_by_image = people_by_image(gt)
    matches = match_detections(results, ann_by_image)
    flip = KeypointSetConfig(names=gt["categories"][0]["keypoints"], flip_pairs=flip_pairs).flip_index()
    c = error_counts(results, matches, ann_by_image, flip, min_score)
    errors, per_kpt = c["errors"], c["per_kpt"]
    all_err = np.array(errors[1] + errors[2])

    def pct(v):
        return [round(float(x), 2) for x in np.percentile(v, [25, 50, 75, 90])] if len(v) else []

    return {
        "matched_keypoints": int(all_err.size),
        "error_px_p25_p50_p75_p90": pct(all_err),
        "error_px_visible": pct(errors[2]),
        "error_px_occluded": pct(errors[1]),
        "gross_fraction": round(float(np.mean(all_err > GROSS_PX)), 4) if all_err.size else None,
        "gross_errors": c["gross"], "gross_left_right_swaps": c["swaps"], "gross_other_person": c["other"],
        "per_keypoint_median_px": [round(float(np.median(v)), 2) if v else None for v in per_kpt],
        "per_keypoint_gross_fraction": [round(float(np.mean(np.array(v) > GROSS_PX)), 3) if v else None
                                        for v in per_kpt],
        "keypoint_AP": what_if_ap(results, matches, gt, flip_pairs, sigmas=sigmas, seed=seed,
                                  input_scale=input_scale, stride=stride),
    }


@torch.inference_mode()
def offsets_at_truth(model, predictor: Predictor, gt: dict, image_dir: str) -> dict:
    """Error of the cell centre without / with the model's offset at the cells holding the labelled keypoints."""
    stride = model.strides[0]
    by_image = people_by_image(gt, labelled=True)
    without, with_offsets = [], []
    for im in gt["images"]:
        people = by_image.get(im["id"])
        if not people:
            continue
        tensor, (h, w) = predictor.prepare(read_image(Path(image_dir) / im["file_name"]))
        dense = model(batch_images([tensor], model.size_divisibility))
        maps = dense.kpt_offsets
        rows, cols = maps.shape[-2:]
        scale = torch.tensor([w / im["width"], h / im["height"]], dtype=torch.float64)
        for a in people:
            kp = torch.tensor(a["keypoints"], dtype=torch.float64).reshape(-1, 3)
            seen = kp[:, 2] > 0
            truth = kp[:, :2] + 0.5  # COCO pixel indices -> the model's continuous coordinates
            cell = torch.floor(truth * scale / stride).long()
            cell[:, 0].clamp_(0, cols - 1)
            cell[:, 1].clamp_(0, rows - 1)
            index = (cell[:, 1] * cols + cell[:, 0])[None]  # [1, K]
            offsets = gather_offsets(maps, torch.zeros(1, dtype=torch.long), index)
            centre = flat_to_locations(index, cols, stride)[0].double() / scale
            refined = decode_offsets(index, offsets, cols, stride, model.offset_unit)[0].double() / scale
            without += (centre - truth).norm(dim=1)[seen].tolist()
            with_offsets += (refined - truth).norm(dim=1)[seen].tolist()

    def stats(v):
        return {"median": round(float(np.median(v)), 2), "mean": round(float(np.mean(v)), 2)} if v else {}
    return {"keypoints": len(without), "error_px_cell_centre": stats(without),
            "error_px_cell_centre_plus_offset": stats(with_offsets)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_options(ap, "weights", "size")
    ap.add_argument("--data", required=True, help="COCO keypoint annotation JSON")
    ap.add_argument("--images", required=True)
    ap.add_argument("--json", default=str(REPO / "benchmarks" / "results" / "keypoint_error_analysis.json"))
    args = ap.parse_args()

    model = load_model(args.weights).eval()
    predictor = Predictor(model, min_size=args.size)
    results = predict_dataset(predictor, args.data, args.images, progress=False)
    gt = json.loads(Path(args.data).read_text())
    scale = {}
    for im in gt["images"]:  # the test resize of each image (Predictor.prepare)
        h, w = resize_shape(im["height"], im["width"], predictor.min_size, predictor.max_size)
        scale[im["id"]] = (w / im["width"], h / im["height"])
    summary = {"weights": args.weights, "data": args.data, "detections": len(results),
               **analyse(results, gt, model.cfg.keypoints.flip_pairs, sigmas=model.cfg.keypoints.sigmas,
                         input_scale=scale, stride=model.strides[0]),
               "offsets_at_truth": offsets_at_truth(model, predictor, gt, args.images)}
    write_json(summary, args.json)
    print(json.dumps({k: v for k, v in summary.items() if not k.startswith("per_keypoint")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
