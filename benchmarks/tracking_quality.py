"""Tracking quality on synthetic clips, with motmetrics (IDF1, ID switches, MOTA), trackeval (HOTA), and smoothing.

(a) Tracker only: ground-truth poses of synthetic clips as noisy detections (:func:`make_detections`), pose-aware
vs IoU-only association, and One-Euro jitter/error. (b) With ``--weights``: end to end on rendered clips. HOTA
needs ``pip install --no-deps trackeval`` (its declared ``opencv-python`` clashes with the headless build).

    python benchmarks/tracking_quality.py --clips 24 --json benchmarks/results/tracking_quality.json
    python benchmarks/tracking_quality.py --clips 4 --frames 40 --weights fcpose_synth_demo \
        --e2e-only --json benchmarks/results/tracking_e2e.json
"""

from __future__ import annotations

import argparse
import itertools
import platform
import sys
import time

import motmetrics as mm
import numpy as np
import torch

from fcpose.bench.people import write_json
from fcpose.cli import add_model_options
from fcpose.config import TrackerConfig
from fcpose.data.synthetic import clip_for, sample_figure_pose, unit_extent
from fcpose.ops.boxes import box_iou
from fcpose.tracking import PoseTracker

try:
    import trackeval
except ImportError:  # optional: HOTA
    trackeval = None


def make_detections(clip, rng, *, drop=0.05, low=0.15, fp_rate=0.3, box_noise=0.03, kpt_noise=0.02):
    """Per frame: (boxes, scores, keypoints, gt_index per detection (-1 = false positive), truth)."""
    frames = []
    for t in range(clip.num_frames):
        gt = clip.ground_truth(t)
        boxes, scores, kps, src = [], [], [], []
        for i in range(len(gt.track_ids)):
            if rng.random() < drop:
                continue
            b = gt.boxes[i]
            w, h = b[2] - b[0], b[3] - b[1]
            if w < 4 or h < 4:
                continue
            boxes.append(b + rng.normal(0, box_noise, 4) * np.array([w, h, w, h]))
            scores.append(rng.uniform(0.15, 0.5) if rng.random() < low else rng.uniform(0.6, 1.0))
            k = gt.keypoints[i] + rng.normal(0, kpt_noise * h, (17, 2))
            ks = np.where(gt.labelled[i], rng.uniform(0.3, 1.0, 17), 0.01)
            kps.append(np.concatenate([k, ks[:, None]], 1))
            src.append(i)
        for _ in range(rng.poisson(fp_rate)):  # a false positive: some other figure somewhere
            pose = sample_figure_pose(rng)
            kxy, (x0, y0, x1, y1) = unit_extent(pose, 0.0)
            s = rng.uniform(0.3, 0.6) * clip.height / (y1 - y0)
            off = np.array([rng.uniform(0, clip.width), rng.uniform(0.3, 1.0) * clip.height]) - np.array(
                [0.5 * (x0 + x1), y1]) * s
            boxes.append(np.array([x0 * s, y0 * s, x1 * s, y1 * s]) + np.r_[off, off])
            scores.append(rng.uniform(0.1, 0.7))
            kps.append(np.concatenate([kxy * s + off, rng.uniform(0.1, 0.8, (17, 1))], 1))
            src.append(-1)
        n = len(boxes)
        frames.append((np.asarray(boxes).reshape(n, 4), np.asarray(scores).reshape(n),
                       np.asarray(kps).reshape(n, 17, 3), np.asarray(src, np.int64), gt))
    return frames


