"""What the GPU path's own choices change in the results, measured on the CPU (the code runs on CPU tensors).

    python benchmarks/preprocess_deviation.py                 # both sets below
    python benchmarks/preprocess_deviation.py --sets golden --sizes 800

Two sets: ``golden`` — the golden official R-50 on coco_tiny at short sides 512 and 800 (``--sizes``);
``synthetic`` — the bundled demo model (``assets/fcpose_synth_demo.pt``) on ``--synthetic`` held-out
synthetic scenes (``fcpose synth --seed 2``, as the generalisation benchmark) drawn at 576x768
(``--synthetic-size``) so that its test size (384) is a 2/3 downscale: a model whose keypoint AP is not
zero (0.35), so that AP differences can show. Against the reference (PIL resize on
the CPU, each image padded to a multiple of 32), per set and test size:

* ``device`` — the resize in torch ops from the uint8 image (``Predictor(preprocess="device")``, what a
  GPU runs): resized pixels that differ and by how much, the people that come from the same generating
  locations, the keypoint displacement of those people (px in the original image), and COCO keypoint/box
  AP of both;
* ``bucket`` — the input zero-padded further to a fixed bucket (default: landscape and portrait
  ``size x 1344`` for 800, ``size x 896`` for 512, ``size x 1.5 size`` otherwise, rounded up to 32; what a
  CUDA graph over a few buckets runs): the same measures (the network sees more padding at the bottom/right).

Writes ``benchmarks/results/preprocess_deviation.json`` (docs/gpu.md quotes it; sets not run this time
are kept from the file). The golden checkpoint is
the synthetic official-architecture model of ``../shared/golden`` (see its NOTES.md): its keypoint AP on
coco_tiny is 0 and its ~2,000 candidates per image with near-equal scores are many, so there the
deviations, not the APs, are the point.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from fcpose.bench.people import machine_info, write_json
from fcpose.data.images import read_image
from fcpose.data.transforms import resize_image, resize_shape, resize_tensor, upload_image
from fcpose.engine.evaluation import evaluate_keypoints
from fcpose.inference.predictor import Predictor
from fcpose.weights.checkpoint import load_model

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
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


def default_buckets(size: int) -> list[tuple[int, int]]:
    longest = 1344 if size >= 800 else 896 if size >= 512 else -(-int(1.5 * size) // 32) * 32
    short = -(-size // 32) * 32
    return [(short, longest), (longest, short)]


def measure(model, images: list, ids: list[int], annotations: str, size: int | None, max_size: int | None,
            buckets: list[tuple[int, int]] | None, tag: str) -> dict:
    """The three runs (host, device, bucket) of one model at one test size, compared."""
    runs = {
        "host": Predictor(model, min_size=size, max_size=max_size, batch_size=1, preprocess="host"),
        "device": Predictor(model, min_size=size, max_size=max_size, batch_size=1, preprocess="device"),
    }
    size, max_size = runs["host"].min_size, runs["host"].max_size
    buckets = buckets or default_buckets(size)
    runs["bucket"] = Predictor(model, min_size=size, max_size=max_size, batch_size=1, preprocess="host",
                               sync_free=True, cuda_graphs=True, buckets=buckets)
    diffs, share = [], []
    for image in images:  # pixels of the two resizes
        h, w = resize_shape(image.shape[0], image.shape[1], size, max_size)
        ref = resize_image(image, h, w).astype(np.int16)
        got = resize_tensor(upload_image(image, "cpu"), h, w).permute(1, 2, 0).numpy().astype(np.int16)
        d = np.abs(ref - got)
        diffs.append(int(d.max()))
        share.append(float((d > 0).mean()))
    preds = {}
    for name, predictor in runs.items():
        print(f"[{tag} {size}] {name}", file=sys.stderr)
        preds[name] = [predictor(image) for image in images]
    graphs = runs["bucket"].runner.graphs
    entry = {
        "size": [size, max_size],
        "resize_pixels": {"max_abs_grey_levels": max(diffs), "share_differing": round(float(np.mean(share)), 5)},
        "ap": {name: ap(p, ids, annotations) for name, p in preds.items()},
        "device_vs_host": compare(preds["host"], preds["device"]),
        "bucket_vs_host": compare(preds["host"], preds["bucket"]),
        "buckets": [list(b) for b in buckets],
        "bucket_shapes_run": [list(k) for k in graphs.calls],
        "bucket_eager_calls": graphs.eager_calls,
        "bucket_fixed_fallbacks": runs["bucket"].runner.fallbacks,
    }
    print(f"[{tag} {size}] resize: max {entry['resize_pixels']['max_abs_grey_levels']} grey levels on "
          f"{100 * entry['resize_pixels']['share_differing']:.3f}% of pixels; AP {entry['ap']}")
    for key in ("device_vs_host", "bucket_vs_host"):
        c = entry[key]
        k = c["keypoint_px"]
        print(f"[{tag} {size}] {key}: {c['matched']}/{c['people_ref']} people matched; keypoints moved median "
              f"{k.get('median')} px, p90 {k.get('p90')}, p99 {k.get('p99')}, max {k.get('max')}, "
              f">1 px {k.get('share_over_1px')}")
    return entry


def load_set(images_dir: Path, annotations: Path) -> tuple[list, list[int]]:
    from fcpose.data.coco import read_coco_json

    data = read_coco_json(annotations)
    ids = [int(im["id"]) for im in data["images"]]
    return [read_image(images_dir / im["file_name"]) for im in data["images"]], ids


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sets", default="golden,synthetic")
    p.add_argument("--sizes", default="512,800", help="golden: test short sides (default 512,800)")
    p.add_argument("--synthetic", type=int, default=60, help="synthetic: held-out scenes (default 60)")
    p.add_argument("--synthetic-size", default="576x768", metavar="HxW", help="synthetic: scene size")
    p.add_argument("--work", default=None, help="synthetic: folder for the scenes (default: a temporary one)")
    p.add_argument("--bucket", action="append", default=None, metavar="HxW",
                   help="bucket(s) for the padding comparison (default: see the module docstring)")
    p.add_argument("--note", default="")
    p.add_argument("--out", default=str(RESULTS / "preprocess_deviation.json"))
    args = p.parse_args(argv)
    sets = [v.strip() for v in args.sets.split(",") if v.strip()]
    buckets = [tuple(int(v) for v in b.lower().split("x")) for b in args.bucket] if args.bucket else None
    report: dict = {"note": args.note, "machine": machine_info(torch.device("cpu")), "sets": {}}
    if "golden" in sets:
        weights = SHARED / "golden" / "adelaidet_fcpose" / "model_r50_fp16.pth"
        images_dir = SHARED / "data" / "coco_tiny"
        if not weights.is_file():
            print(f"{weights} not found (the golden checkpoint lives in ../shared): golden set skipped",
                  file=sys.stderr)
        else:
            images, ids = load_set(images_dir, images_dir / "person_keypoints.json")
            model = load_model(weights)
            report["sets"]["golden"] = {
                "weights": str(weights), "images": len(images),
                "sizes": {size: measure(model, images, ids, str(images_dir / "person_keypoints.json"), int(size),
                                        1333, buckets, "golden") for size in args.sizes.split(",")}}
    if "synthetic" in sets:
        from fcpose.cli import main as fcpose_main

        with tempfile.TemporaryDirectory() as tmp:
            sh, sw = (int(v) for v in args.synthetic_size.lower().split("x"))
            work = Path(args.work or tmp) / f"synth_heldout_seed2_{args.synthetic}_{sh}x{sw}"
            if not (work / "annotations.json").is_file():
                assert fcpose_main(["synth", "--out", str(work), "--num", str(args.synthetic), "--seed", "2",
                                    "--height", str(sh), "--width", str(sw)]) == 0
            images, ids = load_set(work / "images", work / "annotations.json")
            weights = REPO / "assets" / "fcpose_synth_demo.pt"
            model = load_model(weights)
            entry = measure(model, images, ids, str(work / "annotations.json"), None, None, buckets, "synthetic")
            report["sets"]["synthetic"] = {"weights": str(weights), "images": len(images),
                                           "scenes": f"fcpose synth --num {args.synthetic} --seed 2 "
                                                     f"--height {sh} --width {sw}",
                                           "sizes": {str(entry["size"][0]): entry}}
    previous = Path(args.out)
    if previous.is_file():  # keep the sets not run this time
        kept = json.loads(previous.read_text()).get("sets", {})
        report["sets"] = {**{k: v for k, v in kept.items() if k not in report["sets"]}, **report["sets"]}
    write_json(report, args.out)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
