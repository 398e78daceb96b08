"""Effect of bf16 (or fp16) on the outputs, against fp32, for the same people: autocast (the CPU default) and
the network's weights converted to bf16/fp16 (``cast_weights``, the GPU default), side by side.

    python benchmarks/bf16_deviation.py                          # R-50 (random weights), coco_tiny images
    python benchmarks/bf16_deviation.py --weights model.pt --images path/to/folder --precision bf16
    python benchmarks/bf16_deviation.py --modes cast_weights --device cuda --precision fp16

Per image the fp32 network picks the N best locations (forced selection, as in ``fcpose bench``); the
keypoints, boxes and scores of exactly those people are then decoded from the fp32 and from the reduced-
precision network outputs and compared (pixels of the network input). ``selection_overlap`` is the share
of the N locations that the reduced-precision run would pick itself. Random weights give a network whose
outputs are unstructured (the controller is re-scaled so heatmaps are peaked, as in the tests), so treat
their numbers as a numerical-sensitivity check; a trained checkpoint gives the deviations that matter.
In both modes the decoding (selection, NMS, controller, dynamic heads, peaks, offsets) is float32; only the
network's outputs differ. ``keypoint_xy_px`` is the distribution of the keypoint displacement (median,
p90, p99, max, share over 1 px and over 8 px, i.e. another heatmap cell: an arg-max flip between two
near-equal peaks). Also times each network. The top-level keys are the first mode's (the report format
before the modes existed); ``modes`` holds each. Writes ``benchmarks/results/precision_deviation_<precision>.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from fcpose.bench.people import ForcedSelection, machine_info, summarize, synthetic_image, write_json
from fcpose.data.images import read_image
from fcpose.data.transforms import batch_images
from fcpose.inference.predictor import Predictor
from fcpose.inference.runner import InferenceRunner
from fcpose.targets.boxes import decode_ltrb

RESULTS = Path(__file__).resolve().parent / "results"
SHARED = Path(os.environ.get("FCPOSE_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def boxes_scores(dense, inst) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes and scores read at the instances' own locations (no selection)."""
    boxes, scores = [], []
    for i in range(len(inst)):
        lv, b, (r, c) = int(inst.levels[i]), int(inst.batch_index[i]), inst.positions[i].tolist()
        ltrb = dense.box_reg[lv][b, :, r, c].float()
        boxes.append(decode_ltrb(inst.locations[i], ltrb))
        cls = torch.sigmoid(dense.cls_logits[lv][b, :, r, c].float()).max()
        scores.append(torch.sqrt(cls * torch.sigmoid(dense.centerness[lv][b, 0, r, c].float())))
    return torch.stack(boxes), torch.stack(scores)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="fcpose_r50_fpn")
    p.add_argument("--weights", default=None)
    p.add_argument("--images", default=str(SHARED / "data" / "coco_tiny"))
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp16"])
    p.add_argument("--persons", type=int, default=20)
    p.add_argument("--device", default="cpu")
    p.add_argument("--fp32-keypoint-branch", action="store_true",
                   help="keep the keypoint branch in float32 (InferenceRunner(fp32_keypoint_branch=True))")
    p.add_argument("--modes", default="autocast,cast_weights",
                   help="comma-separated: autocast (fp32 weights under autocast), cast_weights (weights converted)")
    p.add_argument("--note", default="")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.weights:
        from fcpose.weights.checkpoint import load_model

        model = load_model(args.weights)
    else:
        from fcpose.model.fcpose import build_model

        model = build_model(args.config).eval()
        # A random controller gives flat heatmaps whose arg-max is a coin toss: give it the scale of a
        # trained one (peaked heatmaps), as the tests do, so the keypoint deviations mean something.
        gen = torch.Generator().manual_seed(123)
        with torch.no_grad():
            ctrl = model.head.controller
            ctrl.weight.copy_(torch.randn(ctrl.weight.shape, generator=gen) * 0.05)
            ctrl.bias.copy_(torch.randn(ctrl.bias.shape, generator=gen) * 0.5)
    dev = torch.device(args.device)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or any(m not in ("autocast", "cast_weights") for m in modes):
        p.error("--modes takes autocast and/or cast_weights")
    fp32 = InferenceRunner(model, device=dev, optimize=True)
    lows = {mode: InferenceRunner(model, device=dev, optimize=True, precision=args.precision,
                                  cast_weights=mode == "cast_weights", fp32_keypoint_branch=args.fp32_keypoint_branch)
            for mode in modes}
    nchw = InferenceRunner(model, device=dev, optimize=True, channels_last=False)  # fp32 vs fp32: the noise floor
    pre = Predictor(fp32.model, device=dev, preprocess="host")
    paths = sorted(Path(args.images).glob("*.jpg")) if Path(args.images).is_dir() else []
    images = [(str(p), read_image(p)) for p in paths] or [("synthetic", synthetic_image(800, 1333))]
    post = fp32.postprocessor
    forced = ForcedSelection(post, args.persons)

    def keypoints(runner: InferenceRunner, dense, inst):
        """The same people's keypoints decoded from one runner's dense maps (input pixels)."""
        with torch.inference_mode():
            return post.keypoints(dense, inst, runner.model.instance_params(dense, inst))

    def timed(runner: InferenceRunner, batch, times: list[float]):
        runner.network(batch)  # warm-up
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        dense = runner.network(batch)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        times.append((time.perf_counter() - t0) * 1e3)
        return dense

    keys = ("kp_dev", "kp_score_dev", "box_dev", "score_dev", "overlap", "times")
    per_mode = {mode: {k: [] for k in keys} for mode in modes}
    t32, floor, gaps, peaks = [], [], [], []
    for _, image in images:
        tensor, size = pre.prepare(image)
        batch = batch_images([tensor], fp32.model.size_divisibility)
        dense32 = timed(fp32, batch, t32)
        with torch.inference_mode():
            inst = forced.select(dense32)
        a = keypoints(fp32, dense32, inst)
        c = keypoints(nchw, nchw.network(batch), inst)
        floor.append((a[..., :2] - c[..., :2]).norm(dim=-1).reshape(-1))
        with torch.inference_mode():
            top2 = fp32.model.instance_heatmaps(dense32, inst).flatten(2).topk(2, dim=2).values
        gaps.append(top2[..., 0] - top2[..., 1])
        peaks.append(top2[..., 0].abs())
        ba, sa = boxes_scores(dense32, inst)
        for mode, low in lows.items():
            acc = per_mode[mode]
            dense_low = timed(low, batch, acc["times"])
            with torch.inference_mode():
                inst_low = forced.select(dense_low)
            b = keypoints(low, dense_low, inst)  # the same people, reduced-precision maps
            acc["kp_dev"].append((a[..., :2] - b[..., :2]).norm(dim=-1).reshape(-1))
            acc["kp_score_dev"].append((a[..., 2] - b[..., 2]).abs().reshape(-1))
            bb, sb = boxes_scores(dense_low, inst)
            acc["box_dev"].append((ba - bb).abs().reshape(-1))
            acc["score_dev"].append((sa - sb).abs())
            same = {tuple(x) for x in torch.cat([inst.levels[:, None], inst.positions], 1).tolist()}
            got = {tuple(x) for x in torch.cat([inst_low.levels[:, None], inst_low.positions], 1).tolist()}
            acc["overlap"].append(len(same & got) / max(1, len(same)))

    def dist(values: list[torch.Tensor]) -> dict:
        v = torch.cat(values).double().cpu().numpy()
        return {"median": float(np.median(v)), "p90": float(np.percentile(v, 90)),
                "p99": float(np.percentile(v, 99)), "max": float(v.max()), "share_over_1": float((v > 1).mean()),
                "share_over_8": float((v > 8).mean())}

    results = {}
    for mode, acc in per_mode.items():
        results[mode] = {
            "keypoint_xy_px": dist(acc["kp_dev"]), "keypoint_score_abs": dist(acc["kp_score_dev"]),
            "box_coord_px": dist(acc["box_dev"]), "detection_score_abs": dist(acc["score_dev"]),
            "selection_overlap": float(np.mean(acc["overlap"])),
            f"network_ms_{args.precision}": summarize(acc["times"]),
            "speedup": round(float(np.median(t32) / np.median(acc["times"])), 3),
        }
    first = results[modes[0]]
    report = {
        "note": args.note, "machine": machine_info(dev), "config": model.cfg.name, "weights": args.weights or "random",
        "precision": args.precision, "fp32_keypoint_branch": args.fp32_keypoint_branch,
        "persons": args.persons, "images": [n for n, _ in images],
        **{k: v for k, v in first.items()},
        "fp32_nchw_vs_fp32_keypoint_xy_px": dist(floor),  # how much any rounding change moves the peaks
        "heatmap_top2_logit_gap": dist(gaps), "heatmap_peak_abs_logit": dist(peaks),
        "network_ms_fp32": summarize(t32), "modes": results,
    }
    out = args.out or RESULTS / f"precision_deviation_{args.precision}.json"
    write_json(report, out)
    for key in ("fp32_nchw_vs_fp32_keypoint_xy_px", "heatmap_top2_logit_gap", "heatmap_peak_abs_logit"):
        r = report[key]
        print(f"{key:34s} median {r['median']:.4g}  p90 {r['p90']:.4g}  max {r['max']:.4g}")
    for mode, res in results.items():
        print(f"-- {args.precision} {mode}")
        for key in ("keypoint_xy_px", "keypoint_score_abs", "box_coord_px", "detection_score_abs"):
            r = res[key]
            print(f"{key:34s} median {r['median']:.4g}  p90 {r['p90']:.4g}  p99 {r['p99']:.4g}  max {r['max']:.4g}"
                  f"  >8px-share {r['share_over_8']:.4f}")
        print(f"selection overlap {res['selection_overlap']:.3f}; speed-up {res['speedup']:.2f}x")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