class Sequence:
    """One clip's frames for both metrics libraries: a motmetrics accumulator, and the ids and IoUs that
    trackeval's ``eval_sequence`` reads."""

    def __init__(self):
        self.acc = mm.MOTAccumulator(auto_id=True)
        self.frames: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def update(self, gt_ids, gt_boxes, hyp_ids, hyp_boxes) -> None:
        gt_ids, hyp_ids = np.asarray(gt_ids, np.int64), np.asarray(hyp_ids, np.int64)
        iou = box_iou(torch.as_tensor(np.asarray(gt_boxes, np.float64).reshape(-1, 4)),
                      torch.as_tensor(np.asarray(hyp_boxes, np.float64).reshape(-1, 4))).numpy()
        dist = 1.0 - iou  # motmetrics' distance: 1 - IoU, NaN (no match) below IoU 0.5, as its iou_matrix(...,
        dist[dist > 0.5] = np.nan  # max_iou=0.5), which motmetrics 1.4.0 cannot run on NumPy 2 (np.asfarray)
        self.acc.update(gt_ids.tolist(), hyp_ids.tolist(), dist)
        self.frames.append((gt_ids, hyp_ids, iou))

    def trackeval_data(self) -> dict:
        """trackeval's per-sequence input: ids renumbered 0..n-1 per side, IoU as the similarity."""
        gts, hyps, ious = zip(*self.frames) if self.frames else ((), (), ())
        gt_uniq, hyp_uniq = (np.unique(np.concatenate([np.zeros(0, np.int64), *x])) for x in (gts, hyps))
        return {"num_timesteps": len(self.frames), "num_gt_ids": len(gt_uniq), "num_tracker_ids": len(hyp_uniq),
                "num_gt_dets": sum(map(len, gts)), "num_tracker_dets": sum(map(len, hyps)),
                "gt_ids": [np.searchsorted(gt_uniq, g) for g in gts],
                "tracker_ids": [np.searchsorted(hyp_uniq, h) for h in hyps], "similarity_scores": list(ious)}


def run_tracker(frames, cfg: TrackerConfig, sigmas=None, min_score: float = 0.0):
    """Frames ``(boxes, scores, keypoints, source, truth)`` through one tracker: the sequence of the people it
    reports at ``min_score`` or above against the truth, and its outputs."""
    tracker = PoseTracker(cfg, sigmas=sigmas, fps=25.0)
    seq = Sequence()
    outputs = []
    for boxes, scores, kps, src, gt in frames:
        out = tracker.update(boxes, scores, kps)
        keep = out.scores >= min_score
        seq.update(gt.track_ids, gt.boxes, out.track_ids[keep], out.boxes[keep])
        outputs.append((out, src, gt))
    return seq, outputs


def smoothing_stats(outputs) -> dict:
    """Jitter and error of the reported keypoints, per (track id, keypoint), where the detection is a true
    person and the keypoint is labelled; raw (detector) vs reported (smoothed if on) vs ground truth."""
    series: dict[tuple[int, int], list] = {}
    for t, (out, src, gt) in enumerate(outputs):
        for j in range(len(out)):
            g = int(src[out.detection_index[j]])
            for k in np.flatnonzero(gt.labelled[g]) if g >= 0 else ():
                series.setdefault((int(out.track_ids[j]), int(k)), []).append(
                    (t, out.keypoints[j, k, :2], out.raw_keypoints[j, k, :2], gt.keypoints[g, k]))
    acc = {"smoothed": [], "raw": [], "ground_truth": []}
    err = {"smoothed": [], "raw": []}
    for items in series.values():
        for a, b, c in zip(items, items[1:], items[2:]):
            if c[0] - a[0] == 2:  # three consecutive frames only
                for name, idx in (("smoothed", 1), ("raw", 2), ("ground_truth", 3)):
                    acc[name].append(float(np.linalg.norm(c[idx] - 2 * b[idx] + a[idx])))
        for name, idx in (("smoothed", 1), ("raw", 2)):
            err[name] += [float(np.linalg.norm(it[idx] - it[3])) for it in items]
    return {**{f"jitter_{k}": float(np.mean(v)) for k, v in acc.items()},
            **{f"error_{k}": float(np.mean(v)) for k, v in err.items()}}


# pose-aware association (the default ``tracker.pose_weight``) and IoU-only (``pose_weight = 0``)
VARIANTS = {"pose_aware": TrackerConfig(), "iou_only": TrackerConfig(pose_weight=0.0)}
METRICS = ["idf1", "num_switches", "mota", "motp", "num_false_positives", "num_misses", "num_unique_objects",
           "mostly_tracked", "num_fragmentations"]


