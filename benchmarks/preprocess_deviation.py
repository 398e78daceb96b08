"""What the GPU path's own choices change in the results, measured on the CPU (the code runs on CPU tensors).

    python benchmarks/preprocess_deviation.py                 # golden R-50 on coco_tiny at 512 and 800
    python benchmarks/preprocess_deviation.py --weights W --images DIR --annotations ANN.json --sizes 800

Against the reference (PIL resize on the CPU, each image padded to a multiple of 32), per test size:

* ``device`` — the resize in torch ops from the uint8 image (``Predictor(preprocess="device")``, what a
  GPU runs): resized pixels that differ and by how much, the people that come from the same generating
  locations, the keypoint displacement of those people (px in the original image), and COCO keypoint/box
  AP of both;
* ``bucket`` — the input zero-padded further to a fixed bucket (``--bucket``, default the landscape
  ``size x 1344`` for 800 and ``size x 896`` for 512, what a CUDA graph over a few buckets runs): the same
  measures (the network sees more padding at the bottom/right).

Writes ``benchmarks/results/preprocess_deviation.json`` (docs/gpu.md quotes it). The golden checkpoint
is the synthetic official-architecture model of ``../shared/golden`` (see its NOTES.md), so its AP is low
and its ~2,000 candidates per image are many: the deviations, not the APs, are the point.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

from fcpose.bench.people import machine_info, write_json
from fcpose.data.images import read_image
from fcpose.data.transforms import resize_image, resize_shape, resize_tensor, upload_image
from fcpose.engine.evaluation import evaluate_keypoints
from fcpose.inference.predictor import Predictor
from fcpose.weights.checkpoint import load_model

RESULTS = Path(__file__).resolve().parent / "results"
SHARED = Path(os.environ.get("FCPOSE_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def dist(values: np.ndarray) -> dict:
    if values.size == 0:
        return {"count": 0}
    return {"count": int(values.size), "median": round(float(np.median(values)), 4),
            "p90": round(float(np.percentile(values, 90)), 4), "p99": round(float(np.percentile(values, 99)), 4),
            "max": round(float(values.max()), 4), "share_over_1px": round(float((values > 1).mean()), 4)}


def compare(ref: list, got: list) -> dict:
    """People of ``got`` matched to ``ref`` by generating location; keypoint displacement of the matched."""
    moved, matched, total_ref, total_got = [], 0, 0, 0
    score_diffs = []
    for a, b in zip(ref, got):
        total_ref, total_got = total_ref + len(a), total_got + len(b)
        where = {(int(lv), *v): i for i, (lv, v) in enumerate(zip(a.levels.tolist(), a.locations.tolist()))}
        for j, (lv, v) in enumerate(zip(b.levels.tolist(), b.locations.tolist())):
            i = where.get((int(lv), *v))
            if i is None:
                continue
            matched += 1
            moved.append((a.keypoints[i, :, :2] - b.keypoints[j, :, :2]).norm(dim=-1).numpy())
            score_diffs.append(abs(float(a.scores[i] - b.scores[j])))
    moved_px = np.concatenate(moved) if moved else np.zeros(0)
    return {"people_ref": total_ref, "people": total_got, "matched": matched,
            "matched_share": round(matched / max(1, max(total_ref, total_got)), 4),
            "keypoint_px": dist(moved_px), "detection_score_abs": dist(np.asarray(score_diffs))}


def ap(predictions: list, ids: list[int], annotations: str) -> dict:
    results = [r for dets, image_id in zip(predictions, ids) for r in dets.to_coco(image_id=image_id)]
    metrics = evaluate_keypoints(annotations, results)
    return {kind: round(metrics[kind]["AP"], 4) for kind in ("keypoints", "bbox") if kind in metrics}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", default=str(SHARED / "golden" / "adelaidet_fcpose" / "model_r50_fp16.pth"))
    p.add_argument("--images", default=str(SHARED / "data" / "coco_tiny"))
    p.add_argument("--annotations", default=None, help="default: IMAGES/person_keypoints.json")
    p.add_argument("--sizes", default="512,800", help="test short sides (default 512,800)")
    p.add_argument("--max-size", type=int, default=1333)
    p.add_argument("--bucket", action="append", default=None, metavar="HxW",
                   help="bucket(s) for the padding comparison (default: SIZE x 896 for 512, SIZE x 1344 otherwise)")
    p.add_argument("--note", default="")
    p.add_argument("--out", default=str(RESULTS / "preprocess_deviation.json"))
    args = p.parse_args(argv)
    if not Path(args.weights).is_file():
        print(f"{args.weights} not found (the golden checkpoint lives in ../shared)", file=sys.stderr)
        return 2
    annotations = args.annotations or str(Path(args.images) / "person_keypoints.json")
    from fcpose.data.coco import read_coco_json

    data = read_coco_json(annotations)
    ids = [int(im["id"]) for im in data["images"]]
    images = [read_image(Path(args.images) / im["file_name"]) for im in data["images"]]
    model = load_model(args.weights)
    report: dict = {"note": args.note, "machine": machine_info(torch.device("cpu")), "weights": args.weights,
                    "images": [im["file_name"] for im in data["images"]], "sizes": {}}
    for size in (int(s) for s in args.sizes.split(",")):
        buckets = [tuple(int(v) for v in b.lower().split("x")) for b in args.bucket] if args.bucket else \
            [(size, 896 if size <= 512 else 1344), (896 if size <= 512 else 1344, size)]
        # pixels of the two resizes
        diffs, share = [], []
        for image in images:
            h, w = resize_shape(image.shape[0], image.shape[1], size, args.max_size)
            ref = resize_image(image, h, w).astype(np.int16)
            got = resize_tensor(upload_image(image, "cpu"), h, w).permute(1, 2, 0).numpy().astype(np.int16)
            d = np.abs(ref - got)
            diffs.append(int(d.max()))
            share.append(float((d > 0).mean()))
        runs = {
            "host": Predictor(model, min_size=size, max_size=args.max_size, batch_size=1, preprocess="host"),
            "device": Predictor(model, min_size=size, max_size=args.max_size, batch_size=1, preprocess="device"),
            "bucket": Predictor(model, min_size=size, max_size=args.max_size, batch_size=1, preprocess="host",
                                sync_free=True, cuda_graphs=True, buckets=buckets),
        }
        preds = {}
        for name, predictor in runs.items():
            print(f"[{size}] {name}", file=sys.stderr)
            preds[name] = [predictor(image) for image in images]
        bucket_runner = runs["bucket"].runner
        entry = {
            "resize_pixels": {"max_abs_grey_levels": max(diffs), "share_differing": round(float(np.mean(share)), 5)},
            "ap": {name: ap(p, ids, annotations) for name, p in preds.items()},
            "device_vs_host": compare(preds["host"], preds["device"]),
            "bucket_vs_host": compare(preds["host"], preds["bucket"]),
            "buckets": [list(b) for b in buckets],
            "bucket_shapes_run": [list(k) for k in bucket_runner.graphs.calls],
            "bucket_eager_calls": bucket_runner.graphs.eager_calls,
            "bucket_fixed_fallbacks": bucket_runner.fallbacks,
        }
        report["sizes"][str(size)] = entry
        print(f"[{size}] resize: max {entry['resize_pixels']['max_abs_grey_levels']} grey levels on "
              f"{100 * entry['resize_pixels']['share_differing']:.2f}% of pixels; AP {entry['ap']}")
        for key in ("device_vs_host", "bucket_vs_host"):
            c = entry[key]
            k = c["keypoint_px"]
            print(f"[{size}] {key}: {c['matched']}/{c['people_ref']} people matched; keypoints moved median "
                  f"{k.get('median')} px, p90 {k.get('p90')}, max {k.get('max')}, >1 px {k.get('share_over_1px')}")
    write_json(report, args.out)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
