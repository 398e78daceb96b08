"""Effect of bf16 (or fp16) autocast on the outputs, against fp32, for the same people.

    python benchmarks/bf16_deviation.py                          # R-50 (random weights), coco_tiny images
    python benchmarks/bf16_deviation.py --weights model.pt --images path/to/folder --precision bf16

Per image the fp32 network picks the N best locations (forced selection, as in ``fcpose bench``); the
keypoints, boxes and scores of exactly those people are then decoded from the fp32 and from the reduced-
precision network outputs and compared (pixels of the network input). ``selection_overlap`` is the share
of the N locations that the reduced-precision run would pick itself. Random weights give a network whose
outputs are unstructured (the controller is re-scaled so heatmaps are peaked, as in the tests), so treat
their numbers as a numerical-sensitivity check; a trained checkpoint gives the deviations that matter.
Also times both networks. Writes ``benchmarks/results/precision_deviation_<precision>.json``.
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
    fp32 = InferenceRunner(model, device=dev, optimize=True)
    low = InferenceRunner(model, device=dev, optimize=True, precision=args.precision,
                          fp32_keypoint_branch=args.fp32_keypoint_branch)
    nchw = InferenceRunner(model, device=dev, optimize=True, channels_last=False)  # fp32 vs fp32: the noise floor
    pre = Predictor(fp32.model, device=dev)
    paths = sorted(Path(args.images).glob("*.jpg")) if Path(args.images).is_dir() else []
    images = [(str(p), read_image(p)) for p in paths] or [("synthetic", synthetic_image(800, 1333))]
    post = fp32.postprocessor
    forced = ForcedSelection(post, args.persons)

    def keypoints(runner: InferenceRunner, dense, inst):
        """The same people's keypoints decoded from one runner's dense maps (input pixels)."""
        with torch.inference_mode():
            return post.keypoints(dense, inst, runner.model.instance_params(dense, inst))

    kp_dev, kp_score_dev, box_dev, score_dev, overlap, t32, tlow = [], [], [], [], [], [], []
    floor, gaps, peaks = [], [], []
    for _, image in images:
        tensor, size = pre.prepare(image)
        batch = batch_images([tensor], fp32.model.size_divisibility)
        for runner, times in ((fp32, t32), (low, tlow)):
            runner.network(batch)  # warm-up
            t0 = time.perf_counter()
            dense = runner.network(batch)
            times.append((time.perf_counter() - t0) * 1e3)
            if runner is fp32:
                dense32 = dense
            else:
                dense_low = dense
        with torch.inference_mode():
            inst = forced.select(dense32)
            inst_low = forced.select(dense_low)
        a = keypoints(fp32, dense32, inst)
        b = keypoints(low, dense_low, inst)  # the same people, reduced-precision maps
        kp_dev.append((a[..., :2] - b[..., :2]).norm(dim=-1).reshape(-1))
        c = keypoints(nchw, nchw.network(batch), inst)
        floor.append((a[..., :2] - c[..., :2]).norm(dim=-1).reshape(-1))
        with torch.inference_mode():
            top2 = fp32.model.instance_heatmaps(dense32, inst).flatten(2).topk(2, dim=2).values
        gaps.append(top2[..., 0] - top2[..., 1])
        peaks.append(top2[..., 0].abs())
        kp_score_dev.append((a[..., 2] - b[..., 2]).abs().reshape(-1))
        ba, sa = boxes_scores(dense32, inst)
        bb, sb = boxes_scores(dense_low, inst)
        box_dev.append((ba - bb).abs().reshape(-1))
        score_dev.append((sa - sb).abs())
        same = {tuple(x) for x in torch.cat([inst.levels[:, None], inst.positions], 1).tolist()}
        got = {tuple(x) for x in torch.cat([inst_low.levels[:, None], inst_low.positions], 1).tolist()}
        overlap.append(len(same & got) / max(1, len(same)))

    def dist(values: list[torch.Tensor]) -> dict:
        v = torch.cat(values).double().numpy()
        return {"median": float(np.median(v)), "p90": float(np.percentile(v, 90)), "max": float(v.max()),
                "share_over_1": float((v > 1).mean())}

    report = {
        "note": args.note, "machine": machine_info(dev), "config": model.cfg.name, "weights": args.weights or "random",
        "precision": args.precision, "fp32_keypoint_branch": args.fp32_keypoint_branch,
        "persons": args.persons, "images": [n for n, _ in images],
        "keypoint_xy_px": dist(kp_dev),
        "fp32_nchw_vs_fp32_keypoint_xy_px": dist(floor),  # how much any rounding change moves the peaks
        "heatmap_top2_logit_gap": dist(gaps), "heatmap_peak_abs_logit": dist(peaks),
        "keypoint_score_abs": dist(kp_score_dev), "box_coord_px": dist(box_dev),
        "detection_score_abs": dist(score_dev), "selection_overlap": float(np.mean(overlap)),
        "network_ms_fp32": summarize(t32), f"network_ms_{args.precision}": summarize(tlow),
        "speedup": round(float(np.median(t32) / np.median(tlow)), 3),
    }
    out = args.out or RESULTS / f"precision_deviation_{args.precision}.json"
    write_json(report, out)
    for key in ("keypoint_xy_px", "fp32_nchw_vs_fp32_keypoint_xy_px", "keypoint_score_abs", "box_coord_px",
                "detection_score_abs", "heatmap_top2_logit_gap", "heatmap_peak_abs_logit"):
        r = report[key]
        print(f"{key:34s} median {r['median']:.4g}  p90 {r['p90']:.4g}  max {r['max']:.4g}")
    print(f"selection overlap {report['selection_overlap']:.3f}; {args.precision} speed-up {report['speedup']:.2f}x")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