def summarize(seqs: list[Sequence]) -> dict:
    """motmetrics' overall IDF1, ID switches, MOTA...; with trackeval installed, its HOTA, DetA, AssA (means
    over the IoU thresholds 0.05..0.95), and its IDF1 and ID switches (at IoU 0.5) as a cross-check."""
    names = [f"clip_{c:03d}" for c in range(len(seqs))]
    mh = mm.metrics.create()
    summary = mh.compute_many([s.acc for s in seqs], metrics=METRICS, names=names, generate_overall=True)
    row = summary.loc["OVERALL"]
    out = {m: (float(row[m]) if "num" not in m and m != "mostly_tracked" else int(row[m])) for m in METRICS}
    if trackeval is not None:
        quiet = {"PRINT_CONFIG": False}
        metrics = {"hota": trackeval.metrics.HOTA(quiet), "identity": trackeval.metrics.Identity(quiet),
                   "clear": trackeval.metrics.CLEAR(quiet)}
        data = [s.trackeval_data() for s in seqs]
        combined = {k: m.combine_sequences({n: m.eval_sequence(d) for n, d in zip(names, data)})
                    for k, m in metrics.items()}
        h = combined["hota"]
        out["trackeval"] = {"HOTA": float(np.mean(h["HOTA"])), "DetA": float(np.mean(h["DetA"])),
                            "AssA": float(np.mean(h["AssA"])), "LocA": float(np.mean(h["LocA"])),
                            "IDF1": float(combined["identity"]["IDF1"]), "IDSW": int(combined["clear"]["IDSW"]),
                            "MOTA": float(combined["clear"]["MOTA"])}
    return out


def count_crossings(frames) -> tuple[int, int]:
    """(crossings, crossings with box IoU > 0.3): a pair of people whose left-right order changes between two
    consecutive frames."""
    crossings = overlapping = 0
    prev = None
    for *_, gt in frames:
        cx = {int(t): 0.5 * (b[0] + b[2]) for t, b in zip(gt.track_ids, gt.boxes)}
        boxes = {int(t): b for t, b in zip(gt.track_ids, gt.boxes)}
        for a, b in itertools.combinations(sorted(set(cx) & set(prev or {})), 2):
            if (cx[a] - cx[b]) * (prev[a] - prev[b]) < 0:
                crossings += 1
                iou = box_iou(torch.as_tensor(boxes[a][None]), torch.as_tensor(boxes[b][None]))
                overlapping += int(float(iou) > 0.3)
        prev = cx
    return crossings, overlapping


def tracker_only(args) -> dict:
    smooth = TrackerConfig(smooth=True)  # pose-aware with One-Euro smoothing
    accs = {k: [] for k in VARIANTS}
    smooth_outputs, crossings = [], np.zeros(2, np.int64)
    t0 = time.perf_counter()
    for c in range(args.clips):
        clip = clip_for(args.seed, c, num_frames=args.frames, min_people=args.min_people, max_people=args.max_people)
        frames = make_detections(clip, np.random.default_rng([args.seed, c, 1]), drop=args.drop,
                                 box_noise=args.box_noise, kpt_noise=args.kpt_noise, fp_rate=args.fp_rate)
        crossings += count_crossings(frames)
        for name, cfg in VARIANTS.items():
            accs[name].append(run_tracker(frames, cfg)[0])
        smooth_outputs.append(run_tracker(frames, smooth)[1])
    result = {name: summarize(a) for name, a in accs.items()}
    stats = [smoothing_stats(o) for o in smooth_outputs]
    sm = {k: float(np.mean([s[k] for s in stats])) for k in stats[0]}
    sm["jitter_reduction"] = 1.0 - sm["jitter_smoothed"] / sm["jitter_raw"]
    sm["error_change"] = sm["error_smoothed"] / sm["error_raw"] - 1.0
    sm.update(min_cutoff=smooth.min_cutoff, beta=smooth.beta, d_cutoff=smooth.d_cutoff)
    result["smoothing"] = sm
    result["crossings"] = {"pairs_passing_each_other": int(crossings[0]), "with_box_iou_above_0.3": int(crossings[1])}
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result


def end_to_end(args) -> dict:
    """Rendered clips through the model (once per frame) and the tracker (pose-aware and IoU-only on the same
    detections), scored against the clips' ground truth on the people reported at ``--e2e-min-score``."""
    from fcpose.inference.predictor import Predictor

    predictor = Predictor.from_checkpoint(args.weights, device="cpu", min_size=args.size, max_size=args.max_size)
    accs = {k: [] for k in VARIANTS}
    t0, net_seconds = time.perf_counter(), 0.0
    for c in range(args.clips):
        clip = clip_for(args.seed + 1000, c, num_frames=args.frames, min_people=args.min_people,
                        max_people=args.max_people)
        frames = []
        for t in range(clip.num_frames):
            image, gt = clip.scene(t)[0].render().image, clip.ground_truth(t)
            t1 = time.perf_counter()
            dets = predictor(image)
            net_seconds += time.perf_counter() - t1
            frames.append((dets.boxes, dets.scores, dets.keypoints, None, gt))
        for k, cfg in VARIANTS.items():  # the same detections through each variant
            accs[k].append(run_tracker(frames, cfg, predictor.cfg.keypoints.sigmas, args.e2e_min_score)[0])
        print(f"(b) clip {c + 1}/{args.clips} done", file=sys.stderr, flush=True)
    out = {k: summarize(a) for k, a in accs.items()}
    out.update(weights=str(args.weights), clips=args.clips, frames=args.frames, size=predictor.min_size,
               max_size=predictor.max_size, min_score_reported=args.e2e_min_score,
               seconds=round(time.perf_counter() - t0, 1), network_seconds=round(net_seconds, 1))
    return out


def _line(m: dict) -> str:
    """One variant's scores on one line (trackeval's when installed)."""
    text = (f"IDF1 {m['idf1']:.4f}  ID switches {m['num_switches']:4d}  MOTA {m['mota']:.4f}  FP "
            f"{m['num_false_positives']}  misses {m['num_misses']}  fragmentations {m['num_fragmentations']}")
    t = m.get("trackeval")
    return text + ("" if t is None else f"  | trackeval: HOTA {t['HOTA']:.4f} DetA {t['DetA']:.4f} AssA "
                                        f"{t['AssA']:.4f} IDF1 {t['IDF1']:.4f} IDSW {t['IDSW']}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=24)
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--seed", type=int, default=100)
    ap.add_argument("--min-people", type=int, default=3)
    ap.add_argument("--max-people", type=int, default=6)
    ap.add_argument("--drop", type=float, default=0.05, help="(a): probability that a person is not detected")
    ap.add_argument("--box-noise", type=float, default=0.03, help="(a): box noise std, fraction of the box size")
    ap.add_argument("--kpt-noise", type=float, default=0.02, help="(a): keypoint noise std, fraction of the height")
    ap.add_argument("--fp-rate", type=float, default=0.3, help="(a): mean false positives per frame")
    ap.add_argument("--weights", default=None, help="also run (b) end to end with this model")
    ap.add_argument("--e2e-only", action="store_true", help="only (b)")
    ap.add_argument("--e2e-min-score", type=float, default=0.3, help="(b): people reported at or above this score")
    add_model_options(ap, "size", "max-size")  # (b)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    report = {"benchmark": "tracking_quality", "clips": args.clips, "frames_per_clip": args.frames,
              "people_per_clip": [args.min_people, args.max_people], "seed": args.seed,
              "detection_noise": {"drop": args.drop, "box_noise": args.box_noise, "kpt_noise": args.kpt_noise,
                                  "fp_rate": args.fp_rate, "low_score_fraction": 0.15},
              "machine": platform.platform(), "metrics_library": f"motmetrics {mm.__version__}"
              + (f", trackeval {trackeval.__version__}" if trackeval is not None else "")}
    if trackeval is None:
        print("note: trackeval is not installed, so HOTA is left out (pip install --no-deps trackeval)",
              file=sys.stderr)
    if not args.e2e_only:
        report["tracker_only"] = tracker_only(args)
        r = report["tracker_only"]
        for name in ("pose_aware", "iou_only"):
            print(f"(a) {name:10s} {_line(r[name])}")
        print(f"(a) {r['crossings']['pairs_passing_each_other']} crossings "
              f"({r['crossings']['with_box_iou_above_0.3']} with box IoU > 0.3)")
        s = r["smoothing"]
        print(f"(a) smoothing: jitter {s['jitter_raw']:.3f} -> {s['jitter_smoothed']:.3f} px/frame^2 "
              f"({100 * s['jitter_reduction']:.1f}% less; ground truth itself {s['jitter_ground_truth']:.3f}), "
              f"error {s['error_raw']:.3f} -> {s['error_smoothed']:.3f} px ({100 * s['error_change']:+.1f}%)")
    if args.weights:
        report["end_to_end"] = end_to_end(args)
        for name in ("pose_aware", "iou_only"):
            print(f"(b) {name:10s} end to end ({args.weights}): {_line(report['end_to_end'][name])}")
    if args.json:
        print(f"wrote {write_json(report, args.json)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
